"""Retention (issue 27 item 4): old rows go in small id-range batches; what must stay stays.

In process on a real SQLite file (``open_services``), with the manual clock: rows written
"long ago" by moving the clock, then pruned by the daily job.
"""

from __future__ import annotations

from datetime import timedelta

from kuloo_daemon.operations.retention import Retention
from kuloo_daemon.services import open_services
from kuloo_daemon.store import retention as r
from kuloo_daemon.store.models import (
    Article,
    AuditEntry,
    BounceEvent,
    Channel,
    InboundMessage,
    OutboxMessage,
    SequenceProgress,
    SyncRun,
    User,
)

DAY = timedelta(days=1)


async def test_the_daily_job_prunes_old_rows_and_keeps_what_must_stay(services_config):
    config = services_config(clock={"mode": "manual", "start": "2026-06-01T00:00:00Z"})
    async with open_services(config) as services:
        now = services.clock.now()
        await services.store.run(_seed, now)
        job = Retention(services)
        (clock_job,) = job.jobs()
        assert clock_job.due(now) == now  # due at start
        await clock_job.run()
        assert clock_job.due(now) == now + DAY
        audit = await services.store.run(_values, AuditEntry, "note")
        assert audit == ["recent"]  # 2,500 old entries gone, in batches of 1,000
        states = await services.store.run(_values, OutboxMessage, "state")
        assert sorted(states) == ["queued", "sent", "uncertain"]  # old sent/failed/cancelled gone
        runs = await services.store.run(_runs)
        # Channel 1: the running one and the recent newest stay; channel 2: its newest (150
        # days old) stays, so its cadence still counts from it.
        assert runs == {1: ["running", "ok@1"], 2: ["running", "ok@150"]}
        assert job.deleted == {
            "sync_runs": 3,
            "audit": 2500,
            "outbox": 3,
            "bounce_events": 0,
            "inbound_messages": 0,
        }
        pruned = {
            t: services.metrics.registry.get_sample_value(
                "kuloo_sync_retention_pruned_rows_total", {"table": t}
            )
            for t in job.deleted
        }
        assert pruned == {  # the metrics count them
            "sync_runs": 3,
            "audit": 2500,
            "outbox": 3,
            "bounce_events": 0,
            "inbound_messages": 0,
        }
        await clock_job.run()  # nothing left to do
        assert set(job.deleted.values()) == {0}
        assert (
            services.metrics.registry.get_sample_value(
                "kuloo_sync_retention_pruned_rows_total", {"table": "audit"}
            )
            == 2500
        )


async def _user(now):
    """The one user of channel 1 the rows belong to."""
    return await User.create(
        channel_id=1,
        kuloo_id="k1",
        email="a@example.com",
        email_key="a@example.com",
        created_at=now,
        updated_at=now,
    )


async def _seed(now):
    """Rows in time order, as the daemon writes them: ids and times grow together."""
    for cid in (1, 2):
        await Channel.create(id=cid, name=f"c{cid}", created_at=now, updated_at=now)
    user = await _user(now)
    article = await Article.create(
        channel_id=1,
        key="a",
        title="A",
        format="markdown",
        body="x",
        created_at=now,
        updated_at=now,
    )
    t0 = now - 400 * DAY
    entries = [
        AuditEntry(
            channel_id=1,
            user_id=user.id,
            at=t0 + timedelta(minutes=i),
            actor="admin",
            field="frequency",
            note="",
        )
        for i in range(2500)
    ]
    entries.append(
        AuditEntry(channel_id=1, user_id=user.id, at=now - 10 * DAY, actor="admin", note="recent")
    )
    await AuditEntry.bulk_create(entries)
    for i, (state, age) in enumerate(
        [
            ("sent", 200),
            ("failed", 200),
            ("cancelled", 200),
            ("uncertain", 200),
            ("queued", 200),
            ("sent", 10),
        ]
    ):
        msg = await OutboxMessage.create(
            channel_id=1,
            user_id=user.id,
            kind="sequence",
            state=state,
            message_id=f"<{i}@t>",
            created_at=now - age * DAY,
            updated_at=now - age * DAY,
        )
        if i == 0:
            await SequenceProgress.create(
                user_id=user.id, article_id=article.id, outbox_id=msg.id, sent_at=now - 200 * DAY
            )
    for cid in (1, 2):
        for age, status in ((300, "ok"), (200, "running"), (150, "ok")):
            await SyncRun.create(channel_id=cid, started_at=now - age * DAY, status=status)
    await SyncRun.create(channel_id=1, started_at=now - DAY, status="ok")


async def _values(model, name):
    return list(await model.all().order_by("id").values_list(name, flat=True))


