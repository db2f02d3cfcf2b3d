"""Sync runs: begun, finished, listed, and repaired after a crash.

``begin_run`` creates a ``running`` run and gathers what the run needs (token, plan, feed
state, the linked record ids) — or finishes it ``skipped`` at once when the channel
cannot sync; ``finish_run`` closes it and keeps the feed state; ``runs``/``last_run`` are
the history; ``sync_schedule_inputs`` what the scheduler needs to know when each channel
syncs next; ``fail_interrupted`` the start-up repair: a run left ``running`` by a crash is
``failed`` with reason ``interrupted`` (the rule is ``vocabulary.sync_run_after_crash``;
this module only persists it).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tortoise.functions import Max
from tortoise.transactions import in_transaction

from ...secrets import Secret
from ...vocabulary import (
    ConnectionStatus,
    Plan,
    SyncRunStatus,
    sync_run_after_crash,
    sync_run_finish,
)
from ..models import Channel as ChannelRow
from ..models import SyncRun
from .lookups import linked_ids
from .rows import channel_row
from .types import COUNT_KEYS, RunDoc, RunStart


async def fail_interrupted(now: datetime) -> list[int]:
    """Mark every run still ``running`` as failed/interrupted at ``now``; returns their ids."""
    ids = []
    async with in_transaction():
        for run in await SyncRun.filter(status=SyncRunStatus.RUNNING.value).select_for_update():
            outcome = sync_run_after_crash(SyncRunStatus(run.status))
            if outcome is None:
                continue
            run.status, run.reason = outcome
            run.finished_at = now
            await run.save(update_fields=["status", "reason", "finished_at"])
            ids.append(run.id)
    return ids


def run_doc(row: SyncRun) -> RunDoc:
    counts = {k: int((row.counts or {}).get(k, 0)) for k in COUNT_KEYS}
    return RunDoc(
        row.id,
        row.channel_id,
        SyncRunStatus(row.status),
        row.reason,
        row.error,
        row.started_at,
        row.finished_at,
        counts,
        row.daemon_id,
        row.retry_at,
    )


async def begin_run(channel_id: int, now: datetime) -> RunStart:
    """A new run; ``skipped`` at once (with the reason) when the channel cannot sync now."""
    async with in_transaction():
        channel = await channel_row(channel_id)
        last = SyncRun.filter(channel_id=channel_id).order_by("-id").first()
        previous = await last.values_list("retry_at")  # rate_limited: probe first until then
        row = await SyncRun.create(
            channel_id=channel_id, started_at=now, status=SyncRunStatus.RUNNING.value, counts={}
        )
        reason = error = ""
        if not channel.sell_token:
            reason, error = "no_token", "no Zendesk Sell API token: set one on the channel to sync"
        elif channel.connection_status != ConnectionStatus.VERIFIED.value:
            reason = f"connection_{channel.connection_status}"
            error = (
                f"the Sell connection is {channel.connection_status}: fix it and verify the channel"
            )
        if reason:
            row.status = sync_run_finish(SyncRunStatus.RUNNING, SyncRunStatus.SKIPPED).value
            row.reason, row.error, row.finished_at = reason, error, now
            await row.save()
            channel.sync_status, channel.last_sync_at = f"skipped: {error}", now
            await channel.save(update_fields=["sync_status", "last_sync_at"])
        ids = await linked_ids(channel_id)
    return RunStart(
        run_doc(row),
        Secret(channel.sell_token) if channel.sell_token else None,
        Plan(channel.plan),
        tuple(channel.sequential_tags or ()),
        channel.add_all_users_to_crm,
        dict(channel.sync_state or {}),
        ids,
        previous[0] if previous else None,
    )


async def finish_run(
    run_id: int,
    status: SyncRunStatus,
    reason: str,
    error: str,
    counts: Mapping[str, int],
    feed_state: Mapping[str, Any] | None,
    now: datetime,
    retry_at: datetime | None = None,
) -> RunDoc:
    async with in_transaction():
        row = await SyncRun.get(id=run_id)
        row.status = sync_run_finish(SyncRunStatus(row.status), status).value
        row.reason, row.error, row.finished_at, row.retry_at = reason, error, now, retry_at
        row.counts = {k: int(counts.get(k, 0)) for k in COUNT_KEYS}
        await row.save()
        channel = await channel_row(row.channel_id)
        channel.last_sync_at = now
        channel.sync_status = status.value + (f": {reason}" if reason else "")
        update = ["last_sync_at", "sync_status"]
        if feed_state is not None:
            channel.sync_state = dict(feed_state)
            update.append("sync_state")
        await channel.save(update_fields=update)
    return run_doc(row)


async def runs(channel_id: int, limit: int) -> list[RunDoc]:
    await channel_row(channel_id)
    return [
        run_doc(r) for r in await SyncRun.filter(channel_id=channel_id).order_by("-id").limit(limit)
    ]


async def last_run(channel_id: int) -> RunDoc | None:
    row = await SyncRun.filter(channel_id=channel_id).order_by("-id").first()
    return run_doc(row) if row else None


async def sync_schedule_inputs(
    channel_id: int | None = None,
) -> list[tuple[int, Plan, datetime | None, datetime | None]]:
    """Verified channels (or the one ``channel_id``): (id, plan, last run's start, when it
    was verified). Three queries whatever the number of channels."""
    channels = ChannelRow.filter(
        sell_token__not_isnull=True, connection_status=ConnectionStatus.VERIFIED.value
    )
    runs = SyncRun.exclude(status=SyncRunStatus.SKIPPED.value)
    if channel_id is not None:
        channels, runs = channels.filter(id=channel_id), runs.filter(channel_id=channel_id)
    rows = await channels.only("id", "plan", "verified_at")
    last_ids = (
        await runs.annotate(last=Max("id")).group_by("channel_id").values_list("last", flat=True)
    )
    started = dict(
        await SyncRun.filter(id__in=list(last_ids)).values_list("channel_id", "started_at")
    )
    return [(ch.id, Plan(ch.plan), started.get(ch.id), ch.verified_at) for ch in rows]
