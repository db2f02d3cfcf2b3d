"""The sync engine's units of work: one crossing of the store bridge each.

The engine (``sync.engine``) reads Sell and writes Sell; everything it decides about the
Kuloo side happens here, inside one transaction per unit, with the pure rules of
``sync`` (``linking.decide``, ``merge.merge``, ``caps``, ``texts``):

- ``begin_run``: a ``running`` run row, and what the run needs (token, plan, feed state,
  the linked record ids) — or a finished ``skipped`` run when the channel cannot sync.
- ``apply_batch``: one batch of the change feed — deletions (with their lead
  conversions) first, then records: users linked, imported, merged, errors recorded, the
  feed state kept — and the Sell writes that follow from it. The batch is committed
  here before the engine acknowledges it to Sell. Users are read and written inside the
  transaction (locked where the database can), so a user changed meanwhile by a link
  click or an admin is merged as it is now: an opt-out is never overwritten.
- ``plan_pushes``: Kuloo-side changes of linked users, and users to push as new leads
  (their intent stamped in ``crm_push_at`` before any POST).
- ``confirm_writes`` / ``link_pushed``: what Sell accepted (the merge base moves only
  then) and what it refused (Sync errors, retried ``batch_retries`` times).
- ``finish_run``, ``runs``, ``errors``: the run history and ``sync.errors``.

User rows change only through ``store.users`` (``apply_changes``/``insert``: audit log,
change times, revision). Portable tortoise queries only (SQLite and PostgreSQL).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tortoise.expressions import Q
from tortoise.functions import Max
from tortoise.transactions import in_transaction

from ..rules import caps, linking, texts
from ..rules.linking import LinkIndex, RecordRef, UserRef
from ..rules.merge import KULOO, merge
from ..rules.values import (
    EMAIL,
    FIELD_NAMES,
    KULOO_ID,
    PROMO,
    SUBSCRIPTION,
    SYNC_ERROR,
    kuloo_attrs,
    kuloo_values,
    normalize_email,
)
from ..secrets import Secret
from ..vocabulary import (
    Actor,
    ConnectionStatus,
    CrmKind,
    InvalidEmail,
    Plan,
    Source,
    SyncRunStatus,
    normalise_email,
    sync_run_finish,
    to_kuloo,
)
from . import NotFound
from . import users as user_store
from .models import Channel as ChannelRow
from .models import SyncError, SyncRun
from .models import User as UserRow

COUNT_KEYS = ("pulled", "users_created", "users_updated", "leads_created", "sell_updated", "conflicts",
              "errors", "requests")

# Error codes (SyncError.code): which rule put the error there.
E_DUPLICATE = "duplicate"
E_TAMPERED = "tampered"
E_UNKNOWN_ID = "unknown_kuloo_id"
E_NO_EMAIL = "no_email"
E_CAP = "plan_cap"
E_VALUE = "bad_value"
E_REFUSED = "sell_refused"
E_ORG_ONLY = "organization_only"
E_CONVERTED = "converted_into_linked"
# Errors that keep a user from being pushed as a new lead until the cause is gone.
BLOCKS_PUSH = frozenset({E_ORG_ONLY, E_CONVERTED})

# Which user attributes a field's Kuloo change time is read from.
FIELD_ATTRS = {PROMO: ("promo_tags",), SUBSCRIPTION: ("frequency", "unsubscribed"), "email": ("email",),
               "first_name": ("first_name",), "last_name": ("last_name",)}
IMPORTED = (PROMO, SUBSCRIPTION, "first_name", "last_name")  # the fields a new user takes from Sell


# ----------------------------------------------------------------------------- plain data in and out


@dataclass(frozen=True)
class RecordIn:
    """A Lead or Contact as the engine read it, in canonical values (``values.sell_values``)."""

    kind: str
    id: int
    values: dict[str, Any]
    email: str | None  # as spelled in Sell (trimmed)
    updated_at: datetime | None
    is_organization: bool = False
    cleaned: tuple[str, ...] = ()  # fields whose text was cleaned as it was read (``crm.records``)

    def cleaning_note(self, fields: Iterable[str]) -> str:
        """The audit words for ``fields`` applied to a user after cleaning ("" if none was)."""
        names = [n for n in fields if n in self.cleaned]
        return f"; control characters removed from Sell's {', '.join(names)}" if names else ""


@dataclass(frozen=True)
class ConversionIn:
    lead_id: int
    individual_id: int | None
    organization_id: int | None
    contact: RecordIn | None  # the contact the lead became, read from Sell


@dataclass(frozen=True)
class DeletionIn:
    kind: str
    id: int
    conversion: ConversionIn | None = None


@dataclass(frozen=True)
class SellWrite:
    """A partial PUT: only ``fields`` (canonical values), Promo in the user's order."""

    kind: str
    id: int
    fields: dict[str, Any]
    user_id: int | None
    promo_order: tuple[str, ...] = ()
    email: str = ""


@dataclass(frozen=True)
class PushIn:
    user_id: int
    kuloo_id: str
    email: str
    values: dict[str, Any]  # what the new lead carries (canonical)
    promo_order: tuple[str, ...]
    look_up_first: bool  # a POST may already have been sent for this user


@dataclass
class Outcome:
    writes: list[SellWrite] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    changed_users: list[int] = field(default_factory=list)
    linked: list[tuple[str, int]] = field(default_factory=list)
    unlinked: list[tuple[str, int]] = field(default_factory=list)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def touched(self, user_id: int) -> None:
        if user_id not in self.changed_users:
            self.changed_users.append(user_id)


@dataclass(frozen=True)
class RunDoc:
    id: int
    channel_id: int
    status: SyncRunStatus
    reason: str
    error: str
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, int]
    daemon_id: str = ""  # PostgreSQL: the daemon that ran it (store.leases)
    retry_at: datetime | None = None  # rate_limited: when Sell takes requests again


