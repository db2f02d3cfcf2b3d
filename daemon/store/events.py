"""Events between daemons on one PostgreSQL database: NOTIFY out, LISTEN in.

On PostgreSQL, events reach the subscribers of every daemon (docs/operations.md). Each daemon
keeps one dedicated asyncpg connection (not tortoise's pool) on the store's loop, LISTENs
on ``CHANNEL`` and sends its own events there with ``pg_notify``. A payload is compact
JSON ``{"o": origin daemon id, "n": its sequence number, "e": event, "d": data}``.

PostgreSQL refuses a payload of 8000 bytes or more (``PAYLOAD_LIMIT``). What we send
instead of a larger document:
- a ``users.changed`` whose ``ids`` do not fit is split into several ``users.changed``
  of the same channel, each with a slice of the ids (nothing is lost; receivers already
  take these events in batches);
- any other document is trimmed to its top-level scalars (strings up to 200 characters)
  plus ``"trimmed": true`` — still naming the record (``id``, ``channel``) so a receiver
  can fetch it whole. No document we publish today comes near the limit.

``Relay`` runs on the store's loop for the daemon's lifetime (``run``): it connects,
LISTENs, sends what ``send`` queued (a batch per round trip, in order), pings the
connection when idle, and reconnects with a growing pause when the connection drops
(queued events wait, up to ``QUEUE_LIMIT``; events other daemons sent while it was down
are lost, so ``on_gap`` tells the caller to look again). Arriving notes from other daemons
go to ``deliver`` (a thread-safe callable: it runs on the store's loop); the daemon's own
notes, which PostgreSQL echoes back to it, and any note seen before (by origin and
sequence) are dropped here.

Imports only the standard library, asyncpg (lazily), structlog and ``store.pg``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from .pg import CONNECT_TIMEOUT, PgTarget

log = structlog.get_logger("kuloo.store")

CHANNEL = "kuloo_events"
PAYLOAD_LIMIT = 8000  # bytes; PostgreSQL's payload must be shorter than this
QUEUE_LIMIT = 10_000  # events waiting for the connection; the oldest are dropped beyond it
BATCH = 200  # notifications per round trip
PING_SECONDS = 5.0  # an idle connection is checked this often (a dead peer is found)
QUERY_TIMEOUT = 10.0
SCALAR_MAX = 200  # characters of a string kept in a trimmed document


@dataclass(frozen=True)
class Note:
    origin: str
    n: int
    event: str
    data: Any
    trimmed: bool = False


def _dump(doc: dict[str, Any]) -> str:
    # ASCII only: its length is its size in bytes, and a lone surrogate stays escaped.
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True, default=str)


def _trim(data: Any) -> Any:
    if not isinstance(data, dict):
        return {"trimmed": True}
    kept = {
        k: v
        for k, v in data.items()
        if isinstance(k, str)
        and (
            v is None
            or isinstance(v, bool | int | float)
            or (isinstance(v, str) and len(v) <= SCALAR_MAX)
        )
    }
    return {**kept, "trimmed": True}


def encode(origin: str, first_n: int, event: str, data: Any) -> list[str]:
    """The payloads for one event (usually one; see the module docstring), numbered from
    ``first_n``; each is under ``PAYLOAD_LIMIT`` bytes."""
    text = _dump({"o": origin, "n": first_n, "e": event, "d": data})
    if len(text) < PAYLOAD_LIMIT:
        return [text]
    ids = data.get("ids") if isinstance(data, dict) else None
    if event == "users.changed" and isinstance(ids, list) and len(ids) > 1:
        half = len(ids) // 2
        head = encode(origin, first_n, event, {**data, "ids": ids[:half]})
        return head + encode(origin, first_n + len(head), event, {**data, "ids": ids[half:]})
    text = _dump({"o": origin, "n": first_n, "e": event, "d": _trim(data), "t": 1})
    if len(text) >= PAYLOAD_LIMIT:  # even the scalars are too long: name the event only
        text = _dump(
            {"o": origin, "n": first_n, "e": event[:SCALAR_MAX], "d": {"trimmed": True}, "t": 1}
        )
    return [text]


def decode(payload: str) -> Note | None:
    """A note from a payload, or None when it is not one of ours."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    origin, n, event = doc.get("o"), doc.get("n"), doc.get("e")
    if (
        not isinstance(origin, str)
        or not isinstance(event, str)
        or not isinstance(n, int)
        or isinstance(n, bool)
    ):
        return None
    return Note(origin, n, event, doc.get("d"), bool(doc.get("t")))


