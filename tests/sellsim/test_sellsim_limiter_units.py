"""sellsim's rate limiter with explicit times: sliding and fixed windows, whether refused
requests count, the hour cap and the exact window edges (issue 14 item 8).

Each test was first run against a planted bug (named in its docstring) and failed.
"""

from __future__ import annotations

from sellsim.limits import RateLimiter
from sellsim.options import make_options


def burst(limiter: RateLimiter, at: float, n: int, token: str = "t") -> list[bool]:
    return [limiter.allow(token, at) for _ in range(n)]


def test_refused_requests_count_by_default():
    """Planted bug: refused requests not recorded although ``rate_count_rejected`` is on
    (the default), so the burst at 0.5 s no longer holds the window shut at 1.2 s."""
    limiter = RateLimiter(make_options())
    assert burst(limiter, 0.0, 10) == [True] * 10
    assert burst(limiter, 0.5, 10) == [False] * 10
    # the first ten left the window at 1.0 s, the ten refused at 0.5 s are still in it
    assert burst(limiter, 1.2, 3) == [False] * 3
    # once the 0.5 s burst has left too, the token may go again, less the three just refused
    assert burst(limiter, 1.5, 10) == [True] * 7 + [False] * 3


def test_refused_requests_do_not_count_when_the_option_is_off():
    """Planted bug: the option ignored (``if allowed or True``)."""
    limiter = RateLimiter(make_options({"rate_count_rejected": False}))
    assert burst(limiter, 0.0, 10) == [True] * 10
    assert burst(limiter, 0.5, 10) == [False] * 10
    assert burst(limiter, 1.2, 10) == [True] * 10
    assert burst(limiter, 1.3, 1) == [False]


def test_sliding_window_edge_is_exactly_one_second():
    """Planted bugs: ``< now - 1.0`` (a start exactly 1 s old still counts) and an
    off-by-one limit (``> rate_per_second``)."""
    limiter = RateLimiter(make_options({"rate_count_rejected": False}))
    assert burst(limiter, 0.0, 11) == [True] * 10 + [False]
    assert burst(limiter, 0.999, 1) == [False]
    assert burst(limiter, 1.0, 10) == [True] * 10
    assert burst(limiter, 1.0, 1) == [False]


def test_sliding_window_spans_wall_clock_seconds():
    """Planted bug: the sliding mode falling back to wall-clock seconds."""
    limiter = RateLimiter(make_options())
    assert burst(limiter, 0.6, 10) == [True] * 10
    assert burst(limiter, 1.1, 1) == [False]  # a new wall-clock second, same 1-s interval


def test_fixed_window_resets_on_each_wall_clock_second():
    """Planted bugs: fixed mode behaving like sliding (the 0.9 s burst would still block
    at 1.0 s) or its counter never reset."""
    limiter = RateLimiter(make_options({"rate_window": "fixed"}))
    assert burst(limiter, 0.9, 11) == [True] * 10 + [False]
    assert burst(limiter, 0.99, 1) == [False]
    assert burst(limiter, 1.0, 10) == [True] * 10  # 0.1 s after a full burst
    assert burst(limiter, 1.5, 1) == [False]
    assert burst(limiter, 2.2, 10) == [True] * 10


def test_fixed_window_counts_refused_requests_only_within_their_second():
    """Planted bug: ``>`` instead of ``>=`` in the fixed count (11 a second)."""
    for count_rejected in (True, False):
        limiter = RateLimiter(
            make_options({"rate_window": "fixed", "rate_count_rejected": count_rejected})
        )
        assert burst(limiter, 5.0, 15) == [True] * 10 + [False] * 5
        assert burst(limiter, 6.0, 10) == [True] * 10


def test_fractional_and_lower_rates():
    """Planted bug: the rate truncated or rounded (2.5/s must allow 3 starts, not 2)."""
    limiter = RateLimiter(make_options({"rate_per_second": 2.5}))
    assert burst(limiter, 0.0, 4) == [True, True, True, False]
    limiter = RateLimiter(make_options({"rate_per_second": 2}))
    assert burst(limiter, 0.0, 3) == [True, True, False]


def test_hour_cap_and_its_edge():
    """Planted bugs: ``<=`` for the hour cap (one request too many) and ``< now - 3600``
    (a request exactly an hour old still counts)."""
    limiter = RateLimiter(make_options({"rate_per_hour": 3, "rate_count_rejected": False}))
    assert [limiter.allow("t", t) for t in (0.0, 10.0, 20.0, 30.0)] == [True, True, True, False]
    assert limiter.allow("t", 3599.9) is False
    assert limiter.allow("t", 3600.0) is True  # the one from 0.0 has just left the hour
    assert limiter.allow("t", 3600.5) is False


def test_refused_requests_use_the_hour_budget_by_default():
    """Planted bug: refused requests kept out of the hour log when they should count."""
    limiter = RateLimiter(make_options({"rate_per_hour": 3}))
    assert [limiter.allow("t", t) for t in (0.0, 10.0, 20.0, 30.0)] == [True, True, True, False]
    assert limiter.allow("t", 3600.0) is False  # 10, 20, 30 still within the hour
    assert limiter.allow("t", 3610.0) is False  # 20, 30 and the refused 3600


def test_tokens_have_separate_buckets_and_reset_clears_them():
    """Planted bugs: one bucket for every token; ``reset`` keeping the buckets."""
    limiter = RateLimiter(make_options())
    assert burst(limiter, 0.0, 10, "a") == [True] * 10
    assert burst(limiter, 0.0, 10, "b") == [True] * 10
    assert burst(limiter, 0.0, 1, "a") == [False]
    limiter.reset()
    assert burst(limiter, 0.0, 10, "a") == [True] * 10


def test_hourly_lockout_counts_clock_hours_with_no_second_cap():
    """``rate_window="hourly_lockout"``: the hour's budget in any burst, then every request
    refused until the clock hour (not a sliding hour) turns. Planted bugs: the per-second cap
    still applied; the count kept across the hour; the hour taken from ``now`` instead of the
    simulated clock."""
    limiter = RateLimiter(make_options({"rate_window": "hourly_lockout", "rate_per_hour": 25}))
    hour = 3600 * 1000
    assert [limiter.allow("t", 0.0, hour + 10) for _ in range(25)] == [True] * 25  # no 10/s cap
    assert [limiter.allow("t", 5.0, hour + 3599) for _ in range(3)] == [False] * 3
    assert limiter.allow("other", 5.0, hour + 3599)  # per token
    # monotonic time has moved on 2 h, the clock only to the last second of the hour: still shut
    assert not limiter.allow("t", 7200.0, hour + 3599)
    assert burst_at(limiter, 7200.0, hour + 3600, 26) == [True] * 25 + [False]


def burst_at(limiter: RateLimiter, at: float, clock: float, n: int) -> list[bool]:
    return [limiter.allow("t", at, clock) for _ in range(n)]
