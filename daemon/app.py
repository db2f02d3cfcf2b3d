"""The daemon's lifetime: build the shared services, start the tasks in order, serve, reload, stop.

``run_daemon`` builds the one ``Services`` object (``services.open_services``) and hands
it to the control server, the scheduler's jobs and the capabilities. Tasks start in one
nursery with ``nursery.start`` and report readiness; ``READY=1`` goes to systemd only
after the store, the control socket, the links listener, the metrics listener (when
``[metrics] listen`` is set) and the scheduler are up. Shutdown has two phases: the first
SIGTERM/SIGINT sends ``STOPPING=1``, stops accepting
and gives in-flight work ``daemon.shutdown_grace_seconds`` (a cancel-scope deadline);
a second signal cancels everything at once. The store is closed in a shielded
``finally`` either way. SIGHUP re-reads the configuration (``RELOADING=1`` … ``READY=1``).
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass

import structlog
import trio

from . import config as config_mod
from . import logs
from .control import render
from .control.server import Broadcaster, ControlServer, bind_unix
from .delivery.bounces import BounceMailbox
from .delivery.service import Delivery
from .links.server import LinksServer, open_listener
from .operations.metrics import Exporter, MetricsServer
from .operations.metrics import bind as bind_metrics
from .operations.retention import Retention
from .scheduler import Scheduler
from .services import Services, open_services
from .sync import connection, engine
from .systemd import Notifier, listen_sockets, watchdog_interval

log = structlog.get_logger("kuloo.app")

# Keys that can change on SIGHUP; the others need a restart.
RELOADABLE = {
    "daemon.shutdown_grace_seconds",
    "daemon.scheduler_tick_seconds",
    "log.format",
    "log.level",
    "sell.verify_timeout_seconds",
    "sell.recheck_seconds",
    "credentials.directory",
    "credentials.link_signing_key",
    "credentials.smtp_password",
}


@dataclass
class Lifecycle:
    services: Services
    server: ControlServer
    notifier: Notifier
    links: LinksServer
    tasks: trio.Nursery | None = None
    metrics: MetricsServer | None = None  # [metrics] listen set

    @property
    def scheduler(self) -> Scheduler:
        return self.services.scheduler

    @property
    def stopping(self) -> bool:
        """One stopping flag, the one in ``Services`` that the methods report."""
        return self.services.stopping

    def begin_shutdown(self) -> None:
        if self.stopping:
            return
        self.services.stopping = True
        grace = self.services.config["daemon.shutdown_grace_seconds"]
        self.notifier.stopping()
        self.notifier.status(f"stopping: draining for at most {grace}s")
        log.info("stopping", grace_seconds=grace)
        self.server.stop()
        self.links.stop()
        if self.metrics is not None:
            self.metrics.stop()
        self.scheduler.stop()
        self.apply_deadline()

    def apply_deadline(self) -> None:
        if self.tasks is not None:
            grace = self.services.config["daemon.shutdown_grace_seconds"]
            self.tasks.cancel_scope.deadline = trio.current_time() + grace

    def cancel_now(self) -> None:
        log.warning("second signal: cancelling in-flight work now")
        if self.tasks is not None:
            self.tasks.cancel_scope.cancel()

    def reload(self) -> None:
        self.notifier.reloading()
        old = self.services.config
        try:
            new = config_mod.load(old.path) if old.path else old
            if problems := config_mod.sending_problems(new):
                raise config_mod.ConfigError(problems)
        except config_mod.ConfigError as exc:
            log.error("reload failed; keeping the running configuration", problems=exc.problems)
        else:
            changed = sorted(k for k in new.values if new.values[k] != old.values[k])
            restart = [k for k in changed if k not in RELOADABLE]
            applied = dict(old.values)
            applied.update({k: new.values[k] for k in changed if k in RELOADABLE})
            self.services.config = config_mod.Config(old.path, applied)
            self.scheduler.tick_seconds = applied["daemon.scheduler_tick_seconds"]
            self.links.app.reload_keys()  # a rotated link-signing key takes effect
            logs.configure(applied["log.format"], applied["log.level"])
            log.info("configuration reloaded", changed=changed, need_restart=restart)
        self.notifier.ready(self.status_line())

    def status_line(self) -> str:
        return f"serving; {self.server.connections} control connection(s)"


def _ignore_late_signal(signum: int, _frame: object) -> None:
    """After the receiver closes we are already on our way out: an extra signal changes nothing."""


async def _signals(life: Lifecycle, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    # trio re-delivers signals still queued when the receiver closes to the handlers it
    # found on entry; with the defaults a second SIGTERM arriving during the drain would
    # kill the process mid-cleanup, so those handlers are set to do nothing.
    signum: int
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _ignore_late_signal)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGHUP and not life.stopping:
                life.reload()
            elif signum == signal.SIGHUP:
                continue
            elif not life.stopping:
                life.begin_shutdown()
            else:
                life.cancel_now()


async def _feed_watchdog(life: Lifecycle, interval: float) -> None:
    """Ping systemd's watchdog only while the scheduler is making progress."""
    while not life.stopping:
        allowed = max(interval, 3 * life.scheduler.tick_seconds)
        if life.scheduler.healthy(trio.current_time(), allowed):
            life.notifier.watchdog()
        else:
            log.error(
                "scheduler has not ticked; withholding the watchdog ping", allowed_seconds=allowed
            )
        await trio.sleep(interval / 2)


