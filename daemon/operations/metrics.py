"""Metrics for Prometheus and a health check, at ``[metrics] listen`` (docs/operations.md).

``GET /metrics``: the text exposition of ``Services.metrics`` (``instruments``: what the
daemon counted as it worked) plus what ``Exporter`` reads at scrape time — the outbox by
state from the database (one ``GROUP BY``, kept ``CACHE_SECONDS``, so a scrape every few
seconds costs one query per 10 s whatever the number of scrapers), the leases this daemon
holds, open control connections, events dropped, seconds since the scheduler's last tick
and whether the store answered. OpenMetrics when the scraper asks for it.

``GET /healthz``: JSON, 200 when healthy, 503 otherwise (a load balancer or a monitor):
the scheduler ticked within three ticks (and its latest start lag), the store answered a
ping within ``PING_SECONDS``, this daemon's leases; 503 too while the daemon stops.

Served by hypercorn on trio inside the daemon (``MetricsServer``, started by ``app`` with
``nursery.start`` after binding, so a port that cannot be had is one clear line before
READY=1; stopped at the start of shutdown). Uses ``services`` and ``store``.
"""

from __future__ import annotations

import json
import logging
import math
import socket
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import structlog
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.config import Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..config import parse_listen
from ..instruments import PREFIX
from ..services import Services
from ..store import stats

log = structlog.get_logger("kuloo.operations")

CACHE_SECONDS = 10.0  # database gauges are read at most this often
QUERY_SECONDS = 5.0  # a scrape waits at most this long for them (then: the last values)
PING_SECONDS = 2.0  # /healthz: the store must answer within this
LEASE_KINDS = ("sync", "delivery")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _zero() -> int:
    return 0


