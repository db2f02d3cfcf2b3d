"""Retention: old sync runs, audit entries, settled outbox messages, bounce events and the
bounce mailbox's message digests are deleted in small batches by id range, so no statement
holds the store for long (docs/operations.md).

Rows of these tables are written in time order, so their ids and their times grow
together: ``boundary`` finds, with a few primary-key lookups (a binary search), the last
id old enough to go; ``prune_batch`` then deletes one id range at a time, still checking
each row's time (a row out of order is kept, never deleted early).

What is never deleted here: a run still ``running`` and each channel's newest run (the
scheduler's cadence counts from it); outbox messages still waiting or uncertain (only
``sent``, ``failed`` and ``cancelled`` go). A sequence's progress rows are not outbox
rows: what was sent is never sent again, however old its message.

``database_size`` is what ``status`` shows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from tortoise import connections
from tortoise.expressions import Q
from tortoise.functions import Max
from tortoise.models import Model

from ..vocabulary import OutboxState, SyncRunStatus
from .models import AuditEntry, BounceEvent, InboundMessage, OutboxMessage, SyncRun

BATCH = 1000


@dataclass(frozen=True)
class Kind:
    """One table under retention: its rows older than a cutoff (by ``time``) may go."""

    name: str  # the pruned-rows metric's table label
    model: type[Model]
    time: str
    days: str = ""  # the [retention] key's stem (``<days>_days``); "" = ``name``

    @property
    def days_key(self) -> str:
        return f"retention.{self.days or self.name}_days"

    def keep(self) -> Q:
        if self.model is OutboxMessage:
            return ~Q(
                state__in=[
                    OutboxState.SENT.value,
                    OutboxState.FAILED.value,
                    OutboxState.CANCELLED.value,
                ]
            )
        if self.model is SyncRun:
            return Q(status=SyncRunStatus.RUNNING.value)
        return Q(pk__in=[])  # audit entries: none kept on their own account


KINDS = (
    Kind("sync_runs", SyncRun, "started_at"),
    Kind("audit", AuditEntry, "at"),
    Kind("outbox", OutboxMessage, "created_at"),
    # Bounces heard (the deliverability figures read 30 days, the soft-bounce rule less) and
    # the digests of the bounce mailbox's messages (process-once needs them for minutes):
    # as long as the audit trail that records their effects.
    Kind("bounce_events", BounceEvent, "at", days="audit"),
    Kind("inbound_messages", InboundMessage, "at", days="audit"),
)


async def _time_at_or_after(kind: Kind, id_: int) -> tuple[int, datetime] | None:
    row = await kind.model.filter(id__gte=id_).order_by("id").first().values_list("id", kind.time)
    return None if row is None else (row[0], row[1])


async def boundary(kind: Kind, cutoff: datetime) -> tuple[int, int] | None:
    """The id range of the rows older than ``cutoff`` (rows in time order): (first, last), or
    None."""
    first = await _time_at_or_after(kind, 0)
    if first is None or first[1] >= cutoff:
        return None
    # values_list(flat=True) is typed as a tuple by tortoise; it is the bare value here.
    hi = cast(int, await kind.model.all().order_by("-id").first().values_list("id", flat=True))
    lo = first[0]
    while lo < hi:  # invariant: the row at or after lo is old; the answer lies in [lo, hi]
        mid = (lo + hi + 1) // 2
        found = await _time_at_or_after(kind, mid)
        if found is not None and found[1] < cutoff:
            lo = found[0]
        else:
            hi = mid - 1
    return first[0], lo


async def prune_batch(
    kind: Kind, cutoff: datetime, start: int, last: int
) -> tuple[int, int | None]:
    """Delete the old rows of ids ``start``..``start + BATCH - 1`` (at most ``last``);
    returns (deleted, the next start or None when done)."""
    end = min(start + BATCH - 1, last)
    older: dict[str, Any] = {f"{kind.time}__lt": cutoff}
    query = kind.model.filter(Q(id__gte=start, id__lte=end) & Q(**older) & ~kind.keep())
    if kind.model is SyncRun:
        rows = await query.values_list("id", "channel_id")
        newest = set(
            await SyncRun.filter(channel_id__in={c for _, c in rows})
            .group_by("channel_id")
            .annotate(m=Max("id"))
            .values_list("m", flat=True)
        )
        ids = [i for i, _ in rows if i not in newest]
    else:
        ids = list(await query.values_list("id", flat=True))
    deleted = await kind.model.filter(id__in=ids).delete() if ids else 0
    return deleted, (end + 1 if end < last else None)


async def database_size(path: str | None) -> int | None:
    """Bytes the database takes: the SQLite file (with its WAL), or PostgreSQL's figure."""
    if path is not None:
        return sum(p.stat().st_size for p in (Path(path), Path(path + "-wal")) if p.exists())
    conn = connections.get("default")
    _, rows = await conn.execute_query("SELECT pg_database_size(current_database())")
    return int(list(rows[0].values())[0]) if rows else None


def sqlite_path(location: object) -> str | None:
    return os.fspath(location) if isinstance(location, (str, os.PathLike)) else None
