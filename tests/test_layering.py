"""Layering is enforced here, not hoped for (docs/architecture.md, "The floors").

Two kinds of check: some rules import a module in a fresh interpreter and inspect
``sys.modules`` (what it really pulls in, transitively); the others read the source of
every module with ``ast`` and resolve each import, relative ones included
(``from ..store import channels`` in ``daemon/sync/x.py`` is ``kuloo_daemon.store.channels``),
so a forbidden dependency fails the build the day it appears.

The daemon's layers, top to bottom (a module may import its own unit and any unit in a
lower layer; units side by side in a layer are independent):

    cli
    app
    control
    sync | delivery | links | operations   the capabilities (operations: retention, metrics)
    services                         the shared services they receive
    crm | store                      Sell over HTTP; the database
    base: clock, vocabulary, rules, secrets, config, logs, systemd, scheduler, tokens, instruments,
          the package itself

``services`` sits between the capabilities and (crm, store): it opens the store and the
Sell client pool and hands them up, so it must be above them and below everything that
receives it. ``kuloo_tui`` may import only ``kuloo_daemon.control.protocol``.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "kuloo_daemon": ROOT / "daemon",
    "kuloo_tui": ROOT / "kuloo_tui",
    "sellsim": ROOT / "sellsim",
}

LAYERS: list[set[str]] = [
    {"cli"},
    {"app"},
    {"control"},
    {"sync", "delivery", "links", "operations"},
    {"services"},
    {"crm", "store"},
    {
        "",
        "clock",
        "vocabulary",
        "rules",
        "secrets",
        "config",
        "logs",
        "systemd",
        "scheduler",
        "tokens",
        "instruments",
    },
]
BASE = LAYERS[-1]


def loaded_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return {name.split(".")[0] for name in r.stdout.split()}


@pytest.mark.parametrize(
    "module, forbidden",
    [
        ("kuloo_daemon.control.protocol", {"trio", "asyncio", "textual", "tortoise"}),
        ("kuloo_daemon.control.client", {"trio", "asyncio", "textual", "tortoise"}),
        ("kuloo_daemon.vocabulary", {"trio", "asyncio", "tortoise", "httpx"}),
        ("kuloo_tui", {"trio", "tortoise"}),
        ("kuloo_tui.__main__", {"trio", "tortoise"}),
        ("sellsim", {"kuloo_daemon"}),
    ],
)
def test_module_does_not_pull_in(module, forbidden):
    assert loaded_after_import(module) & forbidden == set()


# ----------------------------------------------------------------------------- import graph


def module_name(package: str, folder: Path, path: Path) -> str:
    parts = list(path.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def module_exists(name: str, roots: dict[str, Path]) -> bool:
    top, *rest = name.split(".")
    if top not in roots:
        return False
    base = roots[top].joinpath(*rest)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_in(source: str, module: str, is_package: bool, roots: dict[str, Path]) -> set[str]:
    """Every module ``module`` imports, absolute names, relative imports resolved."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:  # `from . import methods` imports a submodule
                if module_exists(f"{target}.{alias.name}", roots):
                    found.add(f"{target}.{alias.name}")
    return found


def import_graph(roots: dict[str, Path] = PACKAGES) -> dict[str, tuple[Path, set[str]]]:
    graph = {}
    for package, folder in roots.items():
        for path in folder.rglob("*.py"):
            name = module_name(package, folder, path)
            graph[name] = (
                path,
                imports_in(path.read_text(), name, path.name == "__init__.py", roots),
            )
    return graph


