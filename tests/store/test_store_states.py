"""States persisted by the store: start-up repair of interrupted sync runs, the outbox
migration from ``pending`` to ``queued``, the manual clock's time."""

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta

from kuloo_daemon.services import open_services
from kuloo_daemon.store import clock_time
from kuloo_daemon.store.bridge import Store, tortoise_config
from kuloo_daemon.store.models import Channel, SyncRun
from kuloo_daemon.store.sync import runs as sync_runs

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


async def _runs(statuses):
    channel = await Channel.create(name="c")
    ids = []
    for status in statuses:
        ids.append((await SyncRun.create(channel=channel, started_at=T0, status=status)).id)
    return ids


async def _read_runs():
    return [(r.id, r.status, r.reason, r.finished_at) for r in await SyncRun.all().order_by("id")]


async def test_a_run_left_running_is_marked_failed_interrupted(short_tmp):
    async with Store.open(f"{short_tmp}/s.sqlite3") as store:
        running, ok, also_running = await store.run(_runs, ["running", "ok", "running"])
        later = T0 + timedelta(hours=1)
        assert await store.run(sync_runs.fail_interrupted, later) == [running, also_running]
        assert await store.run(_read_runs) == [
            (running, "failed", "interrupted", later),
            (ok, "ok", "", None),
            (also_running, "failed", "interrupted", later),
        ]
        assert await store.run(sync_runs.fail_interrupted, later) == []


async def test_start_up_repairs_interrupted_runs(short_tmp, services_config):
    config = services_config(clock={"mode": "manual", "start": "2026-01-06T00:00:00Z"})
    async with Store.open(config.database_path) as store:
        [running] = await store.run(_runs, ["running"])
    async with open_services(config) as services:
        [(run_id, status, reason, finished)] = await services.store.run(_read_runs)
    assert (run_id, status, reason) == (running, "failed", "interrupted")
    assert finished == datetime(2026, 1, 6, tzinfo=UTC)  # the clock's time, not the wall's


async def test_the_manual_time_is_kept(short_tmp):
    async with Store.open(f"{short_tmp}/s.sqlite3") as store:
        assert await store.run(clock_time.load_or_start, T0) == T0
        await store.run(clock_time.save, T0 + timedelta(days=2))
        assert await store.run(clock_time.load_or_start, T0) == T0 + timedelta(days=2)


def test_outbox_pending_becomes_queued(short_tmp):
    """A database from before the migration keeps its mail, in the new first state."""
    db = f"{short_tmp}/old.sqlite3"
    config = tortoise_config(db)

    async def migrate(target=None):
        from tortoise import Tortoise

        try:
            from tortoise.migrations.api import migrate as run

            await run(config=config, target=target)
        finally:
            await Tortoise.close_connections()

    asyncio.run(migrate("models.0002_connection_checked_at"))
    con = sqlite3.connect(db)
    now = "2026-01-05 09:00:00+00:00"
    con.execute(
        "INSERT INTO channel (id, name, plan, add_all_users_to_crm, sequential_tags, sender, postal_address,"
        " connection_status, connection_problems, sync_state, sync_status, created_at, updated_at)"
        " VALUES (1, 'c', 'free', 0, '[]', '', '', 'none', '[]', '{}', '', ?, ?)",
        (now, now),
    )
    con.execute(
        "INSERT INTO kuloo_user (id, channel_id, kuloo_id, email, first_name, last_name, source, frequency,"
        " unsubscribed, add_to_crm, promo_tags, sync_error, synced_values, created_at, updated_at)"
        " VALUES (1, 1, 'K1', 'a@b.test', '', '', '', 'weekly', 0, 0, '[]', '', '{}', ?, ?)",
        (now, now),
    )
    for i, state in enumerate(["pending", "sent", "pending"], 1):
        con.execute(
            "INSERT INTO outbox_message (id, channel_id, user_id, kind, state, message_id, attempts,"
            " last_error, created_at, updated_at) VALUES (?, 1, 1, 'digest', ?, ?, 0, '', ?, ?)",
            (i, state, f"<{i}@k>", now, now),
        )
    con.commit()
    con.close()

    asyncio.run(migrate())
    con = sqlite3.connect(db)
    assert [r[0] for r in con.execute("SELECT state FROM outbox_message ORDER BY id")] == [
        "queued",
        "sent",
        "queued",
    ]
    assert con.execute("SELECT reason FROM sync_run").fetchall() == []
    assert [r[0] for r in con.execute("SELECT name FROM channel")] == ["c"]
    con.close()
