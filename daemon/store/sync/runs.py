"""Sync run history: the use cases the sync engine and ``sync.*`` methods will run.

So far: the start-up repair of DECISIONS.md "States" — a run left ``running`` by a crash
is ``failed`` with reason ``interrupted`` (the rule is ``vocabulary.sync_run_after_crash``;
this module only persists it).
"""

from __future__ import annotations

from datetime import datetime

from tortoise.transactions import in_transaction

from ...vocabulary import SyncRunStatus, sync_run_after_crash
from ..models import SyncRun


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
