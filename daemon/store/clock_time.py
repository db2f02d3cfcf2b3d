"""The manual clock's time, kept so that it survives restarts (``[clock] mode = "manual"``).

Use cases for ``Store.run``; the clock itself lives in ``kuloo_daemon.clock``.
"""

from __future__ import annotations

from datetime import datetime

from .models import ClockState

ROW = 1


async def load_or_start(start: datetime) -> datetime:
    """The stored time; a fresh store starts at ``start`` (and keeps it)."""
    row, _created = await ClockState.get_or_create(id=ROW, defaults={"now": start})
    return row.now


async def save(at: datetime) -> None:
    await ClockState.update_or_create(id=ROW, defaults={"now": at})
