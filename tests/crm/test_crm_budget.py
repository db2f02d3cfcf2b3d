"""RateBudget: never more than N starts in any 1-second window, fair, hour cap, deferral."""

from __future__ import annotations

from collections import deque

import httpx
import pytest
import trio

from kuloo_daemon.crm.budget import SECOND_WINDOW_MARGIN, RateBudget, next_start
from kuloo_daemon.crm.client import SellClient
from kuloo_daemon.secrets import Secret


def max_in_window(times: list[float], length: float = 1.0) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - length:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_next_start_pure():
    # spacing
    assert abs(next_start(10.0, 9.95, 0.1, []) - 10.05) < 1e-9
    # window full: the oldest of the last 3 starts + 1 s
    starts = deque([9.0, 9.5, 9.9])
    assert next_start(10.0, 9.9, 0.01, [(starts, 3, 1.0)]) == 10.0
    starts = deque([9.2, 9.5, 9.9])
    assert next_start(10.0, 9.9, 0.01, [(starts, 3, 1.0)]) == 10.2
    # deferral
    assert next_start(10.0, None, 0.1, [], not_before=12.5) == 12.5


async def test_five_tasks_never_exceed_rate(autojump_clock):
    budget = RateBudget(rate_per_second=9.0)
    times: list[float] = []

    async def worker():
        for _ in range(40):
            await budget.acquire()
            times.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(worker)
    assert len(times) == 200
    assert max_in_window(times, 1.0) <= 9
    gaps = [b - a for a, b in zip(sorted(times), sorted(times)[1:], strict=False)]
    assert min(gaps) >= 1 / 9 - 1e-9
    # and it still uses most of the budget (not needlessly slow)
    span = max(times) - min(times)
    assert 199 / span > 8.0


async def test_fractional_rate_and_hour_cap(autojump_clock):
    budget = RateBudget(rate_per_second=50.0, per_hour=30)
    start = trio.current_time()
    times = []
    for _ in range(32):
        await budget.acquire()
        times.append(trio.current_time() - start)
    assert times[29] < 5
    assert times[30] >= 3600  # the 31st waits for the first to leave the hour


async def test_fairness_fifo(autojump_clock):
    budget = RateBudget(rate_per_second=2.0)
    order: list[int] = []

    async def take(i: int):
        await budget.acquire()
        order.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(6):
            nursery.start_soon(take, i)
            await trio.sleep(0.001)
    assert order == list(range(6))


async def test_defer_pushes_every_task_back(autojump_clock):
    budget = RateBudget(rate_per_second=9.0)
    await budget.acquire()
    budget.defer(5.0)
    t0 = trio.current_time()
    await budget.acquire()
    assert trio.current_time() - t0 >= 5.0 - 1e-9


async def test_cancelled_waiter_takes_no_slot(autojump_clock):
    budget = RateBudget(rate_per_second=1.0)
    await budget.acquire()
    with trio.move_on_after(0.2):
        await budget.acquire()
    assert budget.granted == 1
    await budget.acquire()
    assert budget.granted == 2


# ----------------------------------------------------------------------------- at the edges
# (formerly test_crm_budget_bounds.py)
# RateBudget at its edges: deferral never shortens, fractional rates, a 429 holds every task.
#
# Each test here was first run against a planted bug (named in its docstring) and failed.

TOKEN = "b2" * 32


async def _start_times(budget: RateBudget, n: int) -> list[float]:
    t0 = trio.current_time()
    out = []
    for _ in range(n):
        await budget.acquire()
        out.append(round(trio.current_time() - t0, 9))
    return out


async def test_a_shorter_later_defer_never_shortens_the_wait(autojump_clock):
    """Planted bug: ``_not_before = now + seconds`` (no max) -> the 1 s defer wins."""
    budget = RateBudget(rate_per_second=9.0)
    await budget.acquire()
    t0 = trio.current_time()
    budget.defer(30.0)
    budget.defer(1.0)
    await budget.acquire()
    assert trio.current_time() - t0 == pytest.approx(30.0)


async def test_a_longer_later_defer_extends_the_wait(autojump_clock):
    """Planted bug: ``min`` instead of ``max`` keeps the first, shorter defer."""
    budget = RateBudget(rate_per_second=9.0)
    t0 = trio.current_time()
    budget.defer(1.0)
    budget.defer(30.0)
    await budget.acquire()
    assert trio.current_time() - t0 == pytest.approx(30.0)


# rate -> the start times (seconds after the first) of the first six requests. The
# per-second cap is floor(rate) starts in any (1 + margin)-second window; the spacing
# is 1/rate.
FRACTIONAL = {
    2.5: [0.0, 0.4, 1.05, 1.45, 2.1, 2.5],
    1.5: [0.0, 1.05, 2.1, 3.15, 4.2, 5.25],
    0.5: [0.0, 2.0, 4.0, 6.0, 8.0, 10.0],
    3.7: [0.0, 1 / 3.7, 2 / 3.7, 1.05, 1.05 + 1 / 3.7, 1.05 + 2 / 3.7],
}


@pytest.mark.parametrize("rate", sorted(FRACTIONAL))
async def test_fractional_rates_round_the_per_second_cap_down(autojump_clock, rate):
    """Planted bugs: ``math.ceil`` (2.5/s lets 3 start within one second), ``max(2, ...)``
    (1.5/s lets 2 start within one second), a margin of 0 or a 1-second-only window."""
    budget = RateBudget(rate_per_second=rate, per_hour=0)
    times = await _start_times(budget, 6)
    assert times == pytest.approx(FRACTIONAL[rate])
    cap = max(1, int(rate))
    for i in range(len(times) - cap):
        assert times[i + cap] - times[i] >= 1.0 + SECOND_WINDOW_MARGIN - 1e-9


