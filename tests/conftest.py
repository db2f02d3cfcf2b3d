"""Two event loops in one pytest session (see ../shared/STACK-NOTES.md).

Async tests run on trio (pytest-trio) unless they carry ``@pytest.mark.anyio``, which the
TUI tests use to run on asyncio. ``trio_mode`` stays off: it breaks asyncio tests.
"""

import inspect
import os
import shutil
import sys
import tempfile

import pytest

pytest_plugins = ["sellsim.pytest_plugin"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        fn = getattr(item, "function", None)
        if fn is None or not inspect.iscoroutinefunction(fn):
            continue
        if item.get_closest_marker("anyio") is None and item.get_closest_marker("trio") is None:
            item.add_marker(pytest.mark.trio)


@pytest.fixture
def anyio_backend():
    # anyio >= 4.12 would otherwise run every anyio test on trio too, where Textual fails.
    return "asyncio"


@pytest.fixture
def short_tmp():
    """A short folder under /tmp: AF_UNIX paths are limited to about 107 bytes."""
    path = tempfile.mkdtemp(dir="/tmp", prefix="kt-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def venv_bin():
    return os.path.dirname(sys.executable)