@dataclass(frozen=True)
class RunStart:
    run: RunDoc
    token: Secret | None
    plan: Plan
    sequential_tags: tuple[str, ...]
    add_all: bool
    feed_state: dict[str, Any]
    linked_ids: dict[str, list[int]]
    retry_at: datetime | None = None  # the previous run's: Sell rate-limited it until then


@dataclass(frozen=True)
class PushPlan:
    updates: list[SellWrite]
    creates: list[PushIn]
    refused: int


@dataclass(frozen=True)
class ErrorDoc:
    id: int
    user_id: int | None
    crm_kind: str | None
    crm_id: int | None
    email: str
    code: str
    error: str
    updated_at: datetime


# ----------------------------------------------------------------------------- helpers


def payload_key(fields: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _run_doc(row: SyncRun) -> RunDoc:
    counts = {k: int((row.counts or {}).get(k, 0)) for k in COUNT_KEYS}
    return RunDoc(row.id, row.channel_id, SyncRunStatus(row.status), row.reason, row.error,  # type: ignore[attr-defined]
                  row.started_at, row.finished_at, counts, row.daemon_id, row.retry_at)


# The columns ``user_view`` reads: a query for the merge need not read (and parse) the rest.
VIEW_COLUMNS = ("id", "kuloo_id", "email", "first_name", "last_name", "source", "frequency", "unsubscribed",
                "promo_tags", "last_active", "sync_error")


def user_view(row: UserRow, sync_error: str | None = None) -> dict[str, Any]:
    """The attributes ``values.kuloo_values`` reads, from a user row."""
    return {"kuloo_id": row.kuloo_id, "email": row.email, "first_name": row.first_name,
            "last_name": row.last_name, "source": row.source, "frequency": row.frequency,
            "unsubscribed": row.unsubscribed, "promo_tags": list(row.promo_tags or ()),
            "last_active": row.last_active, "sync_error": row.sync_error if sync_error is None else sync_error}


def _view_of(values: Mapping[str, Any]) -> dict[str, Any]:
    """``user_view`` of a row read as plain values (``VIEW_COLUMNS``)."""
    view = {k: values[k] for k in VIEW_COLUMNS if k != "id"}
    view["promo_tags"] = list(values["promo_tags"] or ())
    return view


def _changed_at(row: UserRow) -> dict[str, datetime | None]:
    stamps = row.changed_at or {}
    out: dict[str, datetime | None] = {}
    for name, attrs in FIELD_ATTRS.items():
        times = [datetime.fromisoformat(stamps[a]) for a in attrs if stamps.get(a)]
        out[name] = max(times) if times else row.created_at
    return out


def _ref(row: UserRow) -> UserRef:
    link = (row.crm_kind, int(row.crm_id)) if row.crm_kind and row.crm_id is not None else None
    return UserRef(row.id, row.kuloo_id, row.email_key or normalize_email(row.email) or "", link)


async def _channel(channel_id: int) -> ChannelRow:
    row = await ChannelRow.get_or_none(id=channel_id)
    if row is None:
        raise NotFound(f"no channel with id {channel_id}")
    return row


async def _linked_count(channel_id: int) -> int:
    return await UserRow.filter(channel_id=channel_id, crm_id__not_isnull=True).count()


async def _suspended(channel_id: int, cap: int | None) -> set[int]:
    """Users whose links are past a lowered plan's cap: the newest links (caps.select)."""
    if cap is None:
        return set()
    linked = await _linked_count(channel_id)
    if linked <= cap:
        return set()
    ids = await UserRow.filter(channel_id=channel_id, crm_id__not_isnull=True).order_by(
        "-crm_linked_at", "-id").limit(linked - cap).values_list("id", flat=True)
    return set(ids)


async def _set_error(channel_id: int, now: datetime, *, user: UserRow | None, kind: str | None, crm_id: int | None,
                     email: str, code: str, text: str, key: str = "") -> bool:
    """Record an error (one row per user, or per record without a user); True when new or changed."""
    query = (SyncError.filter(user_id=user.id) if user is not None
             else SyncError.filter(channel_id=channel_id, user_id=None, crm_kind=kind, crm_id=crm_id))
    existing = await query.first()
    changed = True
    if existing is None:
        await SyncError.create(channel_id=channel_id, user_id=user.id if user else None, crm_kind=kind, crm_id=crm_id,
                               email=email, code=code, error=text, payload_key=key, created_at=now, updated_at=now)
    else:
        changed = (existing.code, existing.error, existing.crm_kind, existing.crm_id) != (code, text, kind, crm_id)
        same_write = existing.payload_key == key and existing.code == code
        existing.attempts = existing.attempts + 1 if same_write else 1
        existing.code, existing.error, existing.crm_kind, existing.crm_id = code, text, kind, crm_id
        existing.email, existing.payload_key, existing.updated_at = email, key, now
        await existing.save()
    if user is not None and user.sync_error != text:
        user.sync_error = text
        user.updated_at = now
        await user.save(update_fields=["sync_error", "updated_at"])
    return changed


async def _clear_errors(channel_id: int, user: UserRow | None, kind: str | None, crm_id: int | None) -> bool:
    """Errors clear themselves when their cause is gone; True when there was one."""
    cleared = 0
    if kind is not None and crm_id is not None:
        cleared += await SyncError.filter(channel_id=channel_id, user_id=None, crm_kind=kind, crm_id=crm_id).delete()
    if user is not None:
        cleared += await SyncError.filter(user_id=user.id).delete()
        if user.sync_error:
            user.sync_error = ""
            await user.save(update_fields=["sync_error"])
            cleared += 1
    return bool(cleared)


async def _audit(row: UserRow, name: str, old: Any, new: Any, note: str, now: datetime) -> None:
    await user_store.audit_entry(row, name, old, new, actor=Actor.SYNC, now=now, note=note).save()


def _unlink(row: UserRow) -> None:
    row.crm_kind = None
    row.crm_id = None
    row.crm_linked_at = None
    row.synced_values = {}


async def _save_link(row: UserRow) -> None:
    await row.save(update_fields=["crm_kind", "crm_id", "crm_linked_at", "synced_values", "crm_push_at"])


# ----------------------------------------------------------------------------- runs


async def begin_run(channel_id: int, now: datetime) -> RunStart:
    """A new run; ``skipped`` at once (with the reason) when the channel cannot sync now."""
    async with in_transaction():
        channel = await _channel(channel_id)
        last = SyncRun.filter(channel_id=channel_id).order_by("-id").first()
        previous = await last.values_list("retry_at")  # rate_limited: probe first until then
        row = await SyncRun.create(channel_id=channel_id, started_at=now, status=SyncRunStatus.RUNNING.value,
                                   counts={})
        reason = error = ""
        if not channel.sell_token:
            reason, error = "no_token", "no Zendesk Sell API token: set one on the channel to sync"
        elif channel.connection_status != ConnectionStatus.VERIFIED.value:
            reason = f"connection_{channel.connection_status}"
            error = f"the Sell connection is {channel.connection_status}: fix it and verify the channel"
        if reason:
            row.status = sync_run_finish(SyncRunStatus.RUNNING, SyncRunStatus.SKIPPED).value
            row.reason, row.error, row.finished_at = reason, error, now
            await row.save()
            channel.sync_status, channel.last_sync_at = f"skipped: {error}", now
            await channel.save(update_fields=["sync_status", "last_sync_at"])
        linked = await UserRow.filter(channel_id=channel_id, crm_id__not_isnull=True).values_list("crm_kind", "crm_id")
    ids: dict[str, list[int]] = {"lead": [], "contact": []}
    for kind, crm_id in linked:
        ids.setdefault(kind, []).append(int(crm_id))
    return RunStart(_run_doc(row), Secret(channel.sell_token) if channel.sell_token else None, Plan(channel.plan),
                    tuple(channel.sequential_tags or ()), channel.add_all_users_to_crm, dict(channel.sync_state or {}),
                    ids, previous[0] if previous else None)


async def finish_run(run_id: int, status: SyncRunStatus, reason: str, error: str, counts: Mapping[str, int],
                     feed_state: Mapping[str, Any] | None, now: datetime,
                     retry_at: datetime | None = None) -> RunDoc:
    async with in_transaction():
        row = await SyncRun.get(id=run_id)
        row.status = sync_run_finish(SyncRunStatus(row.status), status).value
        row.reason, row.error, row.finished_at, row.retry_at = reason, error, now, retry_at
        row.counts = {k: int(counts.get(k, 0)) for k in COUNT_KEYS}
        await row.save()
        channel = await _channel(row.channel_id)  # type: ignore[attr-defined]
        channel.last_sync_at = now
        channel.sync_status = status.value + (f": {reason}" if reason else "")
        update = ["last_sync_at", "sync_status"]
        if feed_state is not None:
            channel.sync_state = dict(feed_state)
            update.append("sync_state")
        await channel.save(update_fields=update)
    return _run_doc(row)


async def runs(channel_id: int, limit: int) -> list[RunDoc]:
    await _channel(channel_id)
    return [_run_doc(r) for r in await SyncRun.filter(channel_id=channel_id).order_by("-id").limit(limit)]


async def last_run(channel_id: int) -> RunDoc | None:
    row = await SyncRun.filter(channel_id=channel_id).order_by("-id").first()
    return _run_doc(row) if row else None


async def errors(channel_id: int, after: int | None, limit: int) -> tuple[list[ErrorDoc], int | None]:
    await _channel(channel_id)
    query = SyncError.filter(channel_id=channel_id)
    if after is not None:
        query = query.filter(id__gt=after)
    rows = await query.order_by("id").limit(limit + 1)
    docs = [ErrorDoc(r.id, r.user_id, r.crm_kind, int(r.crm_id) if r.crm_id is not None else None,  # type: ignore[attr-defined]
                     r.email, r.code, r.error, r.updated_at) for r in rows[:limit]]
    return docs, (docs[-1].id if len(rows) > limit else None)


async def error_count(channel_id: int) -> int:
    """How many Sync errors the channel has, all pages together (one COUNT, no rows read)."""
    return await SyncError.filter(channel_id=channel_id).count()


async def sync_schedule_inputs(channel_id: int | None = None) -> list[tuple[int, Plan, datetime | None, datetime | None]]:
    """Verified channels (or the one ``channel_id``): (id, plan, last run's start, when it
    was verified). Three queries whatever the number of channels."""
    channels = ChannelRow.filter(sell_token__not_isnull=True, connection_status=ConnectionStatus.VERIFIED.value)
    runs = SyncRun.exclude(status=SyncRunStatus.SKIPPED.value)
    if channel_id is not None:
        channels, runs = channels.filter(id=channel_id), runs.filter(channel_id=channel_id)
    rows = await channels.only("id", "plan", "verified_at")
    last_ids = await runs.annotate(last=Max("id")).group_by("channel_id").values_list("last", flat=True)
    started = dict(await SyncRun.filter(id__in=list(last_ids)).values_list("channel_id", "started_at"))
    return [(ch.id, Plan(ch.plan), started.get(ch.id), ch.verified_at) for ch in rows]


# ----------------------------------------------------------------------------- a batch of the change feed


def _users_matching(channel_id: int, records: Sequence[RecordIn], keys: Sequence[tuple[str, int]]) -> Any:
    """The query for the channel's users these records may belong to: by link, KulooId, email."""
    kuloo_ids = [r.values.get(KULOO_ID) for r in records if r.values.get(KULOO_ID)]
    emails = [e for r in records if (e := normalize_email(r.email))]
    # "" matches no row (PostgreSQL refuses a NUL in text, the old sentinel). The channel is
    # in each branch of the OR, so that each one is a search of its own index (SQLite's
    # multi-index OR, PostgreSQL's bitmap OR): with it outside, SQLite reads every user of
    # the channel for each batch.
    q = Q(channel_id=channel_id, kuloo_id__in=kuloo_ids or [""]) | Q(channel_id=channel_id,
                                                                       email_key__in=emails or [""])
    for kind in ("lead", "contact"):
        ids = [i for k, i in keys if k == kind]
        if ids:
            q |= Q(channel_id=channel_id, crm_kind=kind, crm_id__in=ids)
    return UserRow.filter(q)


def _errors_matching(channel_id: int, keys: Sequence[tuple[str, int]], user_ids: Sequence[int]) -> Any:
    """The query for the errors of these records (those without a user) and of these users
    (the channel's), each branch of the OR a search of its own index (as in ``_users_matching``);
    None when there is nothing to look for."""
    branches = [Q(channel_id=channel_id, crm_kind=kind, crm_id__in=[i for k, i in keys if k == kind], user_id=None)
                for kind in sorted({k for k, _i in keys})]
    if user_ids:
        branches.append(Q(user_id__in=list(user_ids)))
    return SyncError.filter(Q(*branches, join_type="OR")) if branches else None


def _record_ref(rec: RecordIn) -> RecordRef:
    return RecordRef(rec.kind, rec.id, rec.values.get(KULOO_ID), normalize_email(rec.email), rec.is_organization)


async def conversion_lookups(channel_id: int, records: Sequence[RecordIn], unmatched_contacts: bool = False,
                             ) -> list[tuple[RecordIn, int | None, tuple[str, int] | None]]:
    """Records that collide with a user linked to the other kind (``linking.conversion_lookup``):
    (record, the lead whose conversions to read, the user's link); with ``unmatched_contacts``,
    also the contacts that match no user (``linking.may_be_converted``): (contact, None, None),
    whose own conversions are read. Read-only."""
    if not records:
        return []
    rows = await _users_matching(channel_id, records, [(r.kind, r.id) for r in records])
    index = LinkIndex.of([_ref(row) for row in rows])
    out: list[tuple[RecordIn, int | None, tuple[str, int] | None]] = []
    for rec in records:
        ref = _record_ref(rec)
        d = linking.decide(ref, index)
        lead_id = linking.conversion_lookup(rec.kind, rec.id, d)
        if lead_id is not None:
            out.append((rec, lead_id, d.other))
        elif unmatched_contacts and linking.may_be_converted(ref, d):
            out.append((rec, None, None))
    return out


class _Batch:
    """One ``apply_batch`` call's working state (inside its transaction)."""

    def __init__(self, channel: ChannelRow, now: datetime, retries: int) -> None:
        self.channel = channel
        self.now = now
        self.retries = retries
        self.tags = set(channel.sequential_tags or ())
        self.cap = caps.cap_of(channel.plan)
        self.out = Outcome()
        self.rows: dict[int, UserRow] = {}
        self.index = LinkIndex()
        self.linked = 0
        self.user_errors: dict[int, SyncError] = {}
        self.suspended: set[int] = set()
        self.record_errors: set[tuple[str | None, int]] = set()
        self.pending: list[Any] = []  # imported users' tags and first audit entries, inserted together
        self.pending_users: set[int] = set()
        self.imports: list[tuple[UserRow, RecordIn]] = []  # new users, not inserted yet
        self.writes = user_store.RowWrites()  # merged users' UPDATEs, written together before the commit

    async def flush(self) -> None:
        if self.pending:
            await user_store.save_pending(self.pending)
        self.pending_users.clear()

    def audit(self, row: UserRow, name: str, old: Any, new: Any, note: str) -> None:
        """An audit entry, inserted with the batch's others (``flush``): every entry of the
        batch goes through ``pending`` in order, so a user's log keeps its order."""
        self.pending.append(user_store.audit_entry(row, name, old, new, actor=Actor.SYNC, now=self.now, note=note))

    async def load(self, records: Sequence[RecordIn], deletions: Sequence[DeletionIn]) -> None:
        cid = self.channel.id
        keys = [(r.kind, r.id) for r in records] + [(d.kind, d.id) for d in deletions]
        keys += [("contact", d.conversion.individual_id) for d in deletions
                 if d.conversion and d.conversion.individual_id is not None]
        rows = await _users_matching(cid, records, keys).select_for_update()
        for row in rows:
            self.rows[row.id] = row
            self.index.put(_ref(row))
        if self.cap is not None:  # no cap, no count to keep (``_room``)
            self.linked = await _linked_count(cid)
            self.suspended = await _suspended(cid, self.cap)
        # The errors this batch may clear, read once (most records have none).
        query = _errors_matching(cid, keys, list(self.rows))
        for e in await query if query is not None else ():
            if e.user_id is not None:  # type: ignore[attr-defined]
                self.user_errors[e.user_id] = e  # type: ignore[attr-defined]
            else:
                self.record_errors.add((e.crm_kind, int(e.crm_id)))

    async def clear(self, user: UserRow | None, kind: str | None, crm_id: int | None) -> bool:
        """``_clear_errors``, skipped when this batch knows there is nothing to clear."""
        known = (user is not None and (user.id in self.user_errors or user.sync_error)) or \
            (kind, crm_id) in self.record_errors
        if not known:
            return False
        if user is not None:
            self.user_errors.pop(user.id, None)
        self.record_errors.discard((kind, crm_id))
        return await _clear_errors(self.channel.id, user, kind, crm_id)

    def _sync_write(self, rec: RecordIn, fields: dict[str, Any], user: UserRow | None) -> None:
        if fields:
            self.out.writes.append(SellWrite(rec.kind, rec.id, fields, user.id if user else None,
                                             tuple(user.promo_tags or ()) if user else (), rec.email or ""))

    async def record_error(self, rec: RecordIn, code: str, text: str, user: UserRow | None = None) -> None:
        """A record that does not sync: the error kept, and written to its Sync error field."""
        if await _set_error(self.channel.id, self.now, user=user, kind=rec.kind, crm_id=rec.id,
                            email=rec.email or "", code=code, text=text):
            self.out.add("errors")
        if user is not None:
            self.out.touched(user.id)
            self.user_errors[user.id] = await SyncError.filter(user_id=user.id).first()
        else:
            self.record_errors.add((rec.kind, rec.id))
        if rec.values.get(SYNC_ERROR) != text:
            self._sync_write(rec, {SYNC_ERROR: text}, None)

    # -- deletions and conversions

    async def deletion(self, d: DeletionIn) -> RecordIn | None:
        """Apply one deletion; returns the contact to merge when the lead was converted."""
        ref = self.index.by_link.get((d.kind, d.id))
        await SyncError.filter(channel_id=self.channel.id, user_id=None, crm_kind=d.kind, crm_id=d.id).delete()
        if ref is None:
            return None
        row = self.rows[ref.id]
        conv = d.conversion
        old = (d.kind, d.id)
        follow = linking.follow_conversion(ref, conv.individual_id, self.index) if conv is not None else None
        if follow is not None and follow.action == linking.CONVERTED_INTO_LINKED:
            # Merged into a contact another user has: that link stays; this user stops.
            _unlink(row)
            await _save_link(row)
            self.index.relink(row.id, None)
            self.out.unlinked.append(old)
            await _set_error(self.channel.id, self.now, user=row, kind=None, crm_id=None, email=row.email,
                             code=E_CONVERTED, text=texts.converted_into_linked_contact(
                                 d.id, conv.individual_id, follow.holder.email))
            self.audit(row, "crm", f"lead {d.id}", None, f"lead converted in Sell into contact "
                       f"{conv.individual_id}, already synced with {follow.holder.email}: sync stopped")
            self.out.add("errors")
            self.out.touched(row.id)
            return None
        if follow is not None and follow.action == linking.FOLLOW:
            # Follow the user to the contact. Fields the contact lacks take Kuloo's values
            # (their base is the blank), the others merge as usual: a contact with another
            # email is a Sell-side change of the user's email, not a new identity.
            contact = conv.contact
            base = dict(row.synced_values or {})
            if contact is not None:
                for name in FIELD_NAMES:
                    if contact.values.get(name) is None:
                        base[name] = None
            row.crm_kind, row.crm_id = CrmKind.CONTACT.value, conv.individual_id
            row.synced_values = base
            await _save_link(row)
            self.index.relink(row.id, ("contact", conv.individual_id))
            self.out.unlinked.append(old)
            self.out.linked.append(("contact", conv.individual_id))
            self.audit(row, "crm", f"lead {d.id}", f"contact {conv.individual_id}",
                       "lead converted in Sell: following the user to the contact")
            self.out.touched(row.id)
            return contact
        _unlink(row)
        await _save_link(row)
        self.index.relink(row.id, None)
        self.out.unlinked.append(old)
        self.out.touched(row.id)
        if conv is not None:  # converted to an organization only: never re-pushed
            await _set_error(self.channel.id, self.now, user=row, kind=None, crm_id=None, email=row.email,
                             code=E_ORG_ONLY, text=texts.organization_only_conversion(d.id, conv.organization_id))
            self.out.add("errors")
            return None
        again = row.add_to_crm or self.channel.add_all_users_to_crm
        self.audit(row, "crm", f"{d.kind} {d.id}", None, "deleted in Sell: " + ("pushed again as a new lead" if again
                                                             else "sync stopped for this user"))
        return None

    # -- records

    async def record(self, rec: RecordIn) -> None:
        d = linking.decide(_record_ref(rec), self.index)
        if d.action == linking.IGNORE:
            return
        if EMAIL in rec.cleaned:  # an address is never rewritten: it would mail someone else
            user = self.rows[d.user.id] if d.action in (linking.MERGE, linking.TAMPERED) else None
            await self.record_error(rec, E_VALUE, texts.email_control_characters(), user)
            return
        if d.action == linking.MERGE and d.user.id in self.suspended:
            # The plan was lowered below the links it has: the newest wait, linked, for room.
            await self.record_error(rec, E_CAP, texts.plan_cap(Plan(self.channel.plan)), self.rows[d.user.id])
        elif d.action == linking.MERGE:
            await self.merge(self.rows[d.user.id], rec)
        elif d.action == linking.TAMPERED:
            row = self.rows[d.user.id]
            await self.record_error(rec, E_TAMPERED, texts.kuloo_id_changed(d.expected, rec.values.get(KULOO_ID)), row)
        elif d.action == linking.DUPLICATE:
            kind, crm_id = d.other
            text = (texts.duplicate_kuloo_id(d.user.kuloo_id, kind, crm_id) if rec.values.get(KULOO_ID)
                    else texts.duplicate_email(rec.email or "", kind, crm_id))
            await self.record_error(rec, E_DUPLICATE, text)
        elif d.action == linking.UNKNOWN_KULOO_ID:
            await self.record_error(rec, E_UNKNOWN_ID, texts.unknown_kuloo_id(rec.values[KULOO_ID]))
        elif d.action == linking.NO_EMAIL:
            await self.record_error(rec, E_NO_EMAIL, texts.no_email())
        elif d.action == linking.LINK:
            if not self._room():
                await self.record_error(rec, E_CAP, texts.plan_cap(Plan(self.channel.plan)))
                return
            row = self.rows[d.user.id]
            row.crm_kind, row.crm_id, row.crm_linked_at = rec.kind, rec.id, self.now
            row.synced_values, row.crm_push_at = {}, None
            await _save_link(row)
            self.index.relink(row.id, (rec.kind, rec.id))
            self.linked += 1
            self.out.linked.append((rec.kind, rec.id))
            self.audit(row, "crm", None, f"{rec.kind} {rec.id}", "linked to the Sell record")
            await self.merge(row, rec)
        elif d.action == linking.IMPORT:
            if not self._room():
                await self.record_error(rec, E_CAP, texts.plan_cap(Plan(self.channel.plan)))
                return
            await self.import_record(rec)

    def _room(self) -> bool:
        return self.cap is None or self.linked < self.cap

    async def import_record(self, rec: RecordIn) -> None:
        try:
            email = normalise_email(rec.email or "")
        except InvalidEmail as exc:
            await self.record_error(rec, E_VALUE, texts.one_line(f"Not synced: {exc}"))
            return
        try:
            attrs = kuloo_attrs({n: rec.values.get(n) for n in IMPORTED})
        except ValueError as exc:
            await self.record_error(rec, E_VALUE, texts.one_line(f"Not synced: {exc}"))
            return
        bad = [t for t in attrs.get("promo_tags", []) if t not in self.tags]
        if bad:
            await self.record_error(rec, E_VALUE, texts.bad_value(PROMO, bad[0], tuple(self.channel.sequential_tags)))
            return
        fields = {"email": email, "source": Source.SYNC.value, "add_to_crm": False, "crm_kind": rec.kind,
                  "crm_id": rec.id, "crm_linked_at": self.now, "synced_values": dict(rec.values), **attrs}
        fields.setdefault("frequency", "weekly")
        row = user_store.new_row(self.channel.id, fields, self.now, checked=False)
        # Inserted with the batch's other imports (``save_imports``); until then the index
        # knows it by a provisional id, enough to call a later record with its email or
        # KulooId a duplicate of this one.
        self.index.put(UserRef(-1 - len(self.imports), row.kuloo_id, row.email_key, (rec.kind, rec.id)))
        self.imports.append((row, rec))
        self.linked += 1
        self.out.linked.append((rec.kind, rec.id))
        self.out.add("users_created")
        await self.clear(None, rec.kind, rec.id)

    async def save_imports(self) -> None:
        """The users this batch imports: inserted together, then merged with their records."""
        imports, self.imports = self.imports, []
        await user_store.insert_many([(row, f"added from Sell {rec.kind} {rec.id}"
                                       + rec.cleaning_note(IMPORTED)) for row, rec in imports],
                                     actor=Actor.SYNC, now=self.now, pending=self.pending)
        for row, rec in imports:
            self.rows[row.id] = row
            self.index.put(_ref(row))
            self.pending_users.add(row.id)
            self.out.touched(row.id)
            await self.merge(row, rec, imported=True)

    async def merge(self, row: UserRow, rec: RecordIn, *, imported: bool = False) -> None:
        err = self.user_errors.get(row.id)
        refused = err is not None and err.code == E_REFUSED
        if not refused and await self.clear(row, rec.kind, rec.id):
            self.out.touched(row.id)
        base = dict(row.synced_values or {})

        def run_merge():
            return merge(base, kuloo_values(user_view(row)), rec.values, kuloo_changed_at=_changed_at(row),
                         sell_updated_at=rec.updated_at)

        result = run_merge()
        hold = False
        if refused and not {n for n in result.to_sell if n != SYNC_ERROR}:
            # What Sell refused is no longer asked for: the error has cleared itself.
            await self.clear(row, rec.kind, rec.id)
            self.out.touched(row.id)
            result = run_merge()
        elif refused and err.payload_key == payload_key(result.to_sell) and err.attempts >= self.retries:
            hold = True  # refused that often: wait for a change (the base stays where it was)
        self.out.add("conflicts", result.conflicts)
        # The base moves for the fields now agreed; those still to write move once Sell takes them.
        new_base = {n: v for n, v in result.base.items() if n not in result.to_sell}
        for name in result.to_sell:
            if name in base:
                new_base[name] = base[name]
        base_saved = new_base == (row.synced_values or {})
        if row.id in self.pending_users and (result.to_kuloo or not imported):
            await self.flush()  # its tag rows are in before apply_changes rewrites them
        if result.to_kuloo:
            try:
                attrs = kuloo_attrs(result.to_kuloo)
            except ValueError as exc:
                await self.record_error(rec, E_VALUE, texts.one_line(f"Not synced: {exc}"), row)
                return
            bad = [t for t in attrs.get("promo_tags", []) if t not in self.tags]
            if bad:
                await self.record_error(rec, E_VALUE, texts.bad_value(PROMO, bad[0],
                                                                      tuple(self.channel.sequential_tags)), row)
                return
            if "email" in attrs:
                try:
                    attrs["email"] = normalise_email(rec.email or "")
                except InvalidEmail as exc:
                    await self.record_error(rec, E_VALUE, texts.one_line(f"Not synced: {exc}"), row)
                    return
                taken = await UserRow.filter(channel_id=row.channel_id, email_key=attrs["email"].lower()).exclude(
                    id=row.id).first()
                if taken is not None:
                    await self.record_error(rec, E_DUPLICATE, texts.duplicate_email(
                        attrs["email"], taken.crm_kind or "user", taken.crm_id or taken.id), row)
                    return
            for change in result.changes:
                if change.side != KULOO:
                    continue
                field_attrs = {a: attrs[a] for a in to_kuloo(change.field, change.new) if a in attrs}
                if change.field == "email":
                    field_attrs = {"email": attrs["email"]}
                note = (f"{change.note} (Kuloo had {change.kuloo!r}, Sell had {change.sell!r})"
                        + rec.cleaning_note([change.field]))
                also = () if base_saved else ("synced_values",)  # saved by the same UPDATE
                row.synced_values = new_base
                if await user_store.apply_changes(row, field_attrs, actor=Actor.SYNC, now=self.now, note=note,
                                                  also=also, pending=self.pending, writes=self.writes):
                    base_saved = True
            if not imported:
                self.out.add("users_updated")
            self.out.touched(row.id)
        for change in result.changes:
            if change.side != KULOO and not imported:
                self.audit(row, change.field, change.sell, change.kuloo,
                           f"written to Sell {rec.kind} {rec.id}: {change.note}")
        if not base_saved:
            row.synced_values = new_base
            self.writes.save(row, ["synced_values"])
        if not hold:
            self._sync_write(rec, dict(result.to_sell), row)


async def apply_batch(channel_id: int, records: Sequence[RecordIn], deletions: Sequence[DeletionIn],
                      feed_state: Mapping[str, Any] | None, now: datetime, retries: int = 3) -> Outcome:
    """Apply one batch of the change feed in one transaction; returns the Sell writes it needs."""
    async with in_transaction():
        channel = await _channel(channel_id)
        batch = _Batch(channel, now, retries)
        await batch.load(records, deletions)
        todo: list[RecordIn] = []
        for d in deletions:
            contact = await batch.deletion(d)
            if contact is not None:
                todo.append(contact)
        seen: set[tuple[str, int]] = set()
        for rec in [*todo, *records]:
            if (rec.kind, rec.id) in seen:
                continue
            seen.add((rec.kind, rec.id))
            await batch.record(rec)
        await batch.save_imports()
        await batch.flush()
        await batch.writes.flush()
        if feed_state is not None:
            channel.sync_state = dict(feed_state)
            await channel.save(update_fields=["sync_state"])
    batch.out.add("pulled", len(records) + len(deletions))
    return batch.out


# ----------------------------------------------------------------------------- Kuloo-side changes and pushes


async def plan_pushes(channel_id: int, now: datetime, retries: int = 3) -> PushPlan:
    """Linked users changed in Kuloo (their Sell writes), and users to push as new leads.

    Each user to push gets ``crm_push_at`` stamped here, before any POST; one found
    already stamped is looked up in Sell before it is created again.
    """
    async with in_transaction():
        channel = await _channel(channel_id)
        errors_by_user = {e.user_id: e for e in await SyncError.filter(channel_id=channel_id, user_id__not_isnull=True)}  # type: ignore[attr-defined]
        updates: list[SellWrite] = []
        for user_id in await _suspended(channel_id, caps.cap_of(channel.plan)):
            cap_text = texts.plan_cap(Plan(channel.plan))
            err = errors_by_user.get(user_id)
            if err is not None and err.code == E_CAP:
                continue
            row = await UserRow.get(id=user_id)
            await _set_error(channel_id, now, user=row, kind=None, crm_id=None, email=row.email, code=E_CAP,
                             text=cap_text)
            errors_by_user[user_id] = await SyncError.filter(user_id=user_id).first()
            updates.append(SellWrite(row.crm_kind, int(row.crm_id), {SYNC_ERROR: cap_text}, row.id, (), row.email))
        linked = UserRow.filter(channel_id=channel_id, crm_id__not_isnull=True)
        # Only users changed since the last run that got this far (and those with errors to
        # retry) can differ from what Sell has: never read every user of a big channel.
        since = await SyncRun.filter(channel_id=channel_id, status__in=[
            SyncRunStatus.OK.value, SyncRunStatus.PARTIAL.value]).order_by("-id").first()
        if since is not None:
            linked = linked.filter(Q(updated_at__gte=since.started_at) | Q(id__in=list(errors_by_user) or [0]))
        # plain values (no model per user: a first run reads every linked user)
        for row in await linked.values(*VIEW_COLUMNS, "crm_kind", "crm_id", "synced_values"):
            err = errors_by_user.get(row["id"])
            if err is not None and err.code in (E_TAMPERED, E_DUPLICATE, E_VALUE, E_CAP):
                continue  # waits for the record to change in Sell
            k = kuloo_values(_view_of(row))
            base = row["synced_values"] or {}
            fields = {n: k[n] for n in FIELD_NAMES if n not in base or base[n] != k[n]}
            if not fields:
                continue
            if err is not None and err.code == E_REFUSED and err.payload_key == payload_key(fields) \
                    and err.attempts >= retries:
                continue  # refused that often: wait for a change
            updates.append(SellWrite(row["crm_kind"], int(row["crm_id"]), fields, row["id"],
                                     tuple(row["promo_tags"] or ()), row["email"]))
        wanted = UserRow.filter(channel_id=channel_id, crm_id__isnull=True)
        if not channel.add_all_users_to_crm:
            wanted = wanted.filter(add_to_crm=True)
        candidates = []
        for row in await wanted.order_by("id"):
            err = errors_by_user.get(row.id)
            if err is not None and (err.code in BLOCKS_PUSH or (err.code == E_REFUSED and err.attempts >= retries)):
                continue
            candidates.append(row)
        linked = await _linked_count(channel_id)
        cap = caps.cap_of(channel.plan)
        chosen = caps.select(cap, [None] * min(linked, cap if cap is not None else linked), candidates)
        creates = []
        for row in chosen.admitted:
            look_up_first = row.crm_push_at is not None
            row.crm_push_at = now
            creates.append(PushIn(row.id, row.kuloo_id, row.email, kuloo_values(user_view(row, "")),
                                  tuple(row.promo_tags or ()), look_up_first))
        # every intent in one statement, committed with this unit before any POST
        await user_store.update_many(UserRow, ["crm_push_at"], [(now, row.id) for row in chosen.admitted])
        for row in chosen.refused:
            await _set_error(channel_id, now, user=row, kind=None, crm_id=None, email=row.email, code=E_CAP,
                             text=texts.plan_cap(Plan(channel.plan)))
    return PushPlan(updates, creates, len(chosen.refused))


async def confirm_writes(channel_id: int, accepted: Sequence[SellWrite], refused: Sequence[tuple[SellWrite, str]],
                         now: datetime) -> tuple[list[int], bool]:
    """Sell took ``accepted`` (the base moves); it refused ``refused`` (Sync errors).

    Returns the users touched, and whether an error cleared (its Sync error is then due in Sell).
    """
    touched: list[int] = []
    cleared = False
    async with in_transaction():
        ids = {w.user_id for w in accepted if w.user_id} | {w.user_id for w, _ in refused if w.user_id}
        rows = {r.id: r for r in await UserRow.filter(id__in=list(ids) or [0]).select_for_update().only(
            "id", "crm_kind", "crm_id", "synced_values", "sync_error")}
        # A user's Sync error row goes with its ``sync_error`` text (``_set_error``,
        # ``_clear_errors``): users without one have no refusal to clear (most batches).
        with_error = [r.id for r in rows.values() if r.sync_error]
        refused_users = set(await SyncError.filter(user_id__in=with_error, code=E_REFUSED).values_list(
            "user_id", flat=True)) if with_error else set()
        moved: dict[int, UserRow] = {}
        for w in accepted:
            row = rows.get(w.user_id) if w.user_id else None
            if row is None or (row.crm_kind, row.crm_id) != (w.kind, w.id):
                continue
            row.synced_values = {**(row.synced_values or {}), **w.fields}
            moved[row.id] = row
            if row.id in refused_users and (SYNC_ERROR not in w.fields or not w.fields[SYNC_ERROR]):
                await SyncError.filter(user_id=row.id, code=E_REFUSED).delete()
                refused_users.discard(row.id)
                touched.append(row.id)
                cleared = True
                if row.sync_error:
                    row.sync_error = ""
                    await row.save(update_fields=["sync_error"])
        await user_store.update_many(UserRow, ["synced_values"], [(r.synced_values, r.id) for r in moved.values()])
        for w, text in refused:
            row = rows.get(w.user_id) if w.user_id else None
            await _set_error(channel_id, now, user=row, kind=w.kind, crm_id=w.id, email=w.email, code=E_REFUSED,
                             text=texts.sell_refused(text), key=payload_key(w.fields))
            if row is not None:
                touched.append(row.id)
    return touched, cleared


async def link_pushed(channel_id: int, created: Sequence[tuple[int, str, int, dict[str, Any]]],
                      failed: Sequence[tuple[int, str, bool]], now: datetime) -> list[int]:
    """Leads found or created for users: link them (base = what the lead carries).

    ``failed``: (user, error text, maybe applied) — an ambiguous create keeps its intent,
    so the next run looks the lead up before any second POST.
    """
    touched: list[int] = []
    async with in_transaction():
        for user_id, kind, crm_id, values in created:
            row = await UserRow.filter(id=user_id).select_for_update().first()
            if row is None:
                continue
            taken = await UserRow.filter(channel_id=channel_id, crm_kind=kind, crm_id=crm_id).exclude(id=user_id).exists()
            if taken:
                continue
            row.crm_kind, row.crm_id, row.crm_linked_at = kind, crm_id, now
            row.synced_values, row.crm_push_at = dict(values), None
            await _save_link(row)
            await _clear_errors(channel_id, row, None, None)
            await _audit(row, "crm", None, f"{kind} {crm_id}", "pushed to Sell as a lead", now)
            touched.append(row.id)
        for user_id, text, maybe_applied in failed:
            row = await UserRow.get_or_none(id=user_id)
            if row is None:
                continue
            if not maybe_applied:
                row.crm_push_at = None
                await row.save(update_fields=["crm_push_at"])
            await _set_error(channel_id, now, user=row, kind=None, crm_id=None, email=row.email, code=E_REFUSED,
                             text=texts.sell_refused(text))
            touched.append(row.id)
    return touched


async def orphans_to_recheck(channel_id: int) -> list[tuple[str, int]]:
    """Records without a user whose error may have gone away: a cap with room again, a
    duplicate whose address is no longer linked. The engine reads them again."""
    channel = await _channel(channel_id)
    rows = await SyncError.filter(channel_id=channel_id, user_id=None, code__in=[E_CAP, E_DUPLICATE])
    room = caps.room_left(caps.cap_of(channel.plan), await _linked_count(channel_id))
    keys = [r.email.strip().lower() for r in rows if r.code == E_DUPLICATE]
    linked = set(await UserRow.filter(channel_id=channel_id, email_key__in=keys or [""],
                                      crm_id__not_isnull=True).values_list("email_key", flat=True))
    out = []
    # Linked users suspended by a lowered plan, now inside the cap again.
    suspended = await _suspended(channel_id, caps.cap_of(channel.plan))
    for e in await SyncError.filter(channel_id=channel_id, user_id__not_isnull=True, code=E_CAP):
        if e.user_id not in suspended:  # type: ignore[attr-defined]
            user = await UserRow.get_or_none(id=e.user_id)  # type: ignore[attr-defined]
            if user is not None and user.crm_kind and user.crm_id is not None:
                out.append((user.crm_kind, int(user.crm_id)))
    for r in rows:
        if r.crm_kind is None or r.crm_id is None:
            continue
        if r.code == E_CAP and (room is None or room > 0):
            out.append((r.crm_kind, int(r.crm_id)))
        elif r.code == E_DUPLICATE and r.email.strip().lower() not in linked:
            out.append((r.crm_kind, int(r.crm_id)))
    return out


async def linked_ids(channel_id: int) -> dict[str, list[int]]:
    ids: dict[str, list[int]] = {"lead": [], "contact": []}
    for kind, crm_id in await UserRow.filter(channel_id=channel_id, crm_id__not_isnull=True).values_list(
            "crm_kind", "crm_id"):
        ids.setdefault(kind, []).append(int(crm_id))
    return ids


def kuloo_ids(values: Iterable[Mapping[str, Any]]) -> list[str]:
    return [v[KULOO_ID] for v in values if v.get(KULOO_ID)]
