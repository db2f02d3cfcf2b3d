"""Edge decisions of the links service, pure: who the client is, and whether it may go on.

``client_address``: the peer's address, or — only when the peer is a trusted proxy —
the nearest address in ``X-Forwarded-For`` that is not itself a trusted proxy (reading
right to left: everything left of an untrusted hop may be forged by the client).

``RateLimiter``: one token bucket per client address (``rate_per_minute``, ``burst``),
in memory, bounded in size; time is passed in (monotonic seconds), so it is testable
without sleeping.

``ChangeLimiter``: how many state changes one link (its purpose, channel and KulooId)
may make per hour; one-click POSTs are exempt from the per-address bucket, not from this.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(entries: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[v6]:port"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "v4:port"
        text = text.split(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, trusted: tuple[Network, ...]
) -> bool:
    return ip is not None and any(ip in net for net in trusted)


def client_address(peer: str, forwarded_for: list[str], trusted: tuple[Network, ...]) -> str:
    """The address the rate limit counts: the peer unless a trusted proxy names another."""
    peer_ip = _ip(peer)
    if not _trusted(peer_ip, trusted):
        return str(peer_ip) if peer_ip is not None else peer
    hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            break  # garbage: stop trusting the chain here, count the last good hop
        if not _trusted(ip, trusted):
            return str(ip)
        peer_ip = ip
    return str(peer_ip)


class RateLimiter:
    """Token buckets per key; ``allow(key, now)`` takes one token if there is one."""

    def __init__(self, rate_per_minute: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def allow(self, key: str, now: float) -> bool:
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)  # most recently used last
        while len(self._buckets) > self.max_keys:
            # Forgetting the least recent key hands it a full bucket: fine, it was idle longest.
            self._buckets.popitem(last=False)
        return allowed


class ChangeLimiter:
    """At most ``per_hour`` changes per key in any hour (a sliding window), in memory.

    ``take(key, now)`` reserves a slot before a change is written (no await between the
    check and the reservation, so concurrent requests cannot overshoot); ``give_back``
    returns it when the write changed nothing. Bounded in keys like ``RateLimiter``.
    """

    WINDOW = 3600.0

    def __init__(self, per_hour: int, max_keys: int = 100_000) -> None:
        self.per_hour = per_hour
        self.max_keys = max_keys
        self._seen: OrderedDict[object, list[float]] = OrderedDict()

    def take(self, key: object, now: float) -> bool:
        times = [t for t in self._seen.pop(key, []) if now - t < self.WINDOW]
        allowed = len(times) < self.per_hour
        if allowed:
            times.append(now)
        if times:
            self._seen[key] = times  # most recently used last
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return allowed

    def give_back(self, key: object, at: float) -> None:
        times = self._seen.get(key)
        if times and at in times:
            times.remove(at)
