"""The scheduler: pure wake-up decision, and the loop under trio's MockClock."""

import pytest
import trio
import trio.testing

from kuloo_daemon.scheduler import Job, Scheduler, next_wakeup


def test_next_wakeup_is_the_earliest_due_job_or_one_tick():
    jobs = [Job("a", lambda now: 50.0, None), Job("b", lambda now: 12.0, None)]
    assert next_wakeup(jobs, now=10.0, tick=5.0) == 12.0
    assert next_wakeup(jobs, now=10.0, tick=1.0) == 11.0
    assert next_wakeup([Job("late", lambda now: 3.0, None)], now=10.0, tick=5.0) == 10.0
    assert next_wakeup([], now=0.0, tick=5.0) == 5.0
    # a job that stays due after running waits until its not-before time
    assert (
        next_wakeup(
            [Job("late", lambda now: 3.0, None)], now=10.0, tick=5.0, not_before={"late": 14.0}
        )
        == 14.0
    )


@pytest.fixture
def clock():
    return trio.testing.MockClock(autojump_threshold=0)


async def test_jobs_run_when_due_and_a_failing_job_does_not_stop_the_loop(clock):
    runs = []
    sched = Scheduler(tick_seconds=60)
    state = {"next": 100.0}

    async def work():
        runs.append(trio.current_time())
        state["next"] = trio.current_time() + 100

    async def broken():
        raise RuntimeError("boom")

    sched.jobs = [
        Job("work", lambda now: state["next"], work),
        Job("broken", lambda now: 0.0, broken),
    ]
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        await trio.sleep(350)
        assert sched.healthy(trio.current_time(), allowed_lag=60)
        sched.stop()
    assert runs == [100.0, 200.0, 300.0]
    # the always-due failing job retried once per tick, not in a busy loop
    assert 5 <= sched.ticks <= 12


async def test_health_goes_stale_when_ticks_stop(clock):
    sched = Scheduler(tick_seconds=1)
    assert not sched.healthy(trio.current_time(), 10)
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        await trio.sleep(5)
        assert sched.healthy(trio.current_time(), 3)
        sched.stop()
    await trio.sleep(20)
    assert not sched.healthy(trio.current_time(), 3)


async def test_a_slow_job_does_not_hold_up_the_ticks(clock):
    sched = Scheduler(tick_seconds=1)
    starts = []

    async def slow():
        starts.append(trio.current_time())
        await trio.sleep(30)

    sched.jobs = [Job("slow", lambda now: 0.0, slow)]
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        await trio.sleep(10)
        assert sched.healthy(trio.current_time(), allowed_lag=1.5)  # ticking while the job runs
        assert starts == [0.0]  # and never started twice
        await trio.sleep(30)
        assert len(starts) == 2
        sched.stop()


# ----------------------------------------------------------------------------- business time

from datetime import UTC, datetime, timedelta  # noqa: E402

from kuloo_daemon.clock import ManualClock  # noqa: E402
from kuloo_daemon.scheduler import ClockJob, next_clock_due  # noqa: E402

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_next_clock_due_is_the_earliest_planned_time():
    jobs = [
        ClockJob("a", lambda now: now + timedelta(hours=2), None),
        ClockJob("b", lambda now: None, None),
        Job("mono", lambda now: 0.0, None),
    ]
    assert next_clock_due(jobs, START) == START + timedelta(hours=2)
    assert next_clock_due([], START) is None


def daily_job(clock, runs):
    """Due every day at 10:00 of business time, like a digest."""
    state = {"next": START + timedelta(hours=1)}

    async def run():
        runs.append(clock.now())
        state["next"] += timedelta(days=1)

    return ClockJob("daily", lambda now: state["next"], run)


async def test_a_clock_job_runs_once_as_soon_as_the_manual_clock_passes_its_time(clock):
    business = ManualClock(START)
    sched = Scheduler(tick_seconds=5, clock=business)
    runs = []
    sched.jobs = [daily_job(business, runs)]
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        await trio.sleep(3600)  # an hour of real time: business time stands still
        assert runs == []
        await business.advance(59 * 60)
        assert (await sched.settle(30)).ran == []
        assert runs == []
        started = trio.current_time()
        await business.advance(60)
        settled = await sched.settle(30)
        assert settled.ran == ["daily"] and settled.pending == [] and not settled.timed_out
        assert runs == [START + timedelta(hours=1)]
        assert trio.current_time() == started  # no tick waited for: the move woke the loop
        await business.advance(3 * 3600)  # nothing more due today
        assert (await sched.settle(30)).ran == []
        await business.set(START + timedelta(days=3))  # two days late: it catches up, one run each
        await sched.settle(30)
        await trio.sleep(60)
        await sched.settle(30)
        assert len(runs) == 3
        sched.stop()


async def test_settle_gives_up_and_says_what_is_still_running(clock):
    business = ManualClock(START)
    sched = Scheduler(tick_seconds=5, clock=business)

    async def stuck():
        await trio.sleep_forever()

    sched.jobs = [ClockJob("stuck", lambda now: START + timedelta(minutes=1), stuck)]
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        await business.advance(120)
        settled = await sched.settle(10)
        assert settled.timed_out and settled.pending == ["stuck"] and settled.ran == []
        nursery.cancel_scope.cancel()


async def test_a_job_whose_due_time_fails_does_not_stop_the_others(clock):
    sched = Scheduler(tick_seconds=1)
    runs = []
    calls = {"n": 0}

    def flaky_due(now):
        calls["n"] += 1
        if calls["n"] <= 3:
            raise LookupError("cache not filled yet")
        return float("inf")

    async def work():
        runs.append(trio.current_time())

    state = {"next": 5.0}

    async def tick_work():
        await work()
        state["next"] += 5

    sched.jobs = [
        Job("flaky", flaky_due, work),
        Job("steady", lambda now: state["next"], tick_work),
    ]
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        await trio.sleep(12)
        assert sched.healthy(trio.current_time(), allowed_lag=1.5)
        sched.stop()
    assert runs == [5.0, 10.0] and calls["n"] > 3
