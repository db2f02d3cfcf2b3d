"""`make mutate`: mutation testing of the modules where the product's promises live.

Runs mutmut (the `.[mutate]` extra) on one module at a time, each against only the tests
that exercise it, with one worker, and prints the survival rate per module.

mutmut derives module names from file paths, and `daemon/` installs as `kuloo_daemon`:
so each module runs in a temporary copy of the checkout where `daemon/`
is renamed `kuloo_daemon/`. The copy's root comes first on `sys.path`, ahead of the
editable install's finder, so the tests import the copy (and mutmut's mutated copy of it).

Add a module by adding a line to MODULES: its path under `daemon/` (or `sellsim/`) and
the test files that are meant to catch its bugs. Run a subset with
`make mutate MUTATE_ARGS="crm/budget.py secrets.py"`; `--keep` keeps the copies for
`mutmut show`/`mutmut results` by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    """One module under mutation: the tests meant to catch its bugs and, optionally, the
    functions to mutate (``name`` or ``Class.method``, globs allowed): its pure parts."""

    tests: tuple[str, ...]
    only: tuple[str, ...] = ()
    deselect: tuple[str, ...] = ()  # slow tests that see the module only through a subprocess


# module (relative to daemon/) -> its Target. Keep each test list short: the first
# (stats) run executes all of them once, then each mutant re-runs the tests covering it.
# The sync merge/matching rules and the delivery scheduling rules join here as they land.
MODULES: dict[str, Target] = {
    "crm/budget.py": Target(("tests/crm/test_crm_budget.py",)),
    "crm/errors.py": Target(("tests/crm/test_crm_errors.py",)),
    "crm/feed.py": Target(
        ("tests/crm/test_crm_feed.py", "tests/crm/test_crm_feed_pure.py"),
        only=(
            "new_state",
            "normalize_state",
            "fingerprint",
            "_fingerprint_ts",
            "poll_select",
            "poll_advance",
            "sync_change",
            "RecordChanged.*",
            "ChangeFeed._probe_due",
        ),
    ),
    "crm/body.py": Target(("tests/crm/test_crm_transport.py", "tests/crm/test_crm_client_unit.py")),
    "crm/verify.py": Target(("tests/crm/test_crm_verify.py",)),
    "control/protocol.py": Target(
        ("tests/control/test_protocol.py",),
        deselect=("tests/control/test_protocol.py::test_golden_exchange",),
    ),
    "secrets.py": Target(
        (
            "tests/daemon/test_logs_and_secrets.py",
            "tests/daemon/test_config.py",
            "tests/daemon/test_secrets.py",
        )
    ),
    "config.py": Target(
        ("tests/daemon/test_config.py", "tests/store/test_store_url.py"),
        # these see config.py only through a daemon subprocess (and a PostgreSQL server)
        deselect=tuple(
            f"tests/store/test_store_url.py::{name}"
            for name in (
                "test_check_config_shows_the_url_without_the_password",
                "test_an_unreachable_server_stops_run_with_one_line_naming_it",
                "test_a_schema_newer_than_the_code_is_refused",
                "test_migrate_on_postgresql_brings_an_empty_database_up_to_date_and_takes_no_sqlite_lock",
                "test_an_unreadable_password_credential_is_one_line_naming_the_file",
            )
        ),
    ),
    # The sync's pure decisions (rules/) and delivery's (delivery/schedule.py): their
    # table and property tests, never the e2e files (a daemon subprocess per mutant).
    "rules/merge.py": Target(("tests/rules/test_merge.py",)),
    "rules/linking.py": Target(
        ("tests/rules/test_linking_caps.py", "tests/sync/test_conversion_cost.py"),
        # the engine against sellsim: slow per mutant; the scan's table tests are in the same file
        deselect=tuple(
            f"tests/sync/test_conversion_cost.py::{name}"
            for name in (
                "test_bulk_import_while_leads_are_linked_costs_a_listing_per_batch_not_a_read_per_contact",
                "test_past_the_page_cap_the_contacts_still_open_are_asked_by_their_id",
            )
        ),
    ),
    "rules/values.py": Target(("tests/rules/test_merge.py", "tests/rules/test_values.py")),
    "rules/importing.py": Target(("tests/sync/test_importing.py",)),
    "rules/caps.py": Target(("tests/rules/test_linking_caps.py",)),
    "rules/schedule.py": Target(
        ("tests/sync/test_schedule.py",),
        deselect=(
            "tests/sync/test_schedule.py::test_advancing_the_manual_clock_past_a_channel_s_due_time_runs_its_sync",
            "tests/sync/test_schedule.py::test_without_a_verified_channel_nothing_is_scheduled",
        ),
    ),
    "rules/bounces.py": Target(("tests/sync/test_bounces.py", "tests/sync/test_bounce_samples.py")),
    "delivery/schedule.py": Target(("tests/delivery/test_schedule.py",)),
}


def mutant_globs(module: str, target: Target) -> list[str]:
    """mutmut's names for the mutants of ``target.only`` (empty: the whole module)."""
    dotted = "kuloo_daemon." + module.removesuffix(".py").replace("/", ".")
    out = []
    for name in target.only:
        if "." in name:
            cls, meth = name.split(".", 1)
            out.append(f"{dotted}.x\u01c1{cls}\u01c1{meth}__mutmut_*")
        else:
            out.append(f"{dotted}.x_{name}__mutmut_*")
    return out