async def run_daemon(
    config: config_mod.Config, *, socket_path: str | None = None, notifier: Notifier | None = None
) -> None:
    notifier = notifier or Notifier()
    sockets = listen_sockets()
    notifier.status("opening the store")
    broadcaster = Broadcaster()
    # The parts in order, each complete when built: the shared services (their ``publish``
    # renders each event once for the control subscribers and, on PostgreSQL, the other
    # daemons), delivery on them, the links listener (its address is delivery's fallback
    # public URL), links (reaching delivery's transport), then the control server.
    async with open_services(config, broadcaster.publish, render=render.event) as services:
        bound_path = None
        if not sockets:
            bound_path = socket_path or config["control.socket"]
            sockets = [bind_unix(bound_path, config["control.group"])]
        links_socket, links_url = open_listener(
            config["links.listen"], config["links.max_connections"]
        )
        listen = config["metrics.listen"]
        metrics_listener = bind_metrics(listen) if listen else None
        delivery = Delivery(services, links_url)
        delivery.mailbox = BounceMailbox(services)  # [bounces]: the bounce mailbox's poll
        links = LinksServer(services, delivery, (links_socket, links_url))
        server = ControlServer(
            services, delivery, broadcaster, config["control.max_line_bytes"], links_url=links_url
        )
        life = Lifecycle(services, server, notifier, links)
        if metrics_listener is not None:
            exporter = Exporter(
                services,
                control_connections=lambda: server.connections,
                events_dropped=lambda: broadcaster.dropped,
            )
            life.metrics = MetricsServer(exporter, metrics_listener)
        services.scheduler.jobs.extend(connection.jobs(services))
        services.scheduler.jobs.extend(engine.jobs(services))
        services.scheduler.jobs.extend(delivery.jobs())
        services.scheduler.jobs.extend(delivery.mailbox.jobs())
        services.scheduler.jobs.extend(Retention(services).jobs())
        async with trio.open_nursery() as outer:
            await outer.start(_signals, life)
            await outer.start(services.leases.keep_alive)  # PostgreSQL: renews this daemon's leases
            # PostgreSQL: other daemons' events reach this one's subscribers and delivery.
            await outer.start(services.events.run, lambda: services.publish, delivery.mark_changed)
            async with trio.open_nursery() as tasks:
                life.tasks = tasks
                await tasks.start(server.serve, sockets)
                await tasks.start(life.links.serve)
                if life.metrics is not None:
                    await tasks.start(life.metrics.serve)
                await tasks.start(services.scheduler.run)
                interval = watchdog_interval()
                if interval:
                    tasks.start_soon(_feed_watchdog, life, interval)
                log.info(
                    "daemon ready",
                    store=services.store.where,
                    control_socket=bound_path or "(socket activation)",
                    links=links.url,
                    metrics=life.metrics.url if life.metrics is not None else None,
                    watchdog_seconds=interval,
                    clock=services.clock.mode,
                    daemon_id=services.leases.id,
                )
                notifier.ready(life.status_line())
                if life.stopping:  # a signal arrived while starting
                    life.apply_deadline()
            outer.cancel_scope.cancel()
        if bound_path:
            with contextlib.suppress(OSError):
                os.unlink(bound_path)
    log.info("stopped")
