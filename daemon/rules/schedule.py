"""When each channel syncs next (docs/sync-rules.md, rule 1), as pure functions.

A channel syncs at its plan's cadence (``vocabulary.PLANS``; ``[sync] cadence_seconds``
in tests). Channels are spread over the interval: each has a fixed *phase* inside the
cadence (from its id, by the golden ratio, so any number of channels stay evenly apart),
and its runs are due on the slots ``EPOCH + phase + n × cadence``. A channel that has not
synced yet is due at once (when it was verified); after a run it is due on the first slot
after that run's start, so a run that outlasts its interval is followed by the next at
once, never overlapped (the engine runs one sync per channel at a time).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from ..vocabulary import PLANS, Plan

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
GOLDEN = (math.sqrt(5) - 1) / 2


def cadence(plan: Plan | str, override_seconds: float = 0) -> timedelta:
    if override_seconds:
        return timedelta(seconds=override_seconds)
    return PLANS[Plan(plan)].cadence


def phase(channel_id: int, every: timedelta) -> timedelta:
    return timedelta(seconds=((channel_id * GOLDEN) % 1.0) * every.total_seconds())


def next_sync_at(
    channel_id: int, every: timedelta, last_started: datetime | None, verified_at: datetime | None
) -> datetime:
    """The business time the channel's next run is due."""
    if last_started is None:
        return verified_at or EPOCH
    offset = phase(channel_id, every)
    slots = math.floor((last_started - EPOCH - offset) / every) + 1
    return EPOCH + offset + slots * every


def rate_limit_retry_at(now: datetime, promised: datetime | None = None) -> datetime:
    """When a run Sell rate-limited at ``now`` expects Sell to take requests again.

    Sell sends no ``Retry-After``; its 36,000 requests an hour are refused "until the
    request reset time", taken to be the next whole hour. When a probe is refused before
    the time an earlier run gave (``promised``), the later of the two is kept."""
    at = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return max(at, promised) if promised is not None else at
