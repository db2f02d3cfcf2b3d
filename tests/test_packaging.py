"""What an installed wheel holds: every data file the code reads ships, declared plainly.

Modules read their data files with ``importlib.resources`` (the email template, the client
compatibility table, the TUI's stylesheet), so a file that ``pyproject.toml`` leaves out
works in a checkout and fails only once installed. setuptools also warns, at length, about
a folder of data that is not listed as a package. Checked statically here: building a wheel
in the suite would cost more than the mistake it catches.
"""

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setuptools_table() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def package_folders(table: dict) -> dict[str, Path]:
    """Each listed package and the folder it installs from (through ``package-dir``)."""
    roots = table["package-dir"]
    out = {}
    for name in table["packages"]:
        top, *rest = name.split(".")
        out[name] = ROOT / roots[top] / Path(*rest)
    return out


def data_files(folders: dict[str, Path]) -> list[Path]:
    roots = {folder for name, folder in folders.items() if "." not in name}
    found = []
    for root in roots:
        for path in root.rglob("*"):
            skipped = path.suffix in (".py", ".pyc", ".md") or "__pycache__" in path.parts
            if path.is_file() and not skipped:
                found.append(path)
    return sorted(found)


def test_every_data_file_is_declared_for_the_package_that_holds_it():
    table = setuptools_table()
    folders = package_folders(table)
    patterns = table.get("package-data", {})
    problems = []
    for path in data_files(folders):
        owner = next((name for name, folder in folders.items() if path.parent == folder), None)
        if owner is None:
            problems.append(f"{path.relative_to(ROOT)}: its folder is not a listed package")
            continue
        globs = patterns.get(owner, []) + patterns.get("*", [])
        if not any(fnmatch.fnmatch(path.name, g) for g in globs):
            problems.append(f"{path.relative_to(ROOT)}: no package-data pattern of {owner} matches")
    assert problems == []


def test_the_email_template_is_among_the_data_files():
    # The check above must see the files it is about (a wrong root would make it pass empty).
    found = data_files(package_folders(setuptools_table()))
    names = {p.relative_to(ROOT).as_posix() for p in found}
    assert {
        "daemon/delivery/templates/email.html",
        "daemon/delivery/caniemail.json",
        "kuloo_tui/kuloo.tcss",
    } <= names