class Exporter(Collector):
    """The scrape-time part of the metrics, registered on ``services.metrics.registry``."""

    def __init__(
        self,
        services: Services,
        *,
        control_connections: Callable[[], int] = _zero,
        events_dropped: Callable[[], int] = _zero,
    ) -> None:
        self.services = services
        self.metrics = services.metrics
        self.control_connections = control_connections
        self.events_dropped = events_dropped
        self.outbox: dict[tuple[int | None, str], int] = {}
        self.outbox_at = -math.inf  # trio time of the last successful read
        self.store_up = True
        self.queries = 0  # database reads made for scrapes (tests, bench)
        # What the daemon's trio side holds, copied there before the exposition is rendered
        # in a worker thread (``collect`` runs in it): leases, connections, drops, last tick.
        self.live: dict[str, Any] = {}
        self._lock = trio.Lock()
        self.metrics.registry.register(self)

    async def refresh(self) -> None:
        """Read the database gauges when the cached ones are older than ``CACHE_SECONDS``."""
        async with self._lock:  # scrapes at once: one of them reads, the others wait for it
            if trio.current_time() - self.outbox_at < CACHE_SECONDS:
                return
            per_channel = self.metrics.per_channel
            counts = None
            try:
                with trio.move_on_after(QUERY_SECONDS):
                    self.queries += 1
                    counts = await self.services.store.run(stats.outbox_states, per_channel)
            except Exception as exc:  # the store is down: the scrape still answers
                log.warning("metrics: could not read the outbox counts", error=type(exc).__name__)
            self.store_up = counts is not None
            if counts is not None:
                self.outbox, self.outbox_at = counts, trio.current_time()

    def snapshot(self) -> None:
        """Copy the live values ``collect`` reports (on trio's thread: they change there)."""
        scheduler = self.services.scheduler
        self.live = {
            "leases": [kind for _channel, kind in self.services.leases.held()],
            "control_connections": self.control_connections(),
            "dropped_control": self.events_dropped(),
            "dropped_relay": self.services.events.dropped,
            "since_tick": (trio.current_time() - scheduler.last_tick)
            if scheduler.last_tick is not None
            else math.inf,
        }

    async def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition (text, or OpenMetrics when ``accept`` asks) and its content type.
        Rendered in a worker thread: with per-channel series it is tens of milliseconds."""
        await self.refresh()
        self.snapshot()
        encoder, content_type = choose_encoder(accept)
        body = await trio.to_thread.run_sync(encoder, self.metrics.registry)
        return body, content_type

    def collect(self) -> Iterable[Metric]:
        if not self.live:
            self.snapshot()  # a direct registry read on trio's thread (tests)
        live = self.live
        per_channel = self.metrics.per_channel
        outbox = GaugeMetricFamily(
            f"{PREFIX}_outbox_messages",
            f"Outbox messages by state (read at most every {CACHE_SECONDS:g} s).",
            labels=["channel", "state"] if per_channel else ["state"],
        )
        for (channel, state), n in sorted(
            self.outbox.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1])
        ):
            outbox.add_metric([str(channel), state] if per_channel else [state], n)
        yield outbox
        yield GaugeMetricFamily(
            f"{PREFIX}_store_up",
            "1 when the last read of the database gauges succeeded.",
            value=1 if self.store_up else 0,
        )
        leases = GaugeMetricFamily(
            f"{PREFIX}_leases_held",
            "Channel leases this daemon works under (PostgreSQL).",
            labels=["kind"],
        )
        for kind in LEASE_KINDS:
            leases.add_metric([kind], live["leases"].count(kind))
        yield leases
        yield GaugeMetricFamily(
            f"{PREFIX}_control_connections",
            "Open control connections.",
            value=live["control_connections"],
        )
        dropped = CounterMetricFamily(
            f"{PREFIX}_events_dropped",
            "Events lost: a control subscriber too slow for them (its subscription ended), or "
            "another daemon's events this one was too busy to take (PostgreSQL).",
            labels=["source"],
        )
        dropped.add_metric(["control"], live["dropped_control"])
        dropped.add_metric(["relay"], live["dropped_relay"])
        yield dropped
        yield GaugeMetricFamily(
            f"{PREFIX}_scheduler_seconds_since_tick",
            "Seconds since the scheduler last looked for due work.",
            value=live["since_tick"],
        )

    async def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, the document ``/healthz`` answers)."""
        services = self.services
        scheduler = services.scheduler
        now = trio.current_time()
        since = None if scheduler.last_tick is None else now - scheduler.last_tick
        allowed = 3 * scheduler.tick_seconds + 1.0
        ticking = since is not None and since <= allowed
        started = trio.current_time()
        reachable, problem = False, None
        try:
            with trio.move_on_after(PING_SECONDS) as scope:
                await services.store.run(stats.ping)
                reachable = True
            if scope.cancelled_caught:
                problem = f"no answer within {PING_SECONDS:g} s"
        except Exception as exc:
            problem = type(exc).__name__
        healthy = ticking and reachable and not services.stopping
        doc: dict[str, Any] = {
            "healthy": healthy,
            "stopping": services.stopping,
            "scheduler": {
                "ok": ticking,
                "seconds_since_tick": None if since is None else round(since, 3),
                "allowed_seconds": allowed,
                "lag_seconds": round(max(self.metrics.last_lag.values(), default=0.0), 3),
            },
            "store": {
                "reachable": reachable,
                "seconds": round(trio.current_time() - started, 3),
                **({"problem": problem} if problem else {}),
            },
            "leases": {
                "daemon": services.leases.id,
                "shared": services.leases.shared,
                "held": [{"channel": c, "kind": k} for c, k in services.leases.held()],
            },
        }
        return healthy, doc

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        status, content_type, body = 404, "text/plain; charset=utf-8", b"not found\n"
        if path not in ("/metrics", "/healthz"):
            pass
        elif method not in ("GET", "HEAD"):
            status, body = 405, b"method not allowed\n"
        elif path == "/metrics":
            body, content_type = await self.render(headers.get("accept", ""))
            status = 200
        else:
            healthy, doc = await self.health()
            status, content_type = (200 if healthy else 503), "application/json"
            body = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                    *([(b"allow", b"GET, HEAD")] if status == 405 else []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


def bind(listen: str) -> tuple[socket.socket, str]:
    """A listening TCP socket for ``HOST:PORT`` and its URL; ``RuntimeError`` in one line."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"metrics.listen: cannot listen on {listen} ({exc.strerror})") from None
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
    return sock, f"http://{shown}:{bound_port}"


class MetricsServer:
    """``/metrics`` and ``/healthz`` over hypercorn on an already bound socket."""

    def __init__(self, exporter: Exporter, listener: tuple[socket.socket, str]) -> None:
        self.exporter = exporter
        self._sock, self.url = listener
        self._stop = trio.Event()

    def stop(self) -> None:
        self._stop.set()

    def hypercorn_config(self) -> HyperConfig:
        hc = HyperConfig()
        hc.accesslog = None
        hc.errorlog = logging.getLogger("hypercorn.error")
        hc.include_server_header = False
        hc.keep_alive_timeout = 30  # Prometheus keeps its connection between scrapes
        hc.read_timeout = 10
        hc.h11_max_incomplete_size = 8192
        hc.graceful_timeout = 2.0
        return hc

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async def stop() -> None:
            await self._stop.wait()

        async with trio.open_nursery() as nursery:
            await nursery.start(self._serve, stop)
            log.info("metrics listening", url=self.url)
            task_status.started(self.url)
        log.info("metrics stopped")

    async def _serve(
        self,
        stop: Callable[[], Awaitable[None]],
        *,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await worker_serve(
            wrap_app(self.exporter, 0, "asgi"),  # type: ignore[arg-type]
            self.hypercorn_config(),
            sockets=Sockets([], [self._sock], []),
            shutdown_trigger=stop,
            task_status=task_status,
        )
