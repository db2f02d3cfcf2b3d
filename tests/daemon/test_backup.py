"""Backup and restore (issue 27 item 2): ``store.backup`` on real SQLite files, and
``kuloo-daemon backup``/``restore`` as an operator runs them, beside a daemon that syncs."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kuloo_daemon.store import backup as b
from kuloo_daemon.store.files import StoreFileError


def kuloo_db(path: Path, *, migrations=("0001_initial", "0009_leases")) -> Path:
    """A small database shaped like the store's (the tables restore touches)."""
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            PRAGMA journal_mode=WAL;
            CREATE TABLE tortoise_migrations (id INTEGER PRIMARY KEY, app TEXT, name TEXT);
            CREATE TABLE channel (id INTEGER PRIMARY KEY, sync_state TEXT);
            CREATE TABLE kuloo_user (id INTEGER PRIMARY KEY, crm_id INTEGER, crm_push_at TEXT);
            CREATE TABLE outbox_message (id INTEGER PRIMARY KEY, state TEXT, last_error TEXT);
        """)
        conn.executemany(
            "INSERT INTO tortoise_migrations (app, name) VALUES ('models', ?)",
            [(m,) for m in migrations],
        )
        conn.execute('INSERT INTO channel VALUES (1, \'{"device_uuid": "d", "mode": "feed"}\')')
        conn.executemany("INSERT INTO kuloo_user VALUES (?, ?, NULL)", [(1, 1001), (2, None)])
        conn.executemany(
            "INSERT INTO outbox_message VALUES (?, ?, '')",
            [(1, "queued"), (2, "sending"), (3, "sent"), (4, "failed")],
        )
    return path


def test_a_backup_is_consistent_while_the_database_is_written(tmp_path):
    db = kuloo_db(tmp_path / "kuloo.sqlite3")
    stop = threading.Event()

    def writer():  # another connection keeps committing, as the daemon would
        with sqlite3.connect(db) as conn:
            i = 10
            while not stop.is_set():
                conn.execute("INSERT INTO outbox_message VALUES (?, 'sent', '')", (i,))
                conn.commit()
                i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        seen = []
        out = b.backup(
            db, tmp_path / "copy.sqlite3", lambda done, total: seen.append((done, total))
        )
    finally:
        stop.set()
        t.join()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # it holds the Sell tokens
    assert b.check_copy(out) == ["0001_initial", "0009_leases"]
    with sqlite3.connect(out) as conn:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        assert (
            conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        )  # one self-contained file
        assert conn.execute("SELECT count(*) FROM outbox_message WHERE id < 10").fetchone()[0] == 4
    assert seen and seen[-1][0] == seen[-1][1]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    with pytest.raises(StoreFileError, match="already exists"):
        b.backup(db, out)


def test_a_copy_that_is_not_one_this_version_knows_is_refused(tmp_path):
    (tmp_path / "text").write_text("not a database")
    with pytest.raises(StoreFileError, match="not a SQLite database"):
        b.check_copy(tmp_path / "text")
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(StoreFileError, match="not a Kuloo database"):
        b.check_copy(tmp_path / "other.db")
    newer = kuloo_db(tmp_path / "newer.db", migrations=("0001_initial", "0099_from_the_future"))
    with pytest.raises(StoreFileError, match="newer kuloo-daemon .*0099_from_the_future"):
        b.check_copy(newer)
    with pytest.raises(StoreFileError, match="no such file"):
        b.check_copy(tmp_path / "missing.db")


def test_restore_keeps_the_old_database_and_makes_the_daemon_look_first(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    db = kuloo_db(state / "kuloo.sqlite3")
    copy = b.backup(db, tmp_path / "copy.sqlite3")
    with sqlite3.connect(db) as conn:  # after the backup: the live database moves on
        conn.execute("INSERT INTO outbox_message VALUES (99, 'sent', '')")
    (state / "kuloo.sqlite3-shm").write_bytes(b"x")
    aside = b.restore(copy, db, state)
    assert aside is not None and aside.exists() and aside.with_name(aside.name + "-shm").exists()
    assert not (state / "kuloo.sqlite3-shm").exists() and not (state / "kuloo.sqlite3-wal").exists()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    with sqlite3.connect(db) as conn:
        # The feed reads Sell whole, adopting KulooIds written after the copy until it is done.
        assert list(json.loads(conn.execute("SELECT sync_state FROM channel").fetchone()[0])) == [
            "restored_at"
        ]
        pushes = dict(conn.execute("SELECT id, crm_push_at FROM kuloo_user"))
        assert pushes[1] is None and pushes[2] is not None  # the unlinked user is looked up first
        states = dict(conn.execute("SELECT id, state FROM outbox_message"))
        assert states == {1: "uncertain", 2: "uncertain", 3: "sent", 4: "failed"}
    assert "check the outbox" in b.delivery_paused(state)
    assert (
        b.resume_delivery(state)
        and b.delivery_paused(state) is None
        and not b.resume_delivery(state)
    )


# ---------------------------------------------------------------- the commands, beside a daemon


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_backup_refuses_postgresql_and_names_pg_dump(tmp_path):
    config = tmp_path / "k.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{tmp_path}/state"\n[control]\nsocket = "{tmp_path}/c.sock"\n'
        '[store]\nurl = "postgresql://kuloo@127.0.0.1:5999/kuloo"\n'
    )
    for args in (
        ("backup", "--to", str(tmp_path / "x")),
        ("restore", "--from", str(tmp_path / "x")),
    ):
        done = cli(*args[:1], "--config", str(config), *args[1:])
        assert done.returncode == 2 and "pg_dump" in done.stderr and not (tmp_path / "x").exists()


def test_restore_refuses_while_the_daemon_runs(daemon_factory, tmp_path):
    d = daemon_factory()
    d.start()
    d.wait_for("READY=1")
    copy = tmp_path / "copy.sqlite3"
    assert cli("backup", "--config", str(d.config_path), "--to", str(copy)).returncode == 0
    done = cli("restore", "--config", str(d.config_path), "--from", str(copy))
    assert (
        done.returncode == 1
        and "another kuloo-daemon" in done.stderr
        and len(done.stderr.splitlines()) == 1
    )