# What the tests need from the checkout (daemon/ is copied as kuloo_daemon/).
COPY = ["daemon", "sellsim", "kuloo_tui", "tests", "config", "pyproject.toml"]


def _make_copy(module: str, tests: list[str], deselect: tuple[str, ...] = ()) -> Path:
    work = Path(tempfile.mkdtemp(prefix="kuloo-mutate-", dir="/tmp"))
    for name in COPY:
        src = ROOT / name
        dst = work / ("kuloo_daemon" if name == "daemon" else name)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, dst)
    target = f"kuloo_daemon/{module}"
    pyproject = (work / "pyproject.toml").read_text(encoding="utf-8")
    cli_args = ["-p", "no:cacheprovider", "-q", *(a for t in deselect for a in ("--deselect", t))]
    pyproject += (
        "\n[tool.mutmut]\n"
        + "\n".join(
            [
                'source_paths = ["kuloo_daemon"]',
                f"only_mutate = {json.dumps([target])}",
                f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
                f"pytest_add_cli_args = {json.dumps(cli_args)}",
                'also_copy = ["sellsim", "kuloo_tui", "config"]',
                "use_git_change_detection = false",
            ]
        )
        + "\n"
    )
    (work / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    return work


def _results(work: Path, module: str, globs: list[str]) -> dict[str, list[str]]:
    """Mutant names by mutmut's status, read from its own result file."""
    from mutmut.stats import status_by_exit_code

    meta = work / "mutants" / "kuloo_daemon" / (module + ".meta")
    data = json.loads(meta.read_text(encoding="utf-8"))
    out: dict[str, list[str]] = {}
    for name, code in data.get("exit_code_by_key", {}).items():
        if globs and not any(fnmatchcase(name, g) for g in globs):
            continue
        status = "not checked" if code is None else status_by_exit_code[code]
        out.setdefault(status, []).append(name)
    return out


# A mutant counts as caught when a test failed or the mutant hung; "no tests" (nothing
# covers the mutated function) and "survived" both count against the module.
CAUGHT = {"killed", "timeout", "caught by type check", "segfault"}


def run_module(
    module: str, keep: bool, show: bool = False, skip: tuple[str, ...] = ()
) -> tuple[int, int, list[str], float, str]:
    target = MODULES[module]
    tests = [t for t in target.tests if (ROOT / t).exists() and t not in skip]
    globs = mutant_globs(module, target)
    work = _make_copy(module, tests, target.deselect)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(work) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTEST_ADDOPTS", None)
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    started = time.monotonic()
    log = work / "mutmut.log"
    with log.open("w") as out:
        proc = subprocess.run(
            ["nice", "-n", "10", mutmut, "run", "--max-children", "1", *globs],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    took = time.monotonic() - started
    if proc.returncode != 0:
        print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
        raise SystemExit(f"mutmut failed on {module} (copy kept in {work})")
    res = _results(work, module, globs)
    total = sum(len(v) for v in res.values())
    survivors = sorted(n for status, names in res.items() if status not in CAUGHT for n in names)
    if show:
        for name in survivors:
            diff = subprocess.run(
                [mutmut, "show", name],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            print(diff.rstrip(), flush=True)
    if keep:
        print(f"  copy kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    detail = ", ".join(f"{status} {len(names)}" for status, names in sorted(res.items()))
    return total, len(survivors), survivors, took, detail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="subset of MODULES (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument("--list", action="store_true", help="print surviving mutant names")
    parser.add_argument("--show", action="store_true", help="print each survivor's diff")
    parser.add_argument(
        "--skip-tests",
        nargs="+",
        default=[],
        metavar="FILE",
        help="leave these test files out (to measure what they add)",
    )
    args = parser.parse_args(argv)
    chosen = args.modules or list(MODULES)
    unknown = [m for m in chosen if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; known: {sorted(MODULES)}")
    rows = []
    for module in chosen:
        total, survived, names, took, detail = run_module(
            module, args.keep, args.show, tuple(args.skip_tests)
        )
        rate = 100.0 * survived / total if total else 0.0
        rows.append((module, total, survived, rate, took))
        print(
            f"{module:24} {survived:4d}/{total:<4d} survived  {rate:5.1f}%  "
            f"({took:.0f} s: {detail})",
            flush=True,
        )
        if args.list:
            for name in names:
                print(f"    {name}")
    print()
    print(f"{'module':24} {'mutants':>7} {'survived':>8} {'rate':>6}")
    for module, total, survived, rate, _ in rows:
        print(f"{module:24} {total:7d} {survived:8d} {rate:5.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
