"""``store.health``: which failures are an outage of the store (the database unreachable, a
full disk) rather than an ordinary error, and that an outage is logged once and its end once."""

from __future__ import annotations

import errno
import sqlite3

from structlog.testing import capture_logs

from kuloo_daemon.store.health import FULL, OK, UNAVAILABLE, Health, StoreUnavailable, classify


def wrapped(inner: BaseException) -> Exception:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise RuntimeError("tortoise wrapped it") from exc
    except RuntimeError as outer:
        return outer


def test_full_disk_and_unreachable_database_are_told_apart_from_ordinary_errors():
    full = sqlite3.OperationalError("database or disk is full")
    assert classify(full) == FULL
    assert classify(wrapped(full)) == FULL
    assert classify(OSError(errno.ENOSPC, "No space left on device")) == FULL
    assert (
        classify(ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed")) == UNAVAILABLE
    )
    assert classify(wrapped(ConnectionResetError())) == UNAVAILABLE
    assert classify(sqlite3.IntegrityError("UNIQUE constraint failed: kuloo_user.email")) is None
    assert classify(ValueError("a bug")) is None


def test_an_outage_is_logged_once_and_its_end_once():
    health = Health("kuloo.sqlite3")
    with capture_logs() as logs:
        for _ in range(50):
            down = health.failed(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
            assert isinstance(down, StoreUnavailable) and "the database is unreachable" in str(down)
        assert health.failed(ValueError("a bug")) is None
        assert health.document()["state"] == UNAVAILABLE and health.document()["since"]
        health.answered()
        health.answered()
    assert [e["event"] for e in logs] == [
        "the database is unreachable: waiting for it",
        "the database answers again",
    ]
    assert health.state == OK and health.document()["since"] is None
