"""The files `make soak` and `scripts/mutate.py` name exist: a moved or deleted test
file (or module) must be renamed there in the same change, or those runs break silently
outside `make test`."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _mutate_module():
    spec = importlib.util.spec_from_file_location(
        "kuloo_mutate_script", ROOT / "scripts" / "mutate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_every_module_and_test_file_mutate_names_exists():
    """Planted bug: a test file renamed without its line in MODULES (as test_wire.py was)."""
    modules = _mutate_module().MODULES
    missing = []
    for module, target in modules.items():
        if not ((ROOT / "daemon" / module).is_file() or (ROOT / module).is_file()):
            missing.append(module)
        for path in (*target.tests, *target.deselect):
            if not (ROOT / path.split("::", 1)[0]).is_file():
                missing.append(path)
    assert modules and missing == []


def test_every_test_file_make_soak_names_exists():
    text = (ROOT / "Makefile").read_text()
    soak = text.split("\nsoak:", 1)[1].split("\n\n", 1)[0]
    paths = re.findall(r"tests/\S+\.py", soak)
    assert paths and [p for p in paths if not (ROOT / p).is_file()] == []
