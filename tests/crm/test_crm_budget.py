"""RateBudget: never more than N starts in any 1-second window, fair, hour cap, deferral."""

from __future__ import annotations

from collections import deque

import trio

from kuloo_daemon.crm.budget import RateBudget, next_start


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
