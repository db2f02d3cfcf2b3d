"""The one clock of business time: ``now()`` and sleeping until a time.

Business time is what the product's promises are stated in (docs/architecture.md): plan
cadence, sequence delays, digest periods, the change times of a merge, audit and outbox
timestamps. Everything that reads it asks a ``Clock`` (handed around in ``Services``);
no other module calls ``datetime.now``. Timeouts, rate budgets, retries and backoff are
not business time: they stay on trio's monotonic clock.

- ``WallClock`` (production): the system's UTC time.
- ``ManualClock`` (tests, the demo; ``[clock] mode = "manual"``): stands still until
  ``set``/``advance`` moves it, never backwards. Each move is first handed to a
  ``persist`` callback (the daemon keeps the time in the store, so it survives restarts),
  then wakes everything sleeping until a time that has now come.

Times are aware datetimes in UTC; ``iso`` renders them the way the protocol shows them.
Imports trio and the standard library only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import trio

WALL = "wall"
MANUAL = "manual"
MODES = (WALL, MANUAL)

# A wall-clock sleep re-reads the system time at least this often, so a corrected system
# clock (NTP step, suspend) delays due work by at most this much.
WALL_RECHECK_SECONDS = 60.0


class ClockError(ValueError):
    """A move the clock refuses (backwards, not a time)."""


def parse_instant(text: str) -> datetime:
    """An ISO 8601 time with its offset (``2026-01-01T09:00:00Z``), as aware UTC."""
    try:
        value = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ClockError(f"{text!r} is not an ISO 8601 time such as 2026-01-01T09:00:00Z") from None
    if value.tzinfo is None:
        raise ClockError(f"{text!r} has no time zone; add Z for UTC, e.g. 2026-01-01T09:00:00Z")
    return value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    """The protocol's form of a time: ISO 8601 in UTC with a ``Z``."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def wall_now() -> datetime:
    """The system's time, for the few readings that must be real (an HTTP date's distance);
    business time comes from a ``Clock``."""
    return datetime.now(UTC)


class Clock:
    mode: str
    moves: int = 0  # how many times it was moved (only a manual clock moves)

    def now(self) -> datetime:
        raise NotImplementedError

    async def sleep_until(self, when: datetime) -> None:
        raise NotImplementedError


class WallClock(Clock):
    mode = WALL

    def now(self) -> datetime:
        return wall_now()

    async def sleep_until(self, when: datetime) -> None:
        while True:
            left = (when - self.now()).total_seconds()
            if left <= 0:
                return
            await trio.sleep(min(left, WALL_RECHECK_SECONDS))


async def _no_persist(_at: datetime) -> None:
    return None


class ManualClock(Clock):
    """A clock that moves only when told to, forwards only."""

    mode = MANUAL

    def __init__(
        self, at: datetime, persist: Callable[[datetime], Awaitable[None]] = _no_persist
    ) -> None:
        if at.tzinfo is None:
            raise ClockError("a manual clock needs an aware time")
        self._now = at.astimezone(UTC)
        self._persist = persist
        self._moved = trio.Event()
        self._lock = trio.Lock()
        self.moves = 0  # how many times it moved; the scheduler tells "since the move" by it

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, when: datetime) -> None:
        while self._now < when:
            await self._moved.wait()

    async def set(self, at: datetime) -> datetime:
        """Move to ``at`` (persisted first); refuses to go backwards."""
        if at.tzinfo is None:
            raise ClockError("the time needs a time zone")
        return await self._move(lambda _now: at.astimezone(UTC))

    async def advance(self, seconds: float) -> datetime:
        """Move forwards by ``seconds`` from wherever the clock is when the move happens."""
        if not seconds >= 0:  # also refuses NaN
            raise ClockError("the clock only moves forwards: 'seconds' must be 0 or more")
        try:
            step = timedelta(seconds=seconds)
        except OverflowError:
            raise ClockError(f"cannot advance by {seconds!r} seconds") from None
        return await self._move(lambda now: now + step)

    async def _move(self, target_of: Callable[[datetime], datetime]) -> datetime:
        async with self._lock:  # moves happen one at a time, each from the time the last left
            try:
                at = target_of(self._now)
            except OverflowError:
                raise ClockError("that time is beyond the calendar") from None
            if at < self._now:
                raise ClockError(
                    f"the clock cannot go backwards: it is {iso(self._now)}, asked for {iso(at)}"
                )
            await self._persist(at)
            self._now = at
            self.moves += 1
            moved, self._moved = self._moved, trio.Event()
            moved.set()
        return at
