"""The test suite's own layout: one home for each shared fixture."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_no_conftest_is_loaded_by_path_or_imported_from_another_folder():
    """Shared fixtures live in a plugin module (tests/plugins/, registered by pytest_plugins in
    tests/conftest.py), never in a conftest that other folders load by file path."""
    offenders = []
    for path in TESTS.rglob("*.py"):
        text = path.read_text()
        by_path = re.search(r"spec_from_file_location\([^)]*conftest|[\"'/]conftest\.py[\"']", text)
        if by_path and path != Path(__file__):
            offenders.append(str(path.relative_to(TESTS)))
        for match in re.finditer(r"^from (\S*)conftest import", text, re.M):
            if match.group(1) != ".":  # only a folder's own conftest, relatively
                offenders.append(f"{path.relative_to(TESTS)}: {match.group(0)}")
    assert offenders == []


ROOT = TESTS.parent
# A test path, optionally with ``::test_name``, as the Makefile, scripts and notes name them.
TEST_PATH = re.compile(r"\b(tests/[\w/.-]+\.py)(?:::(\w+))?")


def _named_paths(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2) or "") for m in TEST_PATH.finditer(text)]


def test_every_test_path_named_by_make_soak_mutate_and_the_mutation_notes_exists():
    """Moved tests: `make soak`, scripts/mutate.py and tests/MUTATION.md name test files
    (and tests in them); each must exist, or soak and mutation runs silently test nothing."""
    missing = []
    for source in ("Makefile", "scripts/mutate.py", "tests/MUTATION.md"):
        text = (ROOT / source).read_text()
        named = _named_paths(text)
        assert named or source == "tests/MUTATION.md", f"{source} names no test file"
        for path, name in named:
            file = ROOT / path
            if not file.is_file():
                missing.append(f"{source}: {path}")
            elif name and not re.search(rf"^(async )?def {name}\b", file.read_text(), re.M):
                missing.append(f"{source}: {path}::{name}")
    assert missing == []


def test_every_module_scripts_mutate_names_exists():
    import runpy

    modules = runpy.run_path(str(ROOT / "scripts" / "mutate.py"))["MODULES"]
    assert [m for m in modules if not (ROOT / "daemon" / m).is_file()] == []
