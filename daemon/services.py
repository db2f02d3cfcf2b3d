"""The shared services every capability of the daemon stands on, built once per run.

``Services`` holds the configuration, the store, the Sell client pool, the business
clock, the scheduler, this daemon's leases, the events relay, the event publisher, the
stopping flag and the sync's run locks and schedule, all set when it is built.
``app.run_daemon`` builds it with ``open_services``, then builds the capabilities on it
in order (``delivery``, ``links``, which reaches delivery through a narrow protocol,
then ``control``) and hands each what it needs; ``sync`` and the scheduler's jobs take
it as it is. So none of them builds or finds its own, and nothing is filled in later.

Where it sits (enforced by ``tests/test_layering.py``): above ``crm`` and ``store`` (it
opens them) and the base modules, below the capabilities and ``control`` (they receive
it). So ``crm`` and ``store`` never see it: they take plain arguments (a token, ``now``)
and return plain data. It imports no ``control`` module: events go out through
``publish``, a plain callable that ``app`` wires to the control server's broadcaster.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
import trio

from .clock import Clock, ManualClock, WallClock, parse_instant
from .config import Config
from .crm.pool import ClientPool
from .instruments import Metrics
from .scheduler import Scheduler
from .store import clock_time, leases
from .store import delivery as delivery_store
from .store import events as events_store
from .store.bridge import Store, store_location
from .store.health import StoreUnavailable
from .store.sync import runs as sync_runs

log = structlog.get_logger("kuloo.services")

Publish = Callable[[str, Any], None]


def _drop(_event: str, _data: Any) -> None:
    return None


def _as_is(_event: str, data: Any) -> Any:
    return data


class LeaseLost(Exception):
    """The fence refused a write: this daemon can no longer be sure its lease is its own."""


class Fence:
    """The check before each external write under a lease (a Sell POST/PUT/DELETE, an SMTP
    transaction): the lease is certainly still ours only while less than ``limit`` seconds
    of this daemon's own monotonic clock have passed since the last renewal the database
    confirmed (``confirmed``, the monotonic time just before that renewal was sent). A
    stopped process's monotonic clock keeps running, so a daemon that wakes from a freeze
    knows it overslept before it writes anything. ``check`` reads two floats and is safe
    to call from a worker thread (the SMTP send loop)."""

    def __init__(
        self,
        limit: float,
        confirmed: float,
        monotonic: Callable[[], float] = time.monotonic,
        label: str = "",
    ) -> None:
        self.limit = limit
        self.confirmed = confirmed
        self.monotonic = monotonic
        self.label = label
        self.lost = False

    def ok(self) -> bool:
        if self.monotonic() - self.confirmed > self.limit:
            self.lost = True
        return not self.lost

    def check(self) -> None:
        if not self.ok():
            raise LeaseLost(
                f"the {self.label or 'lease'} may have been taken over: stopped before writing"
            )


def _always_ok() -> None:
    return None


class Leases:
    """This daemon's id and its leases on the channels' work (``store.leases``).

    ``hold(kind, channel)`` is the one hook the capabilities put around a channel's sync
    run or delivery pass: on PostgreSQL it claims the lease (or, with ``wait``, waits until
    the daemon holding it is done) and releases it after; on SQLite, one daemon per
    database, it always holds. ``keep_alive`` renews every held lease (monotonic time;
    expiry is the database's time) until the daemon stops, and stops the work under a
    lease it lost (taken over, or not renewed for as long as a lease lasts).

    ``fence(kind, channel)`` is the check the work makes before each external write
    (``Fence``): it refuses once ``FENCE`` × ``lease_seconds`` have passed since the last
    renewal the database confirmed — a safety margin below the lease's length, so a daemon
    that froze never writes after another took its lease over. On SQLite it never refuses."""

    FENCE = 2 / 3  # of lease_seconds: beyond it, no external write under the lease

    def __init__(
        self,
        store: Store,
        clock: Clock,
        seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.clock = clock
        self.seconds = seconds
        self.monotonic = monotonic
        # The fences of the leases held: (channel id, kind) -> Fence (its ``confirmed`` moves
        # forward at each renewal the database confirms).
        self._fences: dict[tuple[int, str], Fence] = {}
        host = socket.gethostname()[:40]
        self.id = f"{host}:{os.getpid()}:{secrets.token_hex(3)}"
        self.host = host
        # The leases this daemon works under: (channel id, kind) -> (the work's cancel scope,
        # monotonic time it was claimed).
        self._held: dict[tuple[int, str], tuple[trio.CancelScope, float]] = {}

    @property
    def shared(self) -> bool:
        return self.store.postgres

    def held(self) -> list[tuple[int, str]]:
        """The (channel id, kind) leases this daemon works under now."""
        return sorted(self._held)

    @asynccontextmanager
    async def hold(self, kind: str, channel_id: int, *, wait: bool = False) -> AsyncIterator[bool]:
        if not self.shared:
            yield True
            return
        told = False
        while True:
            asked = self.monotonic()
            claim = await self.store.run(
                leases.claim, channel_id, kind, self.id, self.seconds, self.clock.now()
            )
            if claim.held or not wait:
                break
            if not told:
                log.info(
                    "waiting for another daemon's lease",
                    channel_id=channel_id,
                    kind=kind,
                    holder=claim.holder,
                )
                told = True
            await trio.sleep(min(1.0, self.seconds / 4))
        if not claim.held:
            yield False
            return
        if claim.taken_over:
            log.warning(
                "took over an expired lease",
                channel_id=channel_id,
                kind=kind,
                dead=claim.taken_over,
            )
        key = (channel_id, kind)
        try:
            # Fencing: the work stops when ``keep_alive`` finds the lease gone (this daemon
            # stalled past ``lease_until`` and another took over) or cannot renew it in time.
            with trio.CancelScope() as scope:
                self._held[key] = (scope, self.monotonic())
                self._fences[key] = Fence(
                    self.seconds * self.FENCE,
                    asked,
                    self.monotonic,
                    f"{kind} lease of channel {channel_id}",
                )
                try:
                    yield True
                except LeaseLost as exc:  # the fence refused a write: the work stopped
                    log.warning(
                        "lease not certainly ours: the work stopped before writing",
                        channel_id=channel_id,
                        kind=kind,
                        error=str(exc),
                    )
            if scope.cancelled_caught:
                log.warning(
                    "lease lost: the channel's work stopped", channel_id=channel_id, kind=kind
                )
        finally:
            self._held.pop(key, None)
            self._fences.pop(key, None)
            now = self.clock.now()
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                try:
                    await self.store.run(
                        leases.release, channel_id, kind, self.id, claim.last_run, now
                    )
                except StoreUnavailable:  # released as soon as the store answers again
                    self.store.health.on_recovery(
                        f"release the {kind} lease of channel {channel_id}",
                        lambda: leases.release(channel_id, kind, self.id, claim.last_run, now),
                    )

    def fence(self, kind: str, channel_id: int) -> Callable[[], None]:
        """The check before an external write under the channel's ``kind`` lease: raises
        ``LeaseLost`` once the lease is not certainly ours. On SQLite (or without the
        lease held, e.g. a test calling the work directly) it never refuses."""
        fence = self._fences.get((channel_id, kind)) if self.shared else None
        return fence.check if fence is not None else _always_ok

    async def keep_alive(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        if not self.shared:
            return
        renewed_at = self.monotonic()
        while True:
            await trio.sleep(self.seconds / 3)
            started = self.monotonic()
            renewed: set[tuple[int, str]] | None = None
            with trio.move_on_after(self.seconds):  # a beat that hangs as long as a lease failed
                try:
                    renewed = await self.store.run(leases.heartbeat, self.id, self.seconds)
                except StoreUnavailable:
                    pass  # the outage is logged once by the store's health
                except Exception as exc:  # a lost connection: the next beat tries again
                    log.warning("lease heartbeat failed", error=str(exc))
            if renewed is not None:
                renewed_at = started
                for key in renewed:
                    fence = self._fences.get(key)
                    if fence is not None and fence.confirmed < started:
                        fence.confirmed = started
            elif self.monotonic() - renewed_at < self.seconds:
                continue  # not renewed this time, but not expired yet: no one else may take them
            for key, (scope, since) in list(self._held.items()):
                if since < started and (renewed is None or key not in renewed):
                    scope.cancel()


class Events:
    """On PostgreSQL, this daemon's events reach every other daemon and theirs reach this
    one (LISTEN/NOTIFY, ``store.events``); on SQLite (one daemon) it does nothing.

    ``app`` hands each event it publishes, rendered, to ``notify``; ``run`` takes what
    other daemons published and publishes it here through the same ``publish`` chain as a
    local event — the control subscribers and delivery's per-channel change marks see it —
    but never notifies it again (``relaying``). After the connection dropped (events may
    have been missed), ``on_gap`` is called once it listens again."""

    QUEUE = 1024  # events from other daemons waiting for the trio side; beyond it they are dropped

    def __init__(self, store: Store, origin: str) -> None:
        self.store = store
        self.origin = origin
        self.relaying = False
        self.received = 0
        self.dropped = 0
        self.relay: events_store.Relay | None = None

    def notify(self, event: str, data: Any) -> None:
        """One of this daemon's events (JSON-ready data) for the other daemons."""
        if self.relay is None or self.relaying:
            return
        try:
            self.store.call_soon(self.relay.send, event, data)
        except RuntimeError:  # the store is closing: nobody to tell
            pass

    async def run(
        self,
        publish: Callable[[], Publish],
        on_gap: Callable[[], None] = lambda: None,
        *,
        listen_timeout: float = 10.0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Relay events until cancelled; started once listening (or after ``listen_timeout``)."""
        if not self.store.postgres:
            task_status.started()
            return
        assert self.store.target is not None
        token = trio.lowlevel.current_trio_token()
        send, receive = trio.open_memory_channel[events_store.Note | None](self.QUEUE)
        listening = trio.Event()

        def put(
            item: events_store.Note | None,
        ) -> None:  # on trio's thread, as a run_sync_soon callback
            try:
                send.send_nowait(item)
            except trio.WouldBlock:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning(
                        "events from other daemons dropped (this daemon is behind)",
                        dropped=self.dropped,
                    )
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # stopping: nobody reads them any more
            except Exception:  # an error escaping a run_sync_soon callback would end the trio run
                log.exception("an event from another daemon could not be queued")

        def hand_over(item: events_store.Note | None) -> None:  # on the store's loop
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(put, item)

        def on_listening(number: int) -> None:  # on the store's loop
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(listening.set)
            if number > 1:
                hand_over(None)  # None: "events may have been missed"

        self.relay = events_store.Relay(
            self.store.target, self.origin, hand_over, on_listening=on_listening
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.store.run, self.relay.run)
            with trio.move_on_after(listen_timeout):
                await listening.wait()
            if not listening.is_set():
                log.warning(
                    "not yet listening for other daemons' events; going on", seconds=listen_timeout
                )
            task_status.started()
            async for note in receive:
                if note is None:
                    log.info("listening again after a drop: looking at every channel again")
                    on_gap()
                    continue
                self.received += 1
                self.relaying = True
                try:
                    publish()(note.event, note.data)
                except Exception:  # one bad event must not end the relay
                    log.exception("publishing another daemon's event failed", event=note.event)
                finally:
                    self.relaying = False


@dataclass
class Services:
    config: Config
    store: Store
    sell_pool: ClientPool
    clock: Clock
    scheduler: Scheduler
    leases: Leases
    events: Events
    publish: Publish = _drop
    # The one metrics registry of these services (``instruments``; served by ``operations``).
    metrics: Metrics = field(default_factory=Metrics)
    started_at: float = field(default_factory=time.monotonic)  # for uptime, monotonic
    stopping: bool = False
    # The sync's own state, which lives as long as these services: one lock per channel (one
    # run at a time) and its schedule (``sync.engine``: when the next run is due, when to re-read).
    sync_locks: dict[int, trio.Lock] = field(default_factory=dict)
    sync_plan: dict[str, Any] = field(default_factory=lambda: {"next": None, "plan_at": 0.0})


async def make_clock(config: Config, store: Store) -> Clock:
    """The wall clock, or a manual one resumed from the store (a fresh store: ``clock.start``)."""
    if config["clock.mode"] != "manual":
        return WallClock()
    start: datetime = (
        parse_instant(config["clock.start"]) if config["clock.start"] else WallClock().now()
    )
    at = await store.run(clock_time.load_or_start, start)

    async def persist(moved_to: datetime) -> None:
        await store.run(clock_time.save, moved_to)

    return ManualClock(at, persist)


@asynccontextmanager
async def open_services(
    config: Config, publish: Publish = _drop, *, render: Callable[[str, Any], Any] = _as_is
) -> AsyncIterator[Services]:
    """Open the store and the Sell client pool, set the clock, tidy up after a crash.

    ``Services.publish`` renders each event once (``render``: JSON-ready data; ``app``
    passes the control protocol's), hands it to ``publish`` (``app``: the control
    subscribers) and, on PostgreSQL, to the other daemons (``Events.notify``); the events
    this daemon publishes also reach ``Services.metrics``."""
    metrics = Metrics(per_channel=config["metrics.per_channel"])
    async with (
        Store.open(store_location(config)) as store,
        ClientPool(
            config["sell.base_url"],
            rate_per_second=config["sell.requests_per_second"],
            timeout=config["sell.timeout_seconds"],
            max_attempts=config["sell.max_attempts"],
            max_response_bytes=config["sell.max_response_bytes"],
            on_request=metrics.sell_request,
        ) as sell_pool,
    ):
        clock = await make_clock(config, store)
        lease = Leases(store, clock, config["store.lease_seconds"])
        if store.postgres:
            # Other daemons may be working: what a dead one left is repaired when its
            # expired lease is taken over (store.leases), not here.
            await store.run(leases.register, lease.id, lease.host, os.getpid())
        else:
            interrupted = await store.run(sync_runs.fail_interrupted, clock.now())
            if interrupted:
                log.warning(
                    "sync runs left running by a crash marked failed", sync_runs=interrupted
                )
            uncertain = await store.run(delivery_store.mark_interrupted, clock.now())
            if uncertain:
                log.warning(
                    "emails that may have left before a crash marked uncertain", outbox=uncertain
                )
        scheduler = Scheduler(config["daemon.scheduler_tick_seconds"], clock)
        scheduler.on_start = metrics.scheduler_started
        events = Events(store, lease.id)

        def publish_all(event: str, data: Any) -> None:
            if not events.relaying:  # another daemon's event is counted by that daemon
                metrics.event(event, data)
            rendered = render(event, data)
            publish(event, rendered)
            events.notify(event, rendered)  # PostgreSQL: to every other daemon, once

        try:
            services = Services(
                config,
                store,
                sell_pool,
                clock,
                scheduler,
                lease,
                events,
                publish_all,
                metrics=metrics,
            )
            # The database unreachable or its disk full, and its return: ``store.state`` to the
            # subscribers (the TUI's banner), as ``status``' ``store_state`` shows it.
            store.health.on_change.append(
                lambda _state: services.publish("store.state", store.health.document())
            )
            yield services
        finally:
            if store.postgres:
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    try:
                        await store.run(leases.stop, lease.id)
                    except Exception as exc:  # the server is gone: the leases expire on their own
                        log.warning("could not release the leases", error=str(exc))
