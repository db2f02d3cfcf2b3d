"""A trio caller cancelled mid-transaction resumes only after the rollback has finished
(issue 14 item 6).

The older test in test_bridge.py cannot see the difference: its next unit of work queues
behind the rollback on the store's loop anyway. Here the caller looks at the database
file itself, through its own sqlite3 connection, the moment it resumes.

Planted bug this catches: deleting the shielded ``await done.wait()`` in
``Store._cross``'s ``except trio.Cancelled`` (the caller then resumes while the asyncio
side still holds the write lock of the half-done transaction).
"""

from __future__ import annotations

import asyncio
import sqlite3

import trio
from tortoise.transactions import in_transaction

from kuloo_daemon.store.bridge import Store
from kuloo_daemon.store.models import Channel


async def _insert_then_unwind_slowly(flag: list[str]) -> None:
    async with in_transaction():
        await Channel.create(name="half-done")
        flag.append("inserted")
        try:
            await asyncio.sleep(3600)  # the trio caller is cancelled here
        finally:
            # Unwinding takes a while (a slow disk, a big transaction): the write lock
            # stays held until the rollback below has run.
            await asyncio.sleep(0.3)
            flag.append("unwinding")
    flag.append("never")  # pragma: no cover - cancellation skips this


def _try_write(db: str) -> str:
    """Take SQLite's write lock without waiting: 'free' or the error SQLite gave."""
    conn = sqlite3.connect(db, timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return "free"
    except sqlite3.OperationalError as exc:
        return str(exc)
    finally:
        conn.close()


def _rows(db: str) -> int:
    conn = sqlite3.connect(db, timeout=5)
    try:
        return conn.execute("SELECT COUNT(*) FROM channel").fetchone()[0]
    finally:
        conn.close()


async def test_cancelled_caller_resumes_after_the_rollback(short_tmp):
    db = f"{short_tmp}/s.sqlite3"
    async with Store.open(db) as store:
        flag: list[str] = []
        with trio.move_on_after(10) as outer:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.run, _insert_then_unwind_slowly, flag)
                while not flag:  # noqa: ASYNC110 - set on the asyncio thread
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
            # The caller has resumed: the transaction must be gone already.
            lock = _try_write(db)
            seen = list(flag)
        assert not outer.cancelled_caught, "the cancelled unit of work did not unwind"
        assert seen == ["inserted", "unwinding"], seen
        assert lock == "free", f"the half-done transaction still held the database: {lock}"
        assert _rows(db) == 0
        assert await store.run(_count) == 0


async def _count() -> int:
    return await Channel.all().count()