@pytest.mark.parametrize("rate", [0, 0.0, -1])
def test_a_rate_that_is_not_positive_is_refused(rate):
    """Planted bug: ``if rate_per_second < 0`` lets 0 through (then 1/0 fails elsewhere)."""
    with pytest.raises(ValueError) as err:
        RateBudget(rate_per_second=rate)
    assert str(err.value) == "rate_per_second must be positive"


def test_repr_and_defaults():
    """Planted bugs: another default rate or hour cap (Sell allows 10/s and 36,000/h)."""
    budget = RateBudget()
    assert repr(budget) == "RateBudget(rate_per_second=9.0, per_hour=36000)"
    assert budget.interval == pytest.approx(1 / 9)
    assert repr(RateBudget(2.5, 0)) == "RateBudget(rate_per_second=2.5, per_hour=0)"


async def test_per_hour_zero_means_no_hour_cap(autojump_clock):
    """Planted bug: an hour window of limit 0 that is not skipped (IndexError or a wait)."""
    budget = RateBudget(rate_per_second=10.0, per_hour=0)
    times = await _start_times(budget, 25)
    assert times[-1] < 3.0


async def test_the_hour_cap_counts_exactly_per_hour_starts(autojump_clock):
    """Planted bug: an off-by-one in the hour limit (``per_hour + 1`` or ``- 1``)."""
    budget = RateBudget(rate_per_second=10.0, per_hour=5)
    times = await _start_times(budget, 7)
    assert times[4] < 1.0  # the 5th still fits the hour
    assert times[5] == pytest.approx(3600.0)  # the 6th waits for the 1st to leave it
    assert times[6] == pytest.approx(times[1] + 3600.0)


async def test_an_hour_cap_of_one(autojump_clock):
    """Planted bug: ``per_hour > 1`` (a cap of one request an hour ignored)."""
    budget = RateBudget(rate_per_second=10.0, per_hour=1)
    assert await _start_times(budget, 2) == pytest.approx([0.0, 3600.0])


async def test_a_sub_second_defer_is_honoured(autojump_clock):
    """Planted bug: ``if seconds > 1`` (a 0.5 s back-off from the retry policy ignored)."""
    budget = RateBudget(rate_per_second=100.0)
    await budget.acquire()
    t0 = trio.current_time()
    budget.defer(0.5)
    await budget.acquire()
    assert trio.current_time() - t0 == pytest.approx(0.5)


def test_next_start_edges():
    """Planted bugs: ``limit < 0`` (a zero limit indexes an empty log), ``len > limit``
    (a full window ignored), spacing measured from ``now`` instead of the last start."""
    empty: deque[float] = deque()
    assert next_start(5.0, None, 0.5, [(empty, 0, 1.0)]) == 5.0
    assert next_start(5.0, None, 0.5, [([4.5], 0, 1.0)]) == 5.0
    # exactly `limit` starts in the window: the oldest one decides
    assert next_start(5.0, 4.9, 0.01, [([4.2, 4.9], 2, 1.0)]) == pytest.approx(5.2)
    # fewer than `limit`: only the spacing applies
    assert next_start(5.0, 4.9, 0.01, [([4.9], 2, 1.0)]) == pytest.approx(5.0)
    # spacing from the last start, not from now
    assert next_start(5.0, 4.8, 0.5, []) == pytest.approx(5.3)
    # never earlier than now, even for a start long ago or a past deferral
    assert next_start(5.0, 1.0, 0.5, [], not_before=2.0) == 5.0
    # a window without a limit is skipped, not the end of the list
    assert next_start(5.0, None, 0.01, [([], 0, 1.0), ([4.2, 4.9], 2, 1.0)]) == pytest.approx(5.2)
    # the latest of all constraints wins
    assert next_start(5.0, 4.9, 0.5, [([4.0, 4.9], 2, 1.0)], not_before=5.2) == pytest.approx(5.4)


def _client(handler, budget: RateBudget) -> SellClient:
    return SellClient(
        "https://sell.test",
        Secret(TOKEN),
        transport=httpx.MockTransport(handler),
        budget=budget,
        backoff_base=0.01,
        backoff_cap=0.05,
    )


async def test_a_429_makes_a_second_task_on_the_same_token_wait(autojump_clock):
    """Planted bug: deleting ``self.budget.defer(delay)`` after a 429.

    The first task's own sleep makes *it* wait whatever the budget does; only a second
    task that never saw the 429 shows that the whole token backed off.
    """
    seen: list[tuple[str, float]] = []
    first = True

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal first
        seen.append((request.url.path, trio.current_time()))
        if request.url.path == "/v2/users/self" and first:
            first = False
            return httpx.Response(429, headers={"Retry-After": "4"})
        return httpx.Response(200, json={"data": {"id": 1}, "meta": {"type": "user"}})

    budget = RateBudget(1000.0)
    async with _client(handler, budget) as sell:
        t0 = trio.current_time()

        async def second_task() -> None:
            await trio.sleep(1.0)  # starts well after the 429 was answered
            await sell.get("/v2/accounts/self")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sell.users_self)
            nursery.start_soon(second_task)
    other = [t - t0 for path, t in seen if path == "/v2/accounts/self"]
    retried = [t - t0 for path, t in seen if path == "/v2/users/self"]
    assert retried[0] == pytest.approx(0.0) and retried[1] >= 4.0
    assert other and other[0] >= 4.0, seen