class Relay:
    """This daemon's end of ``CHANNEL``; lives on the store's loop (see the module docstring)."""

    def __init__(
        self,
        target: PgTarget,
        origin: str,
        deliver: Callable[[Note], None],
        *,
        on_listening: Callable[[int], None] = lambda _n: None,
        ping_seconds: float = PING_SECONDS,
    ) -> None:
        self.target = target
        self.origin = origin
        self.deliver = deliver
        self.on_listening = (
            on_listening  # called with the connection's number (1, then 2… after a drop)
        )
        self.ping_seconds = ping_seconds
        self.connections = 0
        self.sent = 0
        self.dropped = 0
        self._n = 0
        self._pending: collections.deque[str] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._seen: dict[str, int] = {}  # origin -> highest sequence number delivered

    # -- out ------------------------------------------------------------------

    def send(self, event: str, data: Any) -> None:
        """Queue one event of this daemon for the other daemons (on the store's loop)."""
        payloads = encode(self.origin, self._n + 1, event, data)
        self._n += len(payloads)
        self._pending.extend(payloads)
        while len(self._pending) > QUEUE_LIMIT:
            self._pending.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "events queued for other daemons dropped (no connection)", dropped=self.dropped
                )
        if self._wake is not None:
            self._wake.set()

    async def _flush(self, conn: Any) -> None:
        while self._pending:
            batch = [self._pending[i] for i in range(min(BATCH, len(self._pending)))]
            # One statement, one transaction: delivered together, in this order.
            await asyncio.wait_for(
                conn.execute(
                    "SELECT pg_notify($1, p) FROM unnest($2::text[]) "
                    "WITH ORDINALITY AS t(p, i) ORDER BY i",
                    CHANNEL,
                    batch,
                ),
                QUERY_TIMEOUT,
            )
            for _ in batch:
                self._pending.popleft()
            self.sent += len(batch)

    # -- in -------------------------------------------------------------------

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        note = decode(payload)
        if note is None or note.origin == self.origin:
            return  # not ours to read, or our own event echoed back (already published here)
        if note.n <= self._seen.get(note.origin, 0):
            return  # seen already (a batch resent after a drop)
        self._seen[note.origin] = note.n
        if len(self._seen) > 10_000:  # daemons come and go: forget the oldest
            self._seen.pop(next(iter(self._seen)))
        try:
            self.deliver(note)
        except Exception:  # never let a receiver's failure end the connection
            log.exception("an event from another daemon could not be delivered", event=note.event)

    # -- the connection's life ---------------------------------------------------

    async def run(self) -> None:
        """Listen and send until cancelled, reconnecting after a drop."""
        import asyncpg

        self._wake = asyncio.Event()
        pause = 0.1
        creds = self.target.credentials()
        name = f"kuloo-events {self.origin}"[:63]
        while True:
            try:
                conn = await asyncio.wait_for(
                    asyncpg.connect(
                        **creds, timeout=CONNECT_TIMEOUT, server_settings={"application_name": name}
                    ),
                    CONNECT_TIMEOUT,
                )
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if pause == 0.1:  # once per outage, not per attempt (the store logs the outage too)
                    log.warning(
                        "cannot connect for events; trying again",
                        error=_why(exc),
                        pause_seconds=pause,
                    )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            try:
                await self._serve(conn)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("the events connection dropped; reconnecting", error=_why(exc))
                pause = 0.1
            finally:
                if not conn.is_closed():
                    with contextlib.suppress(Exception):
                        if self._pending:  # stopping: what is queued still goes, briefly
                            with contextlib.suppress(Exception):
                                await asyncio.wait_for(self._flush(conn), 2.0)
                        await asyncio.wait_for(conn.close(), 2.0)
                    if not conn.is_closed():
                        conn.terminate()
            await asyncio.sleep(pause)

    async def _serve(self, conn: Any) -> None:
        assert self._wake is not None
        lost = asyncio.Event()
        wake = self._wake

        def terminated(_conn: Any) -> None:
            lost.set()
            wake.set()

        conn.add_termination_listener(terminated)
        await asyncio.wait_for(conn.add_listener(CHANNEL, self._notified), QUERY_TIMEOUT)
        self.connections += 1
        log.info("listening for other daemons' events", connection=self.connections)
        self.on_listening(self.connections)
        while not lost.is_set():
            await self._flush(conn)
            wake.clear()
            if self._pending:
                continue
            try:
                await asyncio.wait_for(wake.wait(), self.ping_seconds)
            except TimeoutError:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), QUERY_TIMEOUT)
        raise ConnectionResetError("the server closed the events connection")


def _why(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:200]
