"""Layering is enforced here, not hoped for (STYLE.md, "The house").

Each rule imports a module in a fresh interpreter and inspects ``sys.modules``, or scans
the source for imports, so a forbidden dependency fails the build the day it appears.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
        ("kuloo_tui", {"trio", "tortoise"}),
        ("kuloo_tui.__main__", {"trio", "tortoise"}),
        ("sellsim", {"kuloo_daemon"}),
    ],
)
def test_module_does_not_pull_in(module, forbidden):
    assert loaded_after_import(module) & forbidden == set()


def imports_of(folder: Path) -> dict[Path, set[str]]:
    found = {}
    for path in folder.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[path] = names
    return found


def test_only_store_imports_tortoise():
    offenders = [str(p.relative_to(ROOT)) for p, names in imports_of(ROOT / "daemon").items()
                 if any(n.split(".")[0] == "tortoise" for n in names) and "store" not in p.relative_to(ROOT / "daemon").parts]
    assert offenders == []


# Clipping fetches article pages (never Sell): the one HTTP client outside crm/.
HTTP_OUTSIDE_CRM = {"delivery/clip.py"}


def test_only_crm_talks_http_to_sell():
    offenders = [str(p.relative_to(ROOT)) for p, names in imports_of(ROOT / "daemon").items()
                 if any(n.split(".")[0] in ("httpx", "httpcore", "requests") for n in names)
                 and "crm" not in p.relative_to(ROOT / "daemon").parts
                 and str(p.relative_to(ROOT / "daemon")) not in HTTP_OUTSIDE_CRM]
    assert offenders == []


def test_sellsim_imports_nothing_from_the_daemon():
    offenders = [str(p) for p, names in imports_of(ROOT / "sellsim").items() if any(n.startswith("kuloo_daemon") for n in names)]
    assert offenders == []


def test_every_package_folder_is_listed_in_pyproject():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    mapping = {"daemon": "kuloo_daemon", "kuloo_tui": "kuloo_tui", "sellsim": "sellsim"}
    found = set()
    for folder, name in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    assert found - listed == set(), "add these to [tool.setuptools] packages"
