"""The request budget of one Sell token, shared by every task using that token.

Owns the rule "never more than N requests in any 1-second window, never more than M in
any hour": requests are spaced at least ``1/rate`` apart, and a sliding log of recent
start times caps any window (a slightly widened one, so network jitter between our send
time and the server's arrival time cannot push two windows' worth into one server second).
A 429 pushes the whole budget back (``defer``), so every task on the token backs off.

The decision is a pure function (``next_start``) over plain numbers; ``RateBudget`` is the
thin trio shell around it (a fair ``trio.Lock`` and ``trio.sleep_until``), so it works with
``trio.testing.MockClock``. Imports only trio and the standard library.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import trio

# Widen the 1-second window a little: the server counts arrivals, we count departures.
SECOND_WINDOW_MARGIN = 0.05


def next_start(
    now: float,
    last: float | None,
    interval: float,
    windows: Sequence[tuple[deque[float] | Sequence[float], int, float]],
    not_before: float = -math.inf,
) -> float:
    """The earliest time >= ``now`` at which one more request may start.

    ``windows`` is a list of ``(recent_starts_oldest_first, limit, length)``: at most
    ``limit`` starts may fall inside any window of ``length`` seconds.
    """
    t = max(now, not_before)
    if last is not None:
        t = max(t, last + interval)
    for starts, limit, length in windows:
        if limit <= 0:
            continue
        if len(starts) >= limit:
            # The (limit)-th most recent start must be at least `length` ago.
            t = max(t, starts[len(starts) - limit] + length)
    return t


class RateBudget:
    """A fair, trio-friendly limiter: ``await budget.acquire()`` before each request."""

    def __init__(self, rate_per_second: float = 9.0, per_hour: int = 36_000) -> None:
        if rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive")
        self.rate_per_second = float(rate_per_second)
        self.per_hour = int(per_hour)
        self.interval = 1.0 / self.rate_per_second
        per_second = max(1, math.floor(self.rate_per_second))
        self._windows: list[tuple[deque[float], int, float]] = [
            (deque(maxlen=per_second), per_second, 1.0 + SECOND_WINDOW_MARGIN),
        ]
        if self.per_hour > 0:
            self._windows.append((deque(maxlen=self.per_hour), self.per_hour, 3600.0))
        self._last: float | None = None
        self._not_before = -math.inf
        self._lock = trio.Lock()
        self.granted = 0

    def __repr__(self) -> str:
        return f"RateBudget(rate_per_second={self.rate_per_second}, per_hour={self.per_hour})"

    async def acquire(self) -> None:
        """Wait for a slot and take it. Fair: tasks are served in arrival order.

        Cancelling a waiting task takes no slot.
        """
        async with self._lock:
            while True:
                now = trio.current_time()
                at = next_start(now, self._last, self.interval, self._windows, self._not_before)
                if at <= now:
                    break
                await trio.sleep_until(at)
            self._last = now
            for starts, _limit, _length in self._windows:
                starts.append(now)
            self.granted += 1

    def defer(self, seconds: float) -> None:
        """Start nothing on this token for ``seconds`` (called on a 429)."""
        if seconds > 0:
            self._not_before = max(self._not_before, trio.current_time() + seconds)
