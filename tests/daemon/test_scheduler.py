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
    assert next_wakeup([Job("late", lambda now: 3.0, None)], now=10.0, tick=5.0, not_before={"late": 14.0}) == 14.0


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

    sched.jobs = [Job("work", lambda now: state["next"], work), Job("broken", lambda now: 0.0, broken)]
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