def unit(module: str) -> str:
    """The layering unit of a kuloo_daemon module: its first component ('' for the package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(u: str) -> int:
    for i, units in enumerate(LAYERS):
        if u in units:
            return i
    raise AssertionError(
        f"kuloo_daemon.{u} is in no layer: add it to LAYERS in tests/test_layering.py"
    )


def layering_violations(graph) -> list[str]:
    out = []
    for module, (_path, imported) in sorted(graph.items()):
        if not module.startswith("kuloo_daemon"):
            continue
        here = unit(module)
        for target in sorted(imported):
            if target.split(".")[0] != "kuloo_daemon":
                continue
            there = unit(target)
            if there == here or (here in BASE and there in BASE):
                continue
            if layer_of(there) <= layer_of(here):
                out.append(f"{module} imports {target}")
    return out


def test_every_daemon_module_sits_in_a_layer():
    for module in import_graph():
        if module.startswith("kuloo_daemon"):
            layer_of(unit(module))


def test_the_daemon_layers_hold_for_absolute_and_relative_imports():
    assert layering_violations(import_graph()) == []


def test_crm_never_imports_store_services_or_control():
    graph = import_graph()
    offenders = [
        f"{m} imports {t}"
        for m, (_p, ts) in graph.items()
        if unit(m) == "crm"
        for t in ts
        if t.split(".")[:2]
        in (
            ["kuloo_daemon", "store"],
            ["kuloo_daemon", "services"],
            ["kuloo_daemon", "control"],
            ["kuloo_daemon", "sync"],
        )
    ]
    assert offenders == []


def test_nothing_outside_control_and_above_imports_control():
    graph = import_graph()
    offenders = [
        f"{m} imports {t}"
        for m, (_p, ts) in graph.items()
        if m.startswith("kuloo_daemon") and unit(m) not in ("control", "app", "cli")
        for t in ts
        if t.startswith("kuloo_daemon.control")
    ]
    assert offenders == []


def test_the_tui_imports_only_the_protocol_module():
    graph = import_graph()
    offenders = [
        f"{m} imports {t}"
        for m, (_p, ts) in graph.items()
        if m.startswith("kuloo_tui")
        for t in ts
        if t.startswith("kuloo_daemon")
        and t not in ("kuloo_daemon", "kuloo_daemon.control.protocol")
    ]
    assert offenders == []
    protocol_imports = graph["kuloo_daemon.control.protocol"][1]
    assert {t for t in protocol_imports if t.startswith("kuloo_daemon")} == set()


def test_the_checker_sees_relative_imports(tmp_path):
    """Plant violations only a relative import carries; the checker must see each."""
    pkg = tmp_path / "daemon"
    for folder in ("crm", "store", "sync", "control"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "clock.py").write_text("from .sync import engine\n")  # base reaching up
    (pkg / "crm" / "client.py").write_text("from ..store import models\nfrom .. import services\n")
    (pkg / "store" / "models.py").write_text("from ..vocabulary import Plan\n")
    (pkg / "sync" / "engine.py").write_text(
        "from ..control.methods import x\nfrom ..crm import client\n"
    )
    (pkg / "control" / "methods.py").write_text("from . import render\n")
    (pkg / "services.py").write_text("")
    (pkg / "vocabulary.py").write_text("")
    graph = import_graph({"kuloo_daemon": pkg})
    assert graph["kuloo_daemon.crm.client"][1] >= {
        "kuloo_daemon.store.models",
        "kuloo_daemon.services",
    }
    assert layering_violations(graph) == [
        "kuloo_daemon.clock imports kuloo_daemon.sync",
        "kuloo_daemon.clock imports kuloo_daemon.sync.engine",
        "kuloo_daemon.crm.client imports kuloo_daemon.services",
        "kuloo_daemon.crm.client imports kuloo_daemon.store",
        "kuloo_daemon.crm.client imports kuloo_daemon.store.models",
        "kuloo_daemon.sync.engine imports kuloo_daemon.control.methods",
    ]


# ----------------------------------------------------------------------------- third-party boundaries


def third_party(folder: str) -> dict[Path, set[str]]:
    return {
        path: {t.split(".")[0] for t in ts}
        for m, (path, ts) in import_graph().items()
        if m.startswith("kuloo_daemon") and path.is_relative_to(ROOT / folder)
    }


def test_only_store_imports_tortoise():
    offenders = [
        str(p.relative_to(ROOT))
        for p, names in third_party("daemon").items()
        if "tortoise" in names and "store" not in p.relative_to(ROOT / "daemon").parts
    ]
    assert offenders == []


# Clipping fetches article pages (never Sell): the one HTTP client outside crm/.
HTTP_OUTSIDE_CRM = {"delivery/clip.py"}


def test_only_crm_talks_http_to_sell():
    offenders = [
        str(p.relative_to(ROOT))
        for p, names in third_party("daemon").items()
        if names & {"httpx", "httpcore", "requests"}
        and "crm" not in p.relative_to(ROOT / "daemon").parts
        and str(p.relative_to(ROOT / "daemon")) not in HTTP_OUTSIDE_CRM
    ]
    assert offenders == []


def test_sellsim_imports_nothing_from_the_daemon():
    offenders = [
        m
        for m, (_p, ts) in import_graph().items()
        if m.startswith("sellsim") and any(t.startswith("kuloo_daemon") for t in ts)
    ]
    assert offenders == []


# ----------------------------------------------------------------------------- one clock, one log style


def calls_in(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            yield node


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def test_no_time_is_read_outside_the_clock_module():
    wall = {
        "datetime.now",
        "datetime.utcnow",
        "datetime.today",
        "date.today",
        "time.time",
        "datetime.datetime.now",
        "datetime.datetime.utcnow",
        "datetime.date.today",
    }
    offenders = [
        f"{p.relative_to(ROOT)}:{c.lineno} {dotted(c.func)}"
        for p in (ROOT / "daemon").rglob("*.py")
        if p.name != "clock.py"
        for c in calls_in(p)
        if dotted(c.func) in wall
    ]
    assert offenders == []


LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
EVENT = re.compile(r"^[a-z][a-z0-9 ,;:'()/_-]*$")


def test_one_logger_naming_scheme_and_one_event_style():
    """Loggers are named ``kuloo.<unit>``; events are lowercase phrases (values go in keys)."""
    problems = []
    for module, (path, _ts) in import_graph().items():
        if not module.startswith("kuloo_daemon"):
            continue
        for call in calls_in(path):
            name = dotted(call.func)
            ours = name == "structlog.get_logger" or (
                name == "logging.getLogger"
                and call.args
                and isinstance(call.args[0], ast.Constant)
                and str(call.args[0].value).startswith("kuloo")
            )  # not a library's logger
            if ours:
                arg = call.args[0] if call.args else ast.Constant(None)
                if not (
                    isinstance(arg, ast.Constant)
                    and arg.value == f"kuloo.{unit(module) or 'daemon'}"
                ):
                    problems.append(
                        f"{module}:{call.lineno} logger {ast.unparse(arg)}, want 'kuloo.{unit(module)}'"
                    )
            elif (
                name.split(".")[-1] in LEVELS
                and name.split(".")[0] in ("log", "bound", "logger")
                and call.args
            ):
                event = call.args[0]
                if not (
                    isinstance(event, ast.Constant)
                    and isinstance(event.value, str)
                    and EVENT.match(event.value)
                ):
                    problems.append(f"{module}:{call.lineno} event {ast.unparse(event)}")
    assert problems == []


def test_every_package_folder_is_listed_in_pyproject():
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = set()
    for name, folder in PACKAGES.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            found.add(".".join((name, *rel)))
    assert found - listed == set(), "add these to [tool.setuptools] packages"
