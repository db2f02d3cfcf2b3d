"""The repairs an outage of the store leaves for its return (``health.Health.on_recovery``).

A sync run whose own store failure interrupted it could not be closed while the store was
gone: as soon as the store answers again it is closed (``failed``, reason
``store_unavailable``) — before any other unit of work, so a new run of the channel never
starts beside it. PostgreSQL: its lease is released too (or was already taken over, and the
new holder closed the run as a dead daemon's).
"""

from __future__ import annotations

from datetime import datetime

from ..vocabulary import SyncRunStatus
from .models import SyncRun

STORE_UNAVAILABLE = "store_unavailable"


async def close_interrupted_run(run_id: int, now: datetime, error: str) -> bool:
    """Close the run if it is still ``running``; True when it was."""
    changed = await SyncRun.filter(id=run_id, status=SyncRunStatus.RUNNING.value).update(
        status=SyncRunStatus.FAILED.value,
        reason=STORE_UNAVAILABLE,
        finished_at=now,
        error=error[:500],
    )
    return bool(changed)


async def checkpoint() -> None:
    """SQLite: move the WAL into the database file and truncate it (``wal_checkpoint(TRUNCATE)``),
    so a WAL that grew while writes failed on a full disk does not stay large once space returns."""
    from tortoise import connections

    await connections.get("default").execute_query("PRAGMA wal_checkpoint(TRUNCATE)")
