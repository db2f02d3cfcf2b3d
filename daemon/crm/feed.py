"""The change feed: what changed in Sell since the last run, as "record changed / deleted".

Owns the two ways of learning about changes and hides which one is in use:

- **sync** — the Sync API (``POST /v2/sync/start``, ``GET /v2/sync/{id}/queues/main``,
  ``POST /v2/sync/ack``) with a device UUID that is generated once and kept in the state.
- **poll** — when the Sync API is unavailable (403/404 on start: plan or scope), list
  leads and contacts by ``sort_by=updated_at:desc`` down to where the last complete pass
  began. Timestamps have second precision, so a record changed in the second the last
  pass read its first page (and ``overlap`` seconds before it) may have been missed: that
  boundary is re-read and records already delivered there are skipped by a fingerprint
  (id + content hash) kept in the state. The boundary is Sell's own clock at that first
  page (its ``Date`` header, the clock of ``updated_at``), not the newest record seen: a
  burst of changes in one second is re-read once, not by every later poll (the bound of
  a poll that finds k changes is ⌈k/100⌉ pages per kind plus the one that ends it).
  Without a ``Date`` header the newest ``updated_at`` delivered (the watermark) serves
  as the boundary. Polling cannot see deletes: pass ``known_ids`` to
  reconcile (every id is listed; ids missing from the listing are confirmed with an
  ``ids=`` query before a ``RecordDeleted`` is produced).
  While polling, the Sync API is probed again every ``sync_probe_interval`` seconds.

Contract with the caller (the sync engine):

    state = stored_state or new_state()
    async with contextlib.aclosing(feed.batches(state)) as batches:
        async for batch in batches:
            apply(batch.changes)        # idempotently: changes may be delivered again
            persist(batch.state)        # plain JSON-able dict

- Resuming the iteration means "this batch is applied": only then are its Sync API items
  acknowledged and the polling watermark advanced (``batch.state``). A crash, an exception
  or a ``break`` before resuming means the batch is delivered again next run, never lost.
- Every run ends with a batch whose ``final`` is True (possibly with no changes); its
  ``state`` is the one to keep (a new device UUID, a switch to polling, new watermarks).
- Changes: ``RecordChanged(kind, record)`` with ``kind`` "lead"/"contact" and ``record`` a
  ``Lead``/``Contact``; ``RecordDeleted(kind, id)``. A deleted lead may have been
  converted: the caller asks ``lead_conversions(lead_id=...)``. Deletes may name records the
  caller never saw; ignore those.
- Errors (``AuthenticationError`` etc.) propagate; the state of the last resumed batch is
  still valid. Only a refused ``sync/start`` (403/404) switches to polling; a 403 later in a
  session propagates like any other error.
- A Sync API item that cannot be read (no integer id, wrong-typed fields) is logged
  (``sell.feed.unreadable``) and left un-acked, so Sell sends it again next session; it
  neither blocks the feed nor is lost. In polling mode such a record raises
  ``MalformedResponseError`` (skipping it would move the watermark past it).

State shape: ``{"device_uuid": str, "mode": "sync"|"poll", "watermarks": {"lead": iso|None,
"contact": iso|None}, "listed_at": {"lead": iso|None, "contact": iso|None}, "seen": {"lead":
[fingerprint...], "contact": [...]}, "sync_checked_at": iso|None, "sync_unavailable": str|None}``
(``listed_at``: Sell's time at the first page of the last complete pass, None if unknown).

The watermark logic is a pure function (``poll_select``). Imports this package and the
standard library.
"""

from __future__ import annotations

import copy
import email.utils
import hashlib
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog

from ..clock import wall_now
from . import errors as E
from .client import SellClient, parse_record
from .records import (
    RECORD_TYPES,
    Contact,
    Lead,
    RecordFormatError,
    SyncItem,
    SyncSession,
    as_int,
    format_ts,
    parse_ts,
)

log = structlog.get_logger("kuloo.crm")

Kind = Literal["lead", "contact"]
KINDS: tuple[Kind, ...] = ("lead", "contact")
PATHS = {"lead": "/v2/leads", "contact": "/v2/contacts"}


