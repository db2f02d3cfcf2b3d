"""Whether the store answers: the database unreachable, or its disk full, as the daemon's
own state rather than a traceback per call.

``Store.run`` hands every failure of a unit of work to ``Health.failed``: a failure that
means "the store cannot answer now" — PostgreSQL unreachable (refused, dropped, shutting
down or starting up) or, on SQLite, a full disk (``SQLITE_FULL``, ``ENOSPC``) — becomes
``StoreUnavailable`` (``FULL`` for a full disk), and the first one of an outage logs one
line. The next unit of work that succeeds ends the outage (one line, with its length),
after running the repairs registered meanwhile (``on_recovery``: a sync run the outage
interrupted closed, its lease released) — before that unit's own work, so a new run never
starts beside the one the outage left ``running``.

``StoreUnavailable.quiet`` tells the scheduler not to log a traceback for a job that failed
on it (the outage is logged once here). Imports the standard library, structlog and ``clock``.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog

from ..clock import wall_now

log = structlog.get_logger("kuloo.store")

OK = "ok"
UNAVAILABLE = "unavailable"  # the database is unreachable
FULL = "full"  # the disk under the database is full

MESSAGES = {
    UNAVAILABLE: "the database is unreachable",
    FULL: "the disk under the database is full",
}


class StoreUnavailable(ConnectionError):
    """The store cannot answer now (``state``: ``unavailable`` or ``full``)."""

    quiet = True  # logged once per outage by ``Health``, never per failed job

    def __init__(self, state: str, detail: str = "") -> None:
        super().__init__(MESSAGES[state] + (f" ({detail})" if detail else ""))
        self.state = state
        self.detail = detail


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out and len(out) < 8:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return out


def classify(exc: BaseException) -> str | None:
    """``FULL``, ``UNAVAILABLE`` or None (an ordinary failure: a bug, a constraint)."""
    for e in _chain(exc):
        if isinstance(e, StoreUnavailable):
            return e.state
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return FULL
        if isinstance(e, sqlite3.Error):
            code = getattr(e, "sqlite_errorcode", None)
            if code == sqlite3.SQLITE_FULL:
                return FULL
        if "database or disk is full" in str(e) or "No space left on device" in str(e):
            return FULL
    for e in _chain(exc):
        if isinstance(e, ConnectionError | TimeoutError):
            return UNAVAILABLE
        if isinstance(e, OSError) and e.errno in (
            errno.ECONNREFUSED,
            errno.ECONNRESET,
            errno.EPIPE,
            errno.ENETUNREACH,
            errno.EHOSTUNREACH,
        ):
            return UNAVAILABLE
        name = type(e).__name__
        module = type(e).__module__ or ""
        if module.startswith("asyncpg") and name in (
            "ConnectionDoesNotExistError",
            "InterfaceError",
            "CannotConnectNowError",
            "AdminShutdownError",
            "ConnectionFailureError",
            "CrashShutdownError",
            "ConnectionRejectionError",
            "TooManyConnectionsError",
            "InternalClientError",
        ):
            return UNAVAILABLE
        if name == "DBConnectionError":  # tortoise's, when no connection can be made
            return UNAVAILABLE
        if "connection is closed" in str(e) or "connection was closed" in str(e):
            return UNAVAILABLE
    return None


class Health:
    """The store's state as ``status`` shows it, and the repairs waiting for its return."""

    def __init__(self, where: str = "") -> None:
        self.where = where
        self.state = OK
        self.since: datetime | None = None
        self.detail = ""
        self.failures = 0
        self._repairs: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        self.on_change: list[Callable[[str], None]] = []  # e.g. a full disk's WAL checkpoint

    def document(self) -> dict[str, Any]:
        """``status``' ``store_state``: ``{"state", "since", "message"}``."""
        return {
            "state": self.state,
            "since": self.since.isoformat() if self.since else None,
            "message": MESSAGES.get(self.state, ""),
        }

    def failed(self, exc: BaseException) -> StoreUnavailable | None:
        """The store-unavailable error to raise instead of ``exc`` (None: not an outage)."""
        state = classify(exc)
        if state is None:
            return None
        detail = _short(exc)
        self.failures += 1
        if self.state != state:
            previous, self.state, self.detail = self.state, state, detail
            self.since = wall_now()
            was = {"was": previous} if previous != OK else {}
            if state == FULL:
                log.error(
                    "the disk under the database is full: waiting for room",
                    store=self.where,
                    error=detail,
                    **was,
                )
            else:
                log.error(
                    "the database is unreachable: waiting for it",
                    store=self.where,
                    error=detail,
                    **was,
                )
            for hook in self.on_change:
                hook(state)
        return exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(state, detail)

    def answered(self) -> None:
        if self.state == OK:
            return
        lasted = (wall_now() - self.since).total_seconds() if self.since else 0.0
        log.warning(
            "the database answers again",
            store=self.where,
            was=self.state,
            seconds=round(lasted, 1),
            failed_calls=self.failures,
        )
        self.state, self.since, self.detail, self.failures = OK, None, "", 0
        for hook in self.on_change:
            hook(OK)

    def on_recovery(self, what: str, repair: Callable[[], Awaitable[Any]]) -> None:
        """``repair()`` runs (once) as soon as the store answers again."""
        self._repairs.append((what, repair))

    def take_repairs(self) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
        repairs, self._repairs = self._repairs, []
        return repairs

    @property
    def pending(self) -> bool:
        return bool(self._repairs)


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
