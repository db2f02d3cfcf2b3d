"""The scheduler: a pure "what is due next" decision plus a thin trio loop.

Jobs register a ``due(now) -> float`` (the next monotonic time they want to run) and a
``run()`` coroutine. Each tick starts what is due (never two runs of one job at once) in
the scheduler's nursery, so a slow job does not hold up the ticks, and records its own
progress; the systemd watchdog is fed only while ticks keep coming
(``app.watchdog``), so a wedged scheduler gets the daemon restarted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
import trio

log = structlog.get_logger("kuloo.scheduler")


@dataclass
class Job:
    name: str
    due: Callable[[float], float]
    run: Callable[[], Awaitable[None]]


def effective_due(job: Job, now: float, not_before: dict[str, float]) -> float:
    """A job that just ran (or failed) and still says "due" waits a tick: no busy loop."""
    return max(job.due(now), not_before.get(job.name, float("-inf")))


def next_wakeup(jobs: list[Job], now: float, tick: float, not_before: dict[str, float] | None = None) -> float:
    """When the loop should wake: the earliest due job, but at least once per tick."""
    earliest = now + tick
    for job in jobs:
        earliest = min(earliest, max(now, effective_due(job, now, not_before or {})))
    return earliest


class Scheduler:
    def __init__(self, tick_seconds: float) -> None:
        self.tick_seconds = tick_seconds
        self.jobs: list[Job] = []
        self.last_tick: float | None = None
        self.ticks = 0
        self._not_before: dict[str, float] = {}
        self._stop = trio.Event()

    def status(self) -> dict:
        age = None if self.last_tick is None else round(trio.current_time() - self.last_tick, 3)
        return {"ticks": self.ticks, "seconds_since_tick": age, "jobs": [j.name for j in self.jobs]}

    def healthy(self, now: float, allowed_lag: float) -> bool:
        return self.last_tick is not None and now - self.last_tick <= allowed_lag

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        running: set[str] = set()
        async with trio.open_nursery() as nursery:
            while not self._stop.is_set():
                now = trio.current_time()
                self.last_tick = now
                self.ticks += 1
                for job in self.jobs:
                    if job.name not in running and effective_due(job, now, self._not_before) <= now:
                        running.add(job.name)
                        nursery.start_soon(self._run_job, job, running)
                idle = [job for job in self.jobs if job.name not in running]
                wake = next_wakeup(idle, trio.current_time(), self.tick_seconds, self._not_before)
                with trio.move_on_at(wake):
                    await self._stop.wait()
            # Stopping: jobs in flight finish (the daemon's drain deadline bounds them).

    async def _run_job(self, job: Job, running: set[str]) -> None:
        """One job at a time per name; ticks (and so the watchdog) go on meanwhile."""
        try:
            await job.run()
        except Exception:
            log.exception("scheduled job failed", job=job.name)
        finally:
            self._not_before[job.name] = trio.current_time() + self.tick_seconds
            running.discard(job.name)