async def _runs():
    out: dict[int, list[str]] = {}
    now = max(await SyncRun.all().values_list("started_at", flat=True))
    for run in await SyncRun.all().order_by("id"):
        label = run.status if run.status == "running" else f"ok@{(now + DAY - run.started_at).days}"
        out.setdefault(run.channel_id, []).append(label)
    return out


async def test_the_sent_sequence_is_remembered_after_its_message_is_pruned(services_config):
    config = services_config(clock={"mode": "manual", "start": "2026-06-01T00:00:00Z"})
    async with open_services(config) as services:
        now = services.clock.now()
        await services.store.run(_seed, now)
        await Retention(services).run()
        progress = await services.store.run(_values, SequenceProgress, "sent_at")
        assert progress == [now - 200 * DAY]  # what was sent is never sent again


async def test_the_boundary_is_found_by_a_binary_search_and_out_of_order_rows_are_kept(
    services_config,
):
    config = services_config(clock={"mode": "manual", "start": "2026-06-01T00:00:00Z"})
    async with open_services(config) as services:
        now = services.clock.now()
        await services.store.run(_seed, now)
        kind = next(k for k in r.KINDS if k.name == "audit")
        first, last = await services.store.run(r.boundary, kind, now - 365 * DAY)
        ids = await services.store.run(_values, AuditEntry, "id")
        assert (first, last) == (ids[0], ids[2499])
        assert await services.store.run(r.boundary, kind, now - 500 * DAY) is None
        deleted, nxt = await services.store.run(r.prune_batch, kind, now - 365 * DAY, first, last)
        assert (deleted, nxt) == (1000, first + 1000)
        # A batch never deletes a row newer than the cutoff, even inside its id range.
        deleted, nxt = await services.store.run(r.prune_batch, kind, now - 399 * DAY, nxt, ids[-1])
        assert (deleted, nxt) == (
            440,
            first + 2000,
        )  # minutes 1,000..1,439 of day one, not later ones


async def test_bounce_events_and_mailbox_digests_go_after_audit_days(services_config):
    """Bounce events (their remote servers' words) and the bounce mailbox's digests are kept
    as long as the audit trail (``[retention] audit_days``), counted in the metrics."""
    config = services_config(
        clock={"mode": "manual", "start": "2026-06-01T00:00:00Z"}, retention={"audit_days": 20}
    )
    async with open_services(config) as services:
        now = services.clock.now()
        await services.store.run(_seed_bounces, now)
        job = Retention(services)
        await job.run()
        assert (job.deleted["bounce_events"], job.deleted["inbound_messages"]) == (1500, 2)
        assert await services.store.run(_values, BounceEvent, "reason") == ["recent"]
        assert await services.store.run(_values, InboundMessage, "digest") == ["c" * 64]
        assert {
            t: services.metrics.registry.get_sample_value(
                "kuloo_sync_retention_pruned_rows_total", {"table": t}
            )
            for t in ("bounce_events", "inbound_messages")
        } == {"bounce_events": 1500, "inbound_messages": 2}


async def _seed_bounces(now):
    """1,500 bounce events 25 to 26 days old (two batches) and one 10 days old; three
    digests, 400, 21 and 19 days old."""
    await Channel.create(id=1, name="c1", created_at=now, updated_at=now)
    user = await _user(now)
    t0 = now - 26 * DAY
    events = [
        BounceEvent(
            channel_id=1,
            user_id=user.id,
            kind="soft",
            status="4.2.2",
            reason="550 mailbox full at mx.example.org",
            at=t0 + timedelta(minutes=i),
        )
        for i in range(1500)
    ]
    events.append(
        BounceEvent(channel_id=1, user_id=None, kind="hard", reason="recent", at=now - 10 * DAY)
    )
    await BounceEvent.bulk_create(events)
    for digest, age in (("a", 400), ("b", 21), ("c", 19)):
        await InboundMessage.create(digest=digest * 64, kind="hard", at=now - age * DAY)


async def test_status_shows_the_database_size(services_config):
    from kuloo_daemon.control.context import Context
    from kuloo_daemon.control.methods import status
    from kuloo_daemon.delivery.service import Delivery

    config = services_config()
    async with open_services(config) as services:
        size = await services.store.run(r.database_size, str(config.database_path))
        assert size == config.database_path.stat().st_size + (
            (config.database_path.parent / (config.database_path.name + "-wal")).stat().st_size
            if (config.database_path.parent / (config.database_path.name + "-wal")).exists()
            else 0
        )
        context = Context(services, Delivery(services), "", lambda: 1)
        assert (await status(context, {}))["database"]["bytes"] >= size > 0
