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
        by_path = re.search(r"spec_from_file_location|[\"'/]conftest\.py[\"']", text)
        if by_path and path != Path(__file__):
            offenders.append(str(path.relative_to(TESTS)))
        for match in re.finditer(r"^from (\S*)conftest import", text, re.M):
            if match.group(1) != ".":  # only a folder's own conftest, relatively
                offenders.append(f"{path.relative_to(TESTS)}: {match.group(0)}")
    assert offenders == []
