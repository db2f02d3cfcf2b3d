"""Retention: once a day (business time), old sync runs, audit entries, settled outbox
messages, bounce events and bounce-mailbox digests are deleted, a small batch per store
crossing with a pause between, so control calls and the sync keep answering while a large
backlog goes (docs/operations.md).

``[retention] sync_runs_days`` (90), ``audit_days`` (365; bounce events and digests too) and
``outbox_days`` (90, at least 30: messages are rendered at send, so the outbox holds no
bodies to drop earlier).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
import trio

from ..scheduler import ClockJob
from ..services import Services
from ..store import retention as store

log = structlog.get_logger("kuloo.operations")

PERIOD = timedelta(days=1)
PAUSE_SECONDS = 0.005  # between batches: other store work gets its turn


@dataclass
class Retention:
    services: Services
    last_run: datetime | None = None
    deleted: dict[str, int] = field(default_factory=dict)  # the last run's counts

    def jobs(self) -> list[ClockJob]:
        def due(now: datetime) -> datetime:
            return now if self.last_run is None else self.last_run + PERIOD

        return [ClockJob("retention", due, self.run)]

    async def run(self) -> None:
        now = self.services.clock.now()
        self.last_run = now
        counts = {}
        for kind in store.KINDS:
            days = self.services.config[kind.days_key]
            counts[kind.name] = await self.prune(kind, now - timedelta(days=days))
            self.services.metrics.pruned_rows(kind.name, counts[kind.name])
        self.deleted = counts
        if any(counts.values()):
            log.info("pruned old rows", **counts)

    async def prune(self, kind: store.Kind, cutoff: datetime) -> int:
        span = await self.services.store.run(store.boundary, kind, cutoff)
        if span is None:
            return 0
        start: int | None
        total, (start, last) = 0, span
        while start is not None:
            deleted, start = await self.services.store.run(
                store.prune_batch, kind, cutoff, start, last
            )
            total += deleted
            await trio.sleep(PAUSE_SECONDS)
        return total
