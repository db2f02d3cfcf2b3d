"""Rate limiting per token and the request counters the control API reports.

Owns the limiter (36,000 per hour and 10 per second per token by default; sliding or fixed
windows; or ``hourly_lockout``: the hour's budget per clock hour of the simulated clock, no
per-second cap, every request refused once it is spent until the hour turns) and the
counters: requests by method and path, peak requests per second per token, 429s served.
Time comes in as arguments so the decisions are testable without sleeping.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from .options import Options


@dataclass
class _Bucket:
    second: deque[float] = field(default_factory=deque)
    hour: deque[float] = field(default_factory=deque)
    fixed_second: int = -1
    fixed_count: int = 0
    clock_hour: int = -1  # hourly_lockout: the clock hour counted, and its count
    hour_count: int = 0


class RateLimiter:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.buckets: dict[str, _Bucket] = {}

    def reset(self) -> None:
        self.buckets.clear()

    def allow(self, token: str, now: float, clock: float | None = None) -> bool:
        """Whether a request with ``token`` at monotonic-ish time ``now`` is within budget.

        ``clock``: the simulated clock's time (epoch seconds), which ``hourly_lockout`` counts
        its hours on (``now`` when not given)."""
        o = self.options
        b = self.buckets.get(token)
        if b is None:
            b = self.buckets[token] = _Bucket()
        if o.rate_window == "hourly_lockout":
            hour = int((now if clock is None else clock) // 3600)
            if hour != b.clock_hour:
                b.clock_hour, b.hour_count = hour, 0
            allowed = b.hour_count < o.rate_per_hour
            if allowed or o.rate_count_rejected:
                b.hour_count += 1
            return allowed
        while b.hour and b.hour[0] <= now - 3600:
            b.hour.popleft()
        if o.rate_window == "fixed":
            sec = int(now)
            if sec != b.fixed_second:
                b.fixed_second, b.fixed_count = sec, 0
            over_second = b.fixed_count >= o.rate_per_second
        else:
            while b.second and b.second[0] <= now - 1.0:
                b.second.popleft()
            over_second = len(b.second) >= o.rate_per_second
        allowed = not over_second and len(b.hour) < o.rate_per_hour
        if allowed or o.rate_count_rejected:
            b.hour.append(now)
            b.second.append(now)
            b.fixed_count += 1
        return allowed


@dataclass
class _TokenStats:
    requests: int = 0
    rate_limited: int = 0
    peak_rps: int = 0  # most requests within one wall-clock second
    peak_rps_sliding: int = 0  # most requests within any 1-second interval
    _sec: int = -1
    _count: int = 0
    _window: deque[float] = field(default_factory=deque)

    def hit(self, now: float) -> None:
        self.requests += 1
        sec = int(now)
        if sec != self._sec:
            self._sec, self._count = sec, 0
        self._count += 1
        self.peak_rps = max(self.peak_rps, self._count)
        w = self._window
        while w and w[0] <= now - 1.0:
            w.popleft()
        w.append(now)
        self.peak_rps_sliding = max(self.peak_rps_sliding, len(w))


class Counters:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total = 0
        self.requests: Counter[str] = Counter()
        self.routes: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.tokens: dict[str, _TokenStats] = {}
        self.rate_limited = 0  # 429s served by the limiter
        self.faults: Counter[str] = Counter()  # faults served, by kind

    def request(self, method: str, path: str) -> None:
        self.total += 1
        self.requests[f"{method} {path}"] += 1

    def route(self, method: str, template: str) -> None:
        self.routes[f"{method} {template}"] += 1

    def token_hit(self, label: str, now: float) -> None:
        stats = self.tokens.get(label)
        if stats is None:
            stats = self.tokens[label] = _TokenStats()
        stats.hit(now)

    def limited(self, label: str) -> None:
        self.rate_limited += 1
        self.tokens[label].rate_limited += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "requests": dict(self.requests),
            "routes": dict(self.routes),
            "statuses": {str(k): n for k, n in self.statuses.items()},
            "tokens": {
                label: {
                    "requests": s.requests,
                    "peak_rps": s.peak_rps,
                    "peak_rps_sliding": s.peak_rps_sliding,
                    "rate_limited": s.rate_limited,
                }
                for label, s in self.tokens.items()
            },
            "rate_limited": self.rate_limited,
            "faults": dict(self.faults),
            "served_429": self.rate_limited + self.faults.get("429", 0),
        }
