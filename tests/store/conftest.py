"""The store tests' fixtures."""

from __future__ import annotations

import shutil

import pytest

from kuloo_daemon.store.bridge import Store


@pytest.fixture
async def store(short_tmp, sqlite_template, backend):
    """A store on a copy of the session's migrated SQLite file, or on the PostgreSQL
    database of ``backend``."""
    if backend.postgres:
        location = backend.target
    else:
        shutil.copy(sqlite_template, f"{short_tmp}/s.sqlite3")
        location = f"{short_tmp}/s.sqlite3"
    async with Store.open(location) as s:
        yield s
