"""A migrated SQLite file to copy: ``sqlite_template`` and ``seed_sqlite``.

Migrating a new SQLite file costs about 0.7 s of CPU and 2-3 s on a loaded machine; copying a
migrated one costs milliseconds. Tests that are not about migrating start from a copy (the
daemon then finds nothing to migrate); tests of migrating itself start from nothing.
Registered for the whole suite by ``pytest_plugins`` in tests/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def sqlite_template() -> Iterator[Path]:
    """One migrated SQLite file per session (so per xdist worker): copy it, never open it."""
    from kuloo_daemon.store.bridge import migrate_blocking

    folder = tempfile.mkdtemp(dir="/tmp", prefix="kt-db-")
    path = Path(folder) / "kuloo.sqlite3"
    migrate_blocking(path)
    yield path
    shutil.rmtree(folder, ignore_errors=True)


def seed_sqlite(template: Path, database: str | Path) -> Path:
    """A copy of the migrated ``template`` at ``database`` unless a file is there already,
    with the modes the daemon gives a new one (folder 0700, file 0600)."""
    database = Path(database)
    if not database.exists():
        if not database.parent.exists():
            database.parent.mkdir(parents=True)
            os.chmod(database.parent, 0o700)
        shutil.copyfile(template, database)
        os.chmod(database, 0o600)
    return database
