"""The scheduler: pure "what is due next" decisions plus a thin trio loop.

Two kinds of job, because two kinds of time:

- ``Job``: monotonic time (retries, re-checks, housekeeping). ``due(now) -> float`` is
  the next ``trio.current_time()`` it wants to run at.
- ``ClockJob``: business time (plan cadence, sequence delays, digests). ``due(now) ->
  datetime | None`` is the next clock time it wants to run at (None: nothing planned; it
  is asked again every tick). It runs as soon as the ``Clock`` passes that time: the loop
  sleeps on the clock itself, so a manual clock's move wakes it at once.

Each tick starts what is due (never two runs of one job at once) in the scheduler's
nursery, so a slow job does not hold up the ticks; a job that stays due after running
waits a tick (no busy loop). The systemd watchdog is fed only while ticks keep coming
(``app``), so a wedged scheduler gets the daemon restarted. ``settle`` waits until the
business-time work that a clock move made due has run (``clock.advance``).

Imports trio, structlog and ``clock``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog
import trio

from .clock import Clock, WallClock

log = structlog.get_logger("kuloo.scheduler")


@dataclass
class Job:
    name: str
    due: Callable[[float], float]
    run: Callable[[], Awaitable[None]]


@dataclass
class ClockJob:
    name: str
    due: Callable[[datetime], datetime | None]
    run: Callable[[], Awaitable[None]]


def effective_due(job: Job, now: float, not_before: dict[str, float]) -> float:
    """A job that just ran (or failed) and still says "due" waits a tick: no busy loop."""
    return max(job.due(now), not_before.get(job.name, float("-inf")))


def next_wakeup(
    jobs: Sequence[Job | ClockJob],
    now: float,
    tick: float,
    not_before: dict[str, float] | None = None,
) -> float:
    """When the loop should wake for monotonic reasons: the earliest due job, a job's
    back-off after running, or at least once per tick."""
    not_before = not_before or {}
    earliest = now + tick
    for job in jobs:
        if isinstance(job, Job):
            earliest = min(earliest, max(now, effective_due(job, now, not_before)))
        elif job.name in not_before and not_before[job.name] > now:
            earliest = min(earliest, not_before[job.name])
    return earliest


def next_clock_due(jobs: Sequence[Job | ClockJob], now: datetime) -> datetime | None:
    """The earliest business time any clock job wants to run at (None: none planned)."""
    times = [t for job in jobs if isinstance(job, ClockJob) and (t := job.due(now)) is not None]
    return min(times, default=None)


def is_due(
    job: Job | ClockJob, mono_now: float, clock_now: datetime, not_before: dict[str, float]
) -> bool:
    if mono_now < not_before.get(job.name, float("-inf")):
        return False
    if isinstance(job, Job):
        return job.due(mono_now) <= mono_now
    due = job.due(clock_now)
    return due is not None and due <= clock_now


def start_lag(
    job: Job | ClockJob,
    now: float,
    clock_now: datetime,
    previous_tick: float,
    not_before: dict[str, float],
) -> float:
    """Seconds from a job being due to its start at ``now``: how late it is, but never more
    than the time since the previous tick, which saw it not yet due (a manual clock moved a
    day ahead, or a channel left unsynced while the daemon was down, is not scheduler lag)."""
    if isinstance(job, Job):
        late = now - effective_due(job, now, not_before)
    else:
        due = job.due(clock_now)
        late = 0.0 if due is None else (clock_now - due).total_seconds()
    return max(0.0, min(late, now - previous_tick))


@dataclass
class Settled:
    """What ``settle`` saw: the clock jobs that ran since the move, those still pending."""

    ran: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)

    @property
    def timed_out(self) -> bool:
        return bool(self.pending)


class Scheduler:
    def __init__(self, tick_seconds: float, clock: Clock | None = None) -> None:
        self.tick_seconds = tick_seconds
        self.clock = clock or WallClock()
        self.jobs: list[Job | ClockJob] = []
        self.last_tick: float | None = None
        self.ticks = 0
        self._not_before: dict[str, float] = {}
        self._running: set[str] = set()
        self._started_at_move: dict[
            str, int
        ] = {}  # job -> the clock's move count when it last started
        self._starts: dict[str, int] = {}  # job -> how many times it started
        self._progress = trio.Event()  # set (and replaced) whenever a job starts or ends
        self._wake = trio.Event()  # set (and replaced) when a clock job ends: it may be due again
        self._stop = trio.Event()
        # Told of each start and how late it came (the daemon's metrics): (job name, seconds).
        self.on_start: Callable[[str, float], None] = lambda _job, _lag: None

    def status(self) -> dict:
        age = None if self.last_tick is None else round(trio.current_time() - self.last_tick, 3)
        return {"ticks": self.ticks, "seconds_since_tick": age, "jobs": [j.name for j in self.jobs]}

    def healthy(self, now: float, allowed_lag: float) -> bool:
        return self.last_tick is not None and now - self.last_tick <= allowed_lag

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            while not self._stop.is_set():
                try:
                    await self._tick(nursery)
                except Exception:  # a job's due() failed: that must not stop every other job
                    log.exception("scheduler tick failed; trying again in a tick")
                    with trio.move_on_after(self.tick_seconds):
                        await self._stop.wait()
            # Stopping: jobs in flight finish (the daemon's drain deadline bounds them).

    async def _tick(self, nursery: trio.Nursery) -> None:
        now = trio.current_time()
        previous = self.last_tick if self.last_tick is not None else now
        self.last_tick = now
        self.ticks += 1
        clock_now = self.clock.now()
        for job in self.jobs:
            if job.name not in self._running and is_due(job, now, clock_now, self._not_before):
                self._running.add(job.name)
                self._started_at_move[job.name] = self.clock.moves
                self._starts[job.name] = self._starts.get(job.name, 0) + 1
                self._notify()
                self.on_start(job.name, start_lag(job, now, clock_now, previous, self._not_before))
                nursery.start_soon(self._run_job, job)
        idle = [job for job in self.jobs if job.name not in self._running]
        now = trio.current_time()
        # a job backing off after a run wakes the loop by its not-before time, not the clock's
        ready = [job for job in idle if self._not_before.get(job.name, float("-inf")) <= now]
        await self._sleep(
            next_wakeup(idle, now, self.tick_seconds, self._not_before),
            next_clock_due(ready, self.clock.now()),
        )

    async def _sleep(self, wake: float, clock_due: datetime | None) -> None:
        """Until the monotonic ``wake``, the clock passing ``clock_due``, a finished job or stop."""

        async def until(waiting: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
            await waiting()
            scope.cancel()

        with trio.move_on_at(wake):
            async with trio.open_nursery() as waiters:
                scope = waiters.cancel_scope
                waiters.start_soon(until, self._stop.wait, scope)
                waiters.start_soon(until, self._wake.wait, scope)
                if clock_due is not None:
                    waiters.start_soon(until, lambda: self.clock.sleep_until(clock_due), scope)

    def _notify(self) -> None:
        progress, self._progress = self._progress, trio.Event()
        progress.set()

    async def _run_job(self, job: Job | ClockJob) -> None:
        """One job at a time per name; ticks (and so the watchdog) go on meanwhile."""
        try:
            await job.run()
        except Exception as exc:
            # A failure the store's health already logged once (the database unreachable, a
            # full disk: ``quiet``) is not logged again, with a traceback, per tick.
            if not getattr(exc, "quiet", False):
                log.exception("scheduled job failed", job=job.name)
        finally:
            self._not_before[job.name] = trio.current_time() + self.tick_seconds
            self._running.discard(job.name)
            if isinstance(job, ClockJob):
                wake, self._wake = self._wake, trio.Event()
                wake.set()
            self._notify()

    def _pending_since(self, move: int) -> list[str]:
        """Clock jobs running, or due and not started since the clock's ``move``-th move."""
        now = self.clock.now()
        pending = []
        for job in self.jobs:
            if not isinstance(job, ClockJob):
                continue
            if job.name in self._running:
                pending.append(job.name)
                continue
            due = job.due(now)
            if due is not None and due <= now and self._started_at_move.get(job.name, -1) < move:
                pending.append(job.name)
        return pending

    async def settle(self, within_seconds: float) -> Settled:
        """Wait until the business-time work due at the clock's current time has run.

        Every clock job that is due now, or running, has to finish a run started after
        the clock's latest move; gives up after ``within_seconds`` and says what is left.
        """
        move = self.clock.moves
        before = dict(self._starts)
        pending = self._pending_since(move)
        with trio.move_on_after(within_seconds):
            while pending:
                await self._progress.wait()
                pending = self._pending_since(move)
        ran = sorted(
            job.name
            for job in self.jobs
            if isinstance(job, ClockJob)
            and self._starts.get(job.name, 0) > before.get(job.name, 0)
            and job.name not in pending
        )
        return Settled(ran=ran, pending=sorted(pending))