@dataclass(frozen=True)
class RecordChanged:
    kind: str
    record: Lead | Contact

    @property
    def id(self) -> int:
        return self.record.id


@dataclass(frozen=True)
class RecordDeleted:
    kind: str
    id: int


Change = RecordChanged | RecordDeleted


@dataclass
class ChangeBatch:
    changes: list[Change]
    state: dict[str, Any]
    mode: str
    final: bool = False
    ack_keys: list[str] = field(default_factory=list, repr=False)


def new_state(device_uuid: str | None = None) -> dict[str, Any]:
    return {
        "device_uuid": device_uuid or str(uuid.uuid4()),
        "mode": "sync",
        "watermarks": {"lead": None, "contact": None},
        "listed_at": {"lead": None, "contact": None},
        "seen": {"lead": [], "contact": []},
        "sync_checked_at": None,
        "sync_unavailable": None,
    }


def normalize_state(state: Mapping[str, Any] | None) -> dict[str, Any]:
    """A complete state from whatever was stored (missing keys filled, nothing dropped)."""
    out = new_state()
    if state:
        out.update(copy.deepcopy(dict(state)))
    if not out.get("device_uuid"):
        out["device_uuid"] = str(uuid.uuid4())
    if out.get("mode") not in ("sync", "poll"):
        out["mode"] = "sync"
    out["watermarks"] = {k: (out.get("watermarks") or {}).get(k) for k in KINDS}
    out["listed_at"] = {k: (out.get("listed_at") or {}).get(k) for k in KINDS}
    out["seen"] = {k: list((out.get("seen") or {}).get(k) or []) for k in KINDS}
    return out


def fingerprint(record: Lead | Contact) -> str:
    """``id@updated_at#content-hash``: the same record with the same content, delivered."""
    body = json.dumps(record.raw, sort_keys=True, default=str).encode()
    return f"{record.id}@{record.updated_at or ''}#{hashlib.sha1(body).hexdigest()[:16]}"


def _fingerprint_ts(fp: str) -> datetime | None:
    try:
        return parse_ts(fp.split("@", 1)[1].rsplit("#", 1)[0])
    except IndexError:
        return None


@dataclass
class PollStep:
    emit: list[Lead | Contact]
    reached_end: bool  # a record older than the overlap window was seen: stop paging


def poll_select(
    records_desc: Iterable[Lead | Contact],
    watermark: str | None,
    seen: Iterable[str],
    overlap: float,
) -> PollStep:
    """Which records of one page (sorted by updated_at, newest first) are news.

    News: updated after ``watermark - overlap`` and not delivered before with the same
    content. Records without a readable ``updated_at`` are always news. ``watermark`` is
    the boundary of the last pass (``poll_boundary``).
    """
    seen_set = set(seen)
    wm = parse_ts(watermark)
    threshold = wm - timedelta(seconds=overlap) if wm else None
    emit: list[Lead | Contact] = []
    for rec in records_desc:
        ts = rec.updated
        if threshold is not None and ts is not None and ts < threshold:
            return PollStep(emit, True)
        if fingerprint(rec) in seen_set:
            continue
        emit.append(rec)
    return PollStep(emit, False)


def poll_advance(
    watermark: str | None,
    seen: Iterable[str],
    delivered: Iterable[Lead | Contact],
    overlap: float,
    listed_at: datetime | None = None,
) -> tuple[str | None, list[str]]:
    """New watermark and boundary fingerprints after a complete pass over one kind.

    The watermark is the newest ``updated_at`` delivered (never moves back); the
    fingerprints kept are those the next pass re-reads: inside ``overlap`` of the
    boundary, which is ``listed_at`` (Sell's time at the pass's first page) when known,
    else the new watermark.
    """
    records = list(delivered)
    stamps = [r.updated for r in records if r.updated is not None]
    wm = parse_ts(watermark)
    new_wm = max([*stamps, wm] if wm else stamps, default=None)
    boundary = listed_at or new_wm
    if boundary is None:
        return watermark, list(seen)
    threshold = boundary - timedelta(seconds=overlap)
    keep: dict[str, None] = {}
    for fp in [*seen, *(fingerprint(r) for r in records)]:
        ts = _fingerprint_ts(fp)
        if ts is not None and ts >= threshold:
            keep[fp] = None
    return (format_ts(new_wm) if new_wm else watermark), list(keep)


