"""The daemon's Prometheus instruments: one registry and its counters per ``Services``.

Every part of the daemon reports what happened through ``Services.metrics`` (a ``Metrics``):
sync runs (from the ``sync.started``/``sync.finished`` events), Sell requests (the Sell
client's ``on_request`` callback: ``crm`` imports nothing of this), emails, delivery
passes, the scheduler's start lag, links requests and the rows retention pruned. What is
read at scrape time instead — the outbox by state from the database, leases held, control
connections, events dropped — is collected by ``operations.metrics``, which also serves
``GET /metrics`` and ``GET /healthz`` (docs/operations.md, "Metrics").

Label values are identifiers from fixed sets (a method, a status code, a route template, a
job or table name) or a channel's id: never an email address, a token or free text. A
channel's id appears only with ``[metrics] per_channel = true``, so 10,000 channels do
not make 10,000 series by default. There is no global registry: tests and several
``Services`` in one process each count on their own.

Imports prometheus-client and the standard library only (base floor).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)

# No ``*_created`` series beside each counter and histogram: a third more series per scrape,
# and the process start time says the same (prometheus-client's switch is process-wide).
disable_created_metrics()

PREFIX = "kuloo_sync"
RUN_STATUSES = ("ok", "partial", "failed", "skipped")
EMAIL_RESULTS = ("sent", "failed", "uncertain")
BOUNCE_KINDS = ("hard", "soft")
INBOUND_KINDS = (
    "hard",
    "soft",
    "message",
    "delayed",
    "complaint",
    "unsubscribe",
    "unknown",
    "duplicate",
)
LINKS_ROUTES = (
    "/",
    "/healthz",
    "/u/{token}",
    "/r/{token}",
    "/c/{token}",
    "/signup/{channel}",
    "other",
)
PRUNED_TABLES = ("sync_runs", "audit", "outbox", "bounce_events", "inbound_messages")
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"})
# Runs started but not yet finished, remembered for their duration; more means a leak.
OPEN_RUNS_MAX = 10_000

RUN_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
PASS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
LAG_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600)


def links_route(path: str) -> str:
    """The route template of a links path: the token and anything else a client typed never
    become a label."""
    parts = path.split("/")
    if len(parts) == 3 and parts[1] in ("u", "r", "c") and parts[2]:
        return f"/{parts[1]}/{{token}}"
    if len(parts) == 3 and parts[1] == "signup" and parts[2].isdigit():
        return "/signup/{channel}"
    return path if path in ("/", "/healthz") else "other"


class Metrics:
    """``Metrics(per_channel=False)``: the registry and the instruments that count events."""

    def __init__(self, per_channel: bool = False) -> None:
        self.per_channel = per_channel
        self.registry = CollectorRegistry()
        # The daemon's own CPU, memory (RSS), open files and start time: process_* series.
        ProcessCollector(registry=self.registry)
        channel = ("channel",) if per_channel else ()
        r = self.registry
        self.sync_runs = Counter(
            f"{PREFIX}_runs", "Sync runs finished, by status.", ("status", *channel), registry=r
        )
        self.sync_duration = Histogram(
            f"{PREFIX}_run_duration_seconds",
            "How long a sync run took (started to finished).",
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.sell_requests = Counter(
            f"{PREFIX}_sell_requests",
            "Requests to Zendesk Sell by method and status (or network "
            "failure: timeout, connect, transport); every attempt counts.",
            ("method", "status"),
            registry=r,
        )
        self.sell_rate_limited = Counter(
            f"{PREFIX}_sell_rate_limited", "Sell answers 429 Too Many Requests.", registry=r
        )
        self.sell_retries = Counter(
            f"{PREFIX}_sell_retries",
            "Sell requests tried again after a 429, 5xx or network error.",
            registry=r,
        )
        self.sell_budget_wait = Histogram(
            f"{PREFIX}_sell_budget_wait_seconds",
            "Time a Sell request waited on its token's rate budget.",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.emails = Counter(
            f"{PREFIX}_emails",
            "Emails by result of their send: sent (accepted), failed (for good "
            "or after the last attempt), uncertain (may have left).",
            ("result", *channel),
            registry=r,
        )
        self.bounces = Counter(
            f"{PREFIX}_email_bounces", "Bounces received, hard or soft.", ("kind",), registry=r
        )
        self.complaints = Counter(
            f"{PREFIX}_email_complaints", "Spam complaints (feedback reports) received.", registry=r
        )
        self.inbound = Counter(
            f"{PREFIX}_bounce_mailbox_messages",
            "Messages read from the bounce mailbox, by what they were: hard, soft, message "
            "(only that email failed), delayed, complaint, unsubscribe, unknown, duplicate.",
            ("kind",),
            registry=r,
        )
        self.delivery_pass = Histogram(
            f"{PREFIX}_delivery_pass_duration_seconds",
            "How long a delivery pass (plan and send) took.",
            buckets=PASS_BUCKETS,
            registry=r,
        )
        self.scheduler_lag = Histogram(
            f"{PREFIX}_scheduler_lag_seconds",
            "From a scheduled job being due to its start.",
            ("job",),
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.links_requests = Counter(
            f"{PREFIX}_links_requests",
            "Links service requests by route template and status.",
            ("route", "status"),
            registry=r,
        )
        self.pruned = Counter(
            f"{PREFIX}_retention_pruned_rows",
            "Rows deleted by retention, by table.",
            ("table",),
            registry=r,
        )
        self.last_lag: dict[str, float] = {}  # job -> its latest start lag (healthz)
        self._open_runs: dict[int, float] = {}  # run id -> time.monotonic() at sync.started
        for status in RUN_STATUSES:
            if not per_channel:
                self.sync_runs.labels(status)
        for result in EMAIL_RESULTS:
            if not per_channel:
                self.emails.labels(result)
        for kind in BOUNCE_KINDS:
            self.bounces.labels(kind)
        for table in PRUNED_TABLES:
            self.pruned.labels(table)

    def _channel(self, channel_id: int | None) -> tuple[str, ...]:
        return (str(int(channel_id or 0)),) if self.per_channel else ()

    # ------------------------------------------------------------------ what reports here

    def event(self, event: str, data: Any) -> None:
        """An event this daemon published (not a relayed one): sync runs are counted here,
        whichever code path started or finished them."""
        if event == "sync.started":
            run_id = getattr(data, "id", None)
            if isinstance(run_id, int) and len(self._open_runs) < OPEN_RUNS_MAX:
                self._open_runs[run_id] = time.monotonic()
        elif event == "sync.finished":
            status = getattr(getattr(data, "status", None), "value", None)
            if not isinstance(status, str):
                return
            self.sync_runs.labels(status, *self._channel(getattr(data, "channel_id", None))).inc()
            started = self._open_runs.pop(getattr(data, "id", None), None)  # type: ignore[arg-type]
            if started is not None:
                self.sync_duration.observe(time.monotonic() - started)

    def sell_request(self, method: str, status: str, waited: float, retried: bool) -> None:
        """The Sell client's ``on_request``: one attempt."""
        self.sell_requests.labels(method if method in HTTP_METHODS else "other", status).inc()
        self.sell_budget_wait.observe(waited)
        if status == "429":
            self.sell_rate_limited.inc()
        if retried:
            self.sell_retries.inc()

    def emails_recorded(self, channel_id: int, sent: int, failed: int, uncertain: int) -> None:
        """A batch's outcomes, as the outbox recorded them."""
        for result, n in (("sent", sent), ("failed", failed), ("uncertain", uncertain)):
            if n:
                self.emails.labels(result, *self._channel(channel_id)).inc(n)

    def scheduler_started(self, job: str, lag: float) -> None:
        """The scheduler's ``on_start``: a job started ``lag`` seconds after it was due."""
        self.scheduler_lag.labels(job).observe(lag)
        self.last_lag[job] = lag

    def links_request(self, path: str, status: int) -> None:
        self.links_requests.labels(links_route(path), str(status) if status else "none").inc()

    def bounce_heard(self, kind: str, *, inbound: bool = True) -> None:
        """One bounce, complaint or other message of the bounce mailbox (``inbound``), or a
        relay's refusal at RCPT (``inbound=False``), by ``rules.bounces.Kind`` value."""
        if kind in BOUNCE_KINDS:
            self.bounces.labels(kind).inc()
        elif kind == "complaint":
            self.complaints.inc()
        if inbound and kind in INBOUND_KINDS:
            self.inbound.labels(kind).inc()

    def pruned_rows(self, table: str, rows: int) -> None:
        if rows:
            self.pruned.labels(table).inc(rows)
