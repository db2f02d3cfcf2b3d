"""Schema management: `kuloo-daemon migrate`, and migrations that match the models."""

import asyncio
import sqlite3
import subprocess
import sys

import pytest


@pytest.mark.e2e
def test_migrate_command_creates_the_schema_and_is_idempotent(short_tmp):
    cfg = f"{short_tmp}/k.toml"
    with open(cfg, "w") as f:
        f.write(
            f'[daemon]\nstate_dir = "{short_tmp}/state"\n[control]\nsocket = "{short_tmp}/c.sock"\n'
        )
    for _ in range(2):
        r = subprocess.run(
            [sys.executable, "-m", "kuloo_daemon.cli", "migrate", "--config", cfg],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert "schema up to date" in r.stdout
    tables = {
        row[0]
        for row in sqlite3.connect(f"{short_tmp}/state/kuloo.sqlite3").execute(
            "select name from sqlite_master where type='table'"
        )
    }
    assert {
        "channel",
        "kuloo_user",
        "article",
        "sequence_progress",
        "outbox_message",
        "sync_run",
        "audit_entry",
    } <= tables


def test_models_have_no_unmigrated_changes():
    """Fails when a model changed without `python -m kuloo_daemon.store.makemigrations`."""
    from tortoise import Tortoise
    from tortoise.migrations.autodetector import MigrationAutodetector

    from kuloo_daemon.store.bridge import tortoise_config

    async def detect():
        config = tortoise_config(":memory:")
        await Tortoise.init(config=config)
        try:
            detector = MigrationAutodetector(Tortoise.apps, config["apps"])
            return await detector.changes()
        finally:
            await Tortoise.close_connections()

    writers = asyncio.run(detect())
    assert [w.name for w in writers] == []


@pytest.mark.e2e
def test_every_index_names_real_columns(short_tmp):
    """SQLite reads an unknown quoted name in an index as a string constant: an index on nothing."""
    cfg = f"{short_tmp}/k.toml"
    with open(cfg, "w") as f:
        f.write(
            f'[daemon]\nstate_dir = "{short_tmp}/state"\n[control]\nsocket = "{short_tmp}/c.sock"\n'
        )
    r = subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.cli", "migrate", "--config", cfg],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    db = sqlite3.connect(f"{short_tmp}/state/kuloo.sqlite3")
    indexes = db.execute("select name, tbl_name from sqlite_master where type='index'").fetchall()
    assert any(table == "kuloo_user" for _name, table in indexes)
    for name, table in indexes:
        columns = db.execute(f'pragma index_info("{name}")').fetchall()
        assert columns and all(cid >= 0 for _seq, cid, _col in columns), (table, name, columns)