def poll_boundary(state: Mapping[str, Any], kind: str) -> str | None:
    """Where the next pass over ``kind`` may stop (less the overlap): the last pass's
    ``listed_at``, else its watermark."""
    return (state.get("listed_at") or {}).get(kind) or (state.get("watermarks") or {}).get(kind)


def sell_time(date_header: str | None) -> datetime | None:
    """Sell's clock from an HTTP ``Date`` header (None when absent or unreadable)."""
    if not date_header:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(date_header)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else None


def sync_change(item: SyncItem) -> Change | None | Literal[False]:
    """The change a Sync API item carries: None for types that are not ours (acked and
    ignored), False for an item that cannot be read (logged, left un-acked)."""
    cls = RECORD_TYPES.get(item.type)
    if cls is None:
        return None
    try:
        if item.event_type == "deleted":
            rid = as_int(item.data.get("id"))
            if rid is None:
                raise RecordFormatError(f"a deleted {item.type} without an integer id")
            return RecordDeleted(item.type, rid)
        return RecordChanged(item.type, cls.from_data(item.data))
    except RecordFormatError as exc:
        log.warning("feed item unreadable", type=item.type, ack_key=item.ack_key, error=str(exc))
        return False


class ChangeFeed:
    def __init__(
        self,
        client: SellClient,
        *,
        overlap: float = 1.0,
        per_page: int = 100,
        sync_probe_interval: float = 86_400.0,
        max_empty_pages: int = 5,
        now: Callable[[], datetime] = wall_now,
    ) -> None:
        self.client = client
        self.overlap = overlap
        self.per_page = per_page
        self.sync_probe_interval = sync_probe_interval
        self.max_empty_pages = max_empty_pages
        self._now = now

    async def batches(
        self,
        state: Mapping[str, Any] | None,
        *,
        known_ids: Mapping[str, Iterable[int]] | None = None,
    ) -> AsyncGenerator[ChangeBatch, None]:
        """See the module docstring for the contract."""
        st = normalize_state(state)
        if st["mode"] == "poll" and self._probe_due(st):
            st["mode"] = "sync"
        if st["mode"] == "sync":
            # Only a refused *start* means "no Sync API": a 403 later in a session is an
            # error like any other (falling back then would re-list everything).
            try:
                session = await self.client.sync_start(st["device_uuid"])
            except (E.ForbiddenError, E.NotFoundError) as exc:
                reason = f"Sync API unavailable ({exc.status}): polling instead"
                log.info("feed fell back to polling", reason=reason)
                st["mode"] = "poll"
                st["sync_unavailable"] = reason
                st["sync_checked_at"] = format_ts(self._now())
            else:
                st["sync_unavailable"] = None
                async for batch in self._sync(st, session):
                    yield batch
                return
        async for batch in self._poll(st, known_ids):
            yield batch

    def _probe_due(self, st: dict[str, Any]) -> bool:
        checked = parse_ts(st.get("sync_checked_at"))
        if checked is None:
            return True
        return (self._now() - checked).total_seconds() >= self.sync_probe_interval

    # ------------------------------------------------------------------ Sync API mode

    async def _sync(
        self, st: dict[str, Any], session: SyncSession | None
    ) -> AsyncIterator[ChangeBatch]:
        device = st["device_uuid"]
        if session is None:
            yield ChangeBatch([], copy.deepcopy(st), "sync", final=True)
            return
        empty = 0
        pending: list[str] = []
        while True:
            items = await self.client.sync_fetch(session.id, device)
            if items is None:
                break
            if not items:
                empty += 1
                if empty >= self.max_empty_pages:
                    break
                continue
            empty = 0
            changes: list[Change] = []
            keys: list[str] = []
            for item in items:
                change = sync_change(item)
                if change is False:
                    continue  # unreadable: not acked, so Sell sends it again next session
                if item.ack_key:
                    keys.append(item.ack_key)
                if change is not None:
                    changes.append(change)
            if not changes:
                pending.extend(keys)  # nothing to apply (users, deals...): ack with the next batch
                continue
            keys = pending + keys
            pending = []
            yield ChangeBatch(changes, copy.deepcopy(st), "sync", ack_keys=keys)
            # Resumed: the caller applied the batch.
            await self.client.sync_ack(keys, device)
        if pending:
            await self.client.sync_ack(pending, device)
        yield ChangeBatch([], copy.deepcopy(st), "sync", final=True)

    # ------------------------------------------------------------------ polling mode

    async def _poll(
        self, st: dict[str, Any], known_ids: Mapping[str, Iterable[int]] | None
    ) -> AsyncIterator[ChangeBatch]:
        for kind in KINDS:
            known = set(known_ids.get(kind, ())) if known_ids else None
            async for batch in self._poll_kind(st, kind, known):
                yield batch
        yield ChangeBatch([], copy.deepcopy(st), "poll", final=True)

    async def _poll_kind(
        self, st: dict[str, Any], kind: str, known: set[int] | None
    ) -> AsyncIterator[ChangeBatch]:
        cls = RECORD_TYPES[kind]
        parse: Callable[[dict[str, Any]], Lead | Contact] = cls.from_data
        watermark = st["watermarks"].get(kind)
        boundary = poll_boundary(st, kind)
        seen = st["seen"].get(kind) or []
        listed_at: datetime | None = None
        first = True
        delivered: list[Lead | Contact] = []
        listed: set[int] = set()
        params: dict[str, Any] = {"sort_by": "updated_at:desc", "per_page": self.per_page}
        stop_early = known is None  # a reconciliation lists everything
        emitted_ids: set[int] = set()
        async for page in self.client.pages(PATHS[kind], params, per_page=self.per_page):
            if first:  # no checkpoint since the first page's answer: its Date is ours
                listed_at, first = sell_time(self.client.last_date), False
            records = [parse_record(parse, d, "GET", PATHS[kind]) for d in page]
            listed.update(r.id for r in records)
            step = poll_select(records, boundary, seen, self.overlap)
            # Paging while records change can show one twice: deliver it once per pass.
            fresh = [r for r in step.emit if r.id not in emitted_ids]
            emitted_ids.update(r.id for r in fresh)
            delivered.extend(fresh)
            if fresh:
                yield ChangeBatch(
                    [RecordChanged(kind, r) for r in fresh], copy.deepcopy(st), "poll"
                )
            if step.reached_end and stop_early:
                break
        if first:  # an empty listing: no page was yielded, the last answer is still ours
            listed_at = sell_time(self.client.last_date)
        deletes: list[Change] = []
        if known is not None:
            missing = sorted(i for i in known - listed)
            gone = await self._confirm_missing(kind, missing)
            deletes = [RecordDeleted(kind, i) for i in gone]
        new_wm, new_seen = poll_advance(watermark, seen, delivered, self.overlap, listed_at)
        st["watermarks"][kind] = new_wm
        st["listed_at"][kind] = format_ts(listed_at) if listed_at else None
        st["seen"][kind] = new_seen
        if deletes:
            yield ChangeBatch(deletes, copy.deepcopy(st), "poll")

    async def _confirm_missing(self, kind: str, missing: list[int]) -> list[int]:
        """Ids absent from a listing that an ``ids=`` query confirms are gone (paging while
        records are deleted can skip a live record; it must not become a delete)."""
        gone: list[int] = []
        for start in range(0, len(missing), 100):
            chunk = missing[start : start + 100]
            found: set[int] = set()
            async for page in self.client.pages(PATHS[kind], {"ids": chunk}, per_page=100):
                found.update(i for i in (as_int(d.get("id")) for d in page) if i is not None)
            gone.extend(i for i in chunk if i not in found)
        return gone
