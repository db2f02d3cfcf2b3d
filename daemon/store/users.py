"""Users (profile documents): the use cases behind ``users.*``, and the one way to change a user.

Use cases for ``Store.run`` (one crossing each, ``now`` from the clock, typed results):
``add``, ``get``, ``get_by_email``, ``update``, ``mark_active``, ``list_page``, ``audit``;
and for the links service, which knows a user only by the (channel, KulooId) a signed
token carries: ``subscriber``, ``update_subscriber``, ``subscriber_active`` and
``sign_up`` (a confirmed double opt-in). They go through the same ``apply_changes``.

For the other writers (the sync engine's batch, the links service), inside their own
unit of work:

- ``apply_changes(row, changes, actor=..., now=..., note=...)`` is how any Kuloo-side
  field of a user changes. It writes one audit entry per changed field, stamps the
  field's Kuloo change time (``User.changed_at``, which the merge compares with Sell's
  ``updated_at``), bumps ``revision`` (docs/sync-rules.md, "No lost opt-out": a batch applies
  only over the revision it read), keeps the tag rows of ``promo_tags`` and the email key
  in step, and cancels queued mail when the user opts out.
- ``insert(channel_id, fields, actor=..., now=..., note=...)`` creates a user row with
  a new KulooId, its tag rows and its audit entry.
- ``audit_entry(row, field, old, new, ...)`` makes an audit entry (a conflict's, say).
- ``document(row)`` is the typed ``User`` of a row.

Emails are kept as spelled (trimmed) and compared by ``vocabulary.email_key``: one user
per key per channel. Promo tags live whole in ``promo_tags`` (JSON, read whole) and, one
row each, in ``UserTag`` so that filtering by tag stays a plain indexed query on SQLite
and PostgreSQL alike.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Subquery
from tortoise.models import Model
from tortoise.transactions import in_transaction

from ..vocabulary import (
    EDITABLE_USER_FIELDS,
    SUBSCRIPTION_UNSUBSCRIBED,
    Actor,
    CrmKind,
    Frequency,
    OutboxState,
    Source,
    email_key,
)
from . import Conflict, Invalid, NotFound, erasure
from .models import AuditEntry, OutboxMessage, UserTag
from .models import Channel as ChannelRow
from .models import User as UserRow

LIST_LIMIT_MAX = 500
AUDIT_LIMIT_MAX = 500
CRM_NONE = "none"  # the crm_kind filter's word for users linked to no CRM record


@dataclass(frozen=True)
class CrmLink:
    kind: CrmKind
    id: int


@dataclass(frozen=True)
class UserBounce:
    """The address bounced for good (``store.bounces``): the status ("5.1.1", "550"), the
    remote server's words, and when."""

    status: str
    reason: str
    at: datetime | None


@dataclass(frozen=True)
class User:
    """The profile document, plus what the sync's merge needs (revision, change times)."""

    id: int
    channel_id: int
    kuloo_id: str
    email: str
    first_name: str
    last_name: str
    source: Source
    frequency: Frequency
    unsubscribed: bool
    add_to_crm: bool
    promo_tags: tuple[str, ...]
    last_active: datetime | None
    crm: CrmLink | None
    sync_error: str
    created_at: datetime | None
    updated_at: datetime | None
    revision: int
    changed_at: Mapping[str, datetime]  # editable field -> its last Kuloo change time
    bounce: UserBounce | None = None  # None: the address has not bounced


@dataclass(frozen=True)
class Updated:
    user: User
    changed: tuple[str, ...]  # the fields that changed; empty when nothing did


@dataclass(frozen=True)
class Filters:
    """``users.list`` filters; None (or "") means no filter."""

    query: str = ""  # every word must appear in the email or a name
    has_sync_error: bool | None = None
    subscription: str | None = None  # a Frequency, or "unsubscribed"
    source: Source | None = None
    promo: str | None = None
    crm_kind: str | None = None  # a CrmKind, or "none"
    bounced: bool | None = None  # the address bounced (``store.bounces``)


@dataclass(frozen=True)
class Page:
    users: tuple[User, ...]
    next: int | None  # pass as ``after`` for the next page; None on the last page
    total: int  # users matching the filters, all pages together


@dataclass(frozen=True)
class AuditRecord:
    at: datetime
    actor: str
    field: str
    old: Any
    new: Any
    note: str


# ----------------------------------------------------------------------------- rows <-> documents


def new_kuloo_id() -> str:
    """A KulooId: random, opaque, never reused or changed (Sell and link tokens carry it)."""
    return secrets.token_hex(16)


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def document(row: UserRow) -> User:
    return User(
        id=row.id,
        channel_id=row.channel_id,
        kuloo_id=row.kuloo_id,
        email=row.email,
        first_name=row.first_name,
        last_name=row.last_name,
        source=Source(row.source),
        frequency=Frequency(row.frequency),
        unsubscribed=row.unsubscribed,
        add_to_crm=row.add_to_crm,
        promo_tags=tuple(row.promo_tags or ()),
        last_active=row.last_active,
        crm=CrmLink(CrmKind(row.crm_kind), row.crm_id)
        if row.crm_kind and row.crm_id is not None
        else None,
        sync_error=row.sync_error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        revision=row.revision,
        changed_at={k: _parse_time(v) for k, v in (row.changed_at or {}).items()},
        bounce=UserBounce(row.bounce_status, row.bounce_reason, row.bounce_at)
        if row.bounce_status
        else None,
    )


def search_text(email: str, first_name: str, last_name: str) -> str:
    """What ``users.list``'s query words are looked for in (kept in ``User.search_text``)."""
    return f"{email} {first_name} {last_name}".lower()


def _plain(field: str, value: Any) -> Any:
    """A field's value as the audit log and the row keep it (JSON-ready)."""
    if field == "promo_tags":
        return list(dict.fromkeys(value or ()))  # each tag once, first order kept
    if field in ("frequency", "source"):
        return str(value.value if isinstance(value, Source | Frequency) else value)
    return value


async def _row(user_id: int, *, for_update: bool = False) -> UserRow:
    query = UserRow.select_for_update() if for_update else UserRow
    row = await query.get_or_none(id=user_id)
    if row is None:
        raise NotFound(f"no user with id {user_id}")
    return row


async def _channel(channel_id: int) -> ChannelRow:
    row = await ChannelRow.get_or_none(id=channel_id)
    if row is None:
        raise NotFound(f"no channel with id {channel_id}")
    return row


def _check_promo(channel: ChannelRow, tags: Iterable[str]) -> None:
    allowed = set(channel.sequential_tags or ())
    unknown = [t for t in tags if t not in allowed]
    if unknown:
        choices = ", ".join(repr(t) for t in channel.sequential_tags or ()) or "none yet"
        raise Invalid(
            f"promo tags {unknown!r} are not sequential tags of channel {channel.id} "
            f"(its tags: {choices})"
        )


async def _email_taken(channel_id: int, key: str, other_than: int | None = None) -> None:
    query = UserRow.filter(channel_id=channel_id, email_key=key)
    if other_than is not None:
        query = query.exclude(id=other_than)
    taken = await query.first().values("id", "email")
    if taken:
        raise Conflict(
            f"user {taken['id']} of channel {channel_id} already has the email {taken['email']!r}"
        )


# ----------------------------------------------------------------------------- rows made in bulk

_TEMPLATES: dict[type[Model], dict[str, Any]] = {}


def bare_row(
    model: type[Model], values: Mapping[str, Any], *, template: Mapping[str, Any] | None = None
) -> Any:
    """An unsaved ``model`` instance holding ``values`` as given, for ``bulk_create``.

    ``Model.__init__`` converts and checks every field through a ``__setattr__`` hook,
    which is most of a bulk insert's cost. The rows made here hold values this
    module built itself, already of the column's Python type; the fields not given keep
    their declared defaults (``template``: one instance made the checked way, per model).
    The instance is the same as ``__init__`` makes (``tests/store/test_users_store.py``).
    """
    if template is None:
        template = _TEMPLATES.get(model)
    obj = model.__new__(model)
    state = obj.__dict__
    state["_partial"] = False
    state["_saved_in_db"] = False
    state["_custom_generated_pk"] = False
    state["_await_when_save"] = {}
    if template:
        for key, value in template.items():
            # mutable defaults (a JSON list or dict) are never shared between rows
            state[key] = value.copy() if isinstance(value, list | dict) else value
    state.update(values)
    return obj


def _user_template() -> dict[str, Any]:
    template = _TEMPLATES.get(UserRow)
    if template is None:
        proto = UserRow(channel_id=0, kuloo_id="", email="")
        template = {k: v for k, v in proto.__dict__.items() if not k.startswith("_")}
        _TEMPLATES[UserRow] = template
    return template


def audit_entry(
    row: UserRow, field: str, old: Any, new: Any, *, actor: Actor, now: datetime, note: str = ""
) -> AuditEntry:
    """An unsaved audit entry about ``row`` (save it, or ``AuditEntry.bulk_create`` many)."""
    return bare_row(
        AuditEntry,
        {
            "id": None,
            "channel_id": row.channel_id,
            "user_id": row.id,
            "at": now,
            "actor": Actor(actor).value,
            "field": field,
            "old": json.dumps(old),
            "new": json.dumps(new),
            "note": note,
        },
        template={},
    )


def _audit_record(entry: AuditEntry) -> AuditRecord:
    return AuditRecord(
        entry.at,
        entry.actor,
        entry.field,
        json.loads(entry.old) if entry.old is not None else None,
        json.loads(entry.new) if entry.new is not None else None,
        entry.note,
    )


def _tag_rows(row: UserRow, tags: Iterable[str]) -> list[UserTag]:
    return [
        bare_row(
            UserTag,
            {"id": None, "user_id": row.id, "channel_id": row.channel_id, "tag": str(t)},
            template={},
        )
        for t in dict.fromkeys(tags)
    ]


async def _write_tags(row: UserRow, tags: Iterable[str], *, fresh: bool = False) -> None:
    if not fresh:
        await UserTag.filter(user_id=row.id).delete()
    await UserTag.bulk_create(_tag_rows(row, tags))


async def update_many(
    model: type[Model], columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """``UPDATE`` many rows of ``model``: each of ``rows`` is (a value per column..., the pk).

    One statement, prepared by tortoise for the database's dialect (the one
    ``save(update_fields=...)`` uses) and executed for every row, inside the caller's
    transaction — where ``bulk_update`` builds, for each call, a ``CASE`` over every row and
    column.
    """
    if not rows:
        return
    db = model._meta.db
    sql = db.executor_class(model=model, db=db).get_update_sql(list(columns), None)
    fields_map = model._meta.fields_map
    to_db = [fields_map[c].to_db_value for c in columns]
    pk = model._meta.pk.to_db_value
    n = len(to_db)
    # The conversions read no instance (tortoise's annotation wants one; None is what it takes).
    await db.execute_many(
        sql,
        [
            [conv(v, None) for conv, v in zip(to_db, row[:n], strict=True)] + [pk(row[n], None)]  # type: ignore[arg-type]
            for row in rows
        ],
    )


class RowWrites:
    """``row.save(update_fields=...)`` of user rows, gathered in one unit of work and written
    together by ``flush`` (before it commits): one prepared UPDATE per set of columns
    (``update_many``) instead of one statement per row. What is written is each row's value
    at ``flush``, so saves of the same row made meanwhile stay consistent with it.
    """

    def __init__(self) -> None:
        self._rows: dict[int, tuple[UserRow, set[str]]] = {}

    def save(self, row: UserRow, fields: Iterable[str]) -> None:
        entry = self._rows.get(row.id)
        if entry is None:
            self._rows[row.id] = (row, set(fields))
        else:
            entry[1].update(fields)

    async def flush(self) -> None:
        groups: dict[tuple[str, ...], list[UserRow]] = {}
        for row, fields in self._rows.values():
            groups.setdefault(tuple(sorted(fields)), []).append(row)
        self._rows.clear()
        for columns, rows in groups.items():
            await update_many(
                UserRow, columns, [(*(getattr(r, c) for c in columns), r.id) for r in rows]
            )


async def save_pending(pending: list[AuditEntry | UserTag]) -> None:
    """Insert what ``insert_many`` left in ``pending``: one statement per table."""
    for model in (UserTag, AuditEntry):
        rows: list[Any] = [r for r in pending if isinstance(r, model)]  # each of one model
        if rows:
            await model.bulk_create(rows)
    pending.clear()


# ----------------------------------------------------------------------------- for every writer


def new_row(
    channel_id: int, fields: Mapping[str, Any], now: datetime, *, checked: bool = True
) -> UserRow:
    """An unsaved user row: a new KulooId, the email key, the search text (see ``insert``).

    ``checked=False`` (the sync's imports, whose ``fields`` it built from canonical values)
    skips tortoise's per-field checks: ``bare_row``.
    """
    values = {k: _plain(k, v) for k, v in fields.items()}
    # A user added again after an erasure takes the former KulooId back (``erasure.adopt``).
    kuloo_id = values.pop("kuloo_id", None) or new_kuloo_id()
    base: dict[str, Any] = {
        "channel_id": channel_id,
        "kuloo_id": kuloo_id,
        "email_key": email_key(values["email"]),
        "created_at": now,
        "updated_at": now,
        "changed_at": {},
        "revision": 1,
    }
    if checked:
        row = UserRow(**base, **values)
    else:
        row = bare_row(UserRow, {**base, **values}, template=_user_template())
    row.search_text = search_text(row.email, row.first_name, row.last_name)
    if row.promo_tags:
        row.promo_started_at = now
    return row


def _added(row: UserRow, actor: Actor, now: datetime, note: str) -> AuditEntry:
    return audit_entry(
        row,
        "",
        None,
        row.email,
        actor=actor,
        now=now,
        note=note or f"user added (source {Source(row.source).value or 'app'})",
    )


async def insert(
    channel_id: int, fields: Mapping[str, Any], *, actor: Actor, now: datetime, note: str = ""
) -> UserRow:
    """Create a user row (inside the caller's transaction): KulooId, email key, tags, audit.

    ``fields`` holds a normalised ``email`` and any of ``first_name``, ``last_name``,
    ``source``, ``frequency``, ``unsubscribed``, ``add_to_crm``, ``promo_tags``,
    ``crm_kind``, ``crm_id``, ``synced_values``. The caller has checked the email is free.
    """
    row = new_row(channel_id, fields, now)
    await row.save()
    if row.promo_tags:
        await _write_tags(row, row.promo_tags, fresh=True)
    await _added(row, actor, now, note).save()
    return row


async def insert_many(
    rows: Sequence[tuple[UserRow, str]],
    *,
    actor: Actor,
    now: datetime,
    pending: list[AuditEntry | UserTag],
) -> None:
    """``insert`` for many rows made by ``new_row`` (with their audit notes), in one statement.

    Their ids are set; their tag rows and first audit entries are appended to ``pending``,
    which the caller inserts with ``save_pending`` in the same transaction, before any
    other audit entry of these users (the log is ordered by id).
    """
    if not rows:
        return
    await UserRow.bulk_create([row for row, _note in rows])
    # bulk_create leaves the ids unset: read them back by the (unique) KulooIds
    ids = dict(
        await UserRow.filter(kuloo_id__in=[row.kuloo_id for row, _note in rows]).values_list(
            "kuloo_id", "id"
        )
    )
    for row, note in rows:
        row.id = ids[row.kuloo_id]
        row._saved_in_db = True  # later saves in the transaction are updates
        pending.extend(_tag_rows(row, row.promo_tags or ()))
        pending.append(_added(row, actor, now, note))


async def apply_changes(
    row: UserRow,
    changes: Mapping[str, Any],
    *,
    actor: Actor,
    now: datetime,
    note: str = "",
    also: Sequence[str] = (),
    pending: list[AuditEntry | UserTag] | None = None,
    writes: RowWrites | None = None,
) -> tuple[str, ...]:
    """Apply the editable-field ``changes`` to ``row`` and save it; returns what changed.

    Call inside a transaction (``in_transaction()``). Only fields whose value differs
    count: each gets an audit entry with both values and ``note``, and its change time;
    the revision goes up once. Nothing changed: nothing is written. ``also``: other
    columns the caller set on ``row``, saved by the same UPDATE when there is one.
    ``pending``: the audit entries are appended there (in order) for the caller's
    ``save_pending`` in the same transaction, instead of one INSERT per call; ``writes``:
    the row's UPDATE joins the caller's ``RowWrites`` (a new email is written at once: later
    checks of the unit look for a taken address in the database).
    """
    changed: list[str] = []
    entries: list[AuditEntry] = []
    stamps = dict(row.changed_at or {})
    for field, value in changes.items():
        if field not in EDITABLE_USER_FIELDS:
            raise ValueError(f"{field!r} is not an editable user field")
        new, old = _plain(field, value), _plain(field, getattr(row, field))
        if new == old or (field == "promo_tags" and sorted(set(new)) == sorted(set(old))):
            continue  # tags are a set (Sell's Promo is one): a new order is no change
        setattr(row, field, new)
        changed.append(field)
        stamps[field] = now.isoformat()
        entries.append(audit_entry(row, field, old, new, actor=actor, now=now, note=note))
    if not changed:
        return ()
    # Any change may change what delivery owes this user: it plans them on its next pass.
    row.next_due_at = None
    update_fields = [*changed, "changed_at", "revision", "updated_at", "next_due_at", *also]
    if "email" in changed:
        row.email_key = email_key(row.email)
        update_fields.append("email_key")
    if {"email", "first_name", "last_name"} & set(changed):
        row.search_text = search_text(row.email, row.first_name, row.last_name)
        update_fields.append("search_text")
    if "email" in changed and row.bounce_status:
        # A new address is a new chance: the bounce of the old one no longer holds.
        entries.append(clear_bounce_fields(row, actor=actor, now=now, note="email changed"))
        update_fields.extend(f for f in BOUNCE_FIELDS if f not in update_fields)
    if "unsubscribed" in changed:
        row.unsubscribed_changed_at = now  # a signup confirmation issued before it is stale
        update_fields.append("unsubscribed_changed_at")
    if "promo_tags" in changed and row.promo_tags and row.promo_started_at is None:
        row.promo_started_at = now  # the first tag starts the sequence clock (docs/delivery.md)
        update_fields.append("promo_started_at")
    row.changed_at = stamps
    row.revision += 1
    row.updated_at = now
    if writes is not None and "email" not in changed:
        writes.save(row, update_fields)
    else:
        await row.save(update_fields=update_fields)
    if pending is None:
        await AuditEntry.bulk_create(entries)
    else:
        pending.extend(entries)
    if "promo_tags" in changed:
        await _write_tags(row, row.promo_tags)
    if "unsubscribed" in changed and row.unsubscribed:
        # Queued mail of a user who unsubscribed is cancelled (docs/delivery.md, "Outbox states").
        await OutboxMessage.filter(user_id=row.id, state=OutboxState.QUEUED.value).update(
            state=OutboxState.CANCELLED.value, updated_at=now
        )
    return tuple(changed)


# The columns a bounce sets and clears (``store.bounces``), besides revision/updated_at.
BOUNCE_FIELDS = (
    "bounce_status",
    "bounce_reason",
    "bounce_at",
    "bounce_cleared_at",
    "last_digest_at",
    "promo_started_at",
    "next_due_at",
)


def bounce_text_of(row: UserRow) -> str:
    """The bounce as the audit log and Sell's Sync error show it ("" when not bounced)."""
    if not row.bounce_status:
        return ""
    return " ".join(w for w in (row.bounce_status, row.bounce_reason) if w)


def clear_bounce_fields(row: UserRow, *, actor: Actor, now: datetime, note: str) -> AuditEntry:
    """Clear ``row``'s bounce (the caller saves ``BOUNCE_FIELDS``); returns its audit entry.

    Mail continues from ``now``, with no backlog: the next digest covers what comes after
    now, and the sequence resumes where it stood when the address bounced."""
    old = bounce_text_of(row)
    if row.bounce_at is not None and row.promo_started_at is not None and now > row.bounce_at:
        row.promo_started_at = row.promo_started_at + (now - row.bounce_at)
    if row.last_digest_at is None or row.last_digest_at < now:
        row.last_digest_at = now
    row.bounce_status, row.bounce_reason, row.bounce_at = "", "", None
    row.bounce_cleared_at = now
    row.next_due_at = None
    return audit_entry(row, "bounce", old, None, actor=actor, now=now, note=note)


# ----------------------------------------------------------------------------- use cases


async def add(
    channel_id: int,
    fields: Mapping[str, Any],
    actor: Actor,
    now: datetime,
    erasure_key: bytes | None = None,
) -> User:
    """A new user of the channel (``users.add``); ``conflict`` when the email is taken.

    An address erased before ends its tombstone: the user takes the former KulooId back
    (``erasure.adopt``; ``erasure_key`` is the erasure-key credential)."""
    try:
        async with in_transaction():
            channel = await _channel(channel_id)
            _check_promo(channel, fields.get("promo_tags") or ())
            await _email_taken(channel_id, email_key(fields["email"]))
            former = await erasure.adopt(channel_id, fields["email"], erasure_key)
            row = await insert(
                channel_id,
                {**fields, **({"kuloo_id": former} if former else {})},
                actor=actor,
                now=now,
            )
    except IntegrityError:  # a concurrent add of the same email won the race
        raise Conflict(
            f"a user of channel {channel_id} already has the email {fields['email']!r}"
        ) from None
    return document(row)


async def get(user_id: int) -> User:
    return document(await _row(user_id))


async def get_by_email(channel_id: int, email: str) -> User:
    row = await UserRow.get_or_none(channel_id=channel_id, email_key=email_key(email))
    if row is None:
        await _channel(channel_id)  # say which is missing: the channel or the user
        raise NotFound(f"no user with the email {email.strip()!r} in channel {channel_id}")
    return document(row)


async def update(
    user_id: int,
    changes: Mapping[str, Any],
    actor: Actor,
    now: datetime,
    *,
    clear_bounce: bool = False,
) -> Updated:
    """An edit by an admin or the app (``users.update``): checked, applied, audited.

    ``clear_bounce``: the address may be mailed again (``clear_bounce_fields``, in
    the same transaction as the edit); on a user not bounced it changes nothing."""
    try:
        async with in_transaction():
            row = await _row(user_id, for_update=True)
            if "promo_tags" in changes:
                _check_promo(await _channel(row.channel_id), changes["promo_tags"])
            if "email" in changes and email_key(changes["email"]) != row.email_key:
                await _email_taken(row.channel_id, email_key(changes["email"]), other_than=row.id)
            cleared: tuple[str, ...] = ()
            if clear_bounce and row.bounce_status:
                entry = clear_bounce_fields(row, actor=actor, now=now, note="")
                row.revision += 1
                row.updated_at = now  # the next sync clears Sell's Sync error
                await row.save(update_fields=[*BOUNCE_FIELDS, "revision", "updated_at"])
                await entry.save()
                cleared = ("bounce",)
            changed = cleared + await apply_changes(row, changes, actor=actor, now=now)
    except IntegrityError:
        raise Conflict(
            f"another user of the channel already has the email {changes.get('email')!r}"
        ) from None
    return Updated(document(row), changed)


async def mark_active(user_id: int, at: datetime, now: datetime) -> Updated:
    """Record activity at ``at`` (capped at ``now``); Last active never moves backwards."""
    at = min(at, now)
    async with in_transaction():
        row = await _row(user_id, for_update=True)
        if row.last_active is not None and row.last_active >= at:
            return Updated(document(row), ())
        row.last_active = at
        row.revision += 1
        row.updated_at = now
        await row.save(update_fields=["last_active", "revision", "updated_at"])
    return Updated(document(row), ("last_active",))


def _filtered(channel_id: int, filters: Filters):
    query = UserRow.filter(channel_id=channel_id)
    for word in filters.query.lower().split():
        query = query.filter(search_text__contains=word)
    if filters.has_sync_error is True:
        query = query.filter(sync_error__gt="")  # a range on the index, where != would scan
    elif filters.has_sync_error is False:
        query = query.filter(sync_error="")
    if filters.subscription == SUBSCRIPTION_UNSUBSCRIBED:
        query = query.filter(unsubscribed=True)
    elif filters.subscription:
        query = query.filter(unsubscribed=False, frequency=Frequency(filters.subscription).value)
    if filters.bounced is True:
        query = query.filter(bounce_status__gt="")  # a range on the (channel, bounce) index
    elif filters.bounced is False:
        query = query.filter(bounce_status="")
    if filters.source is not None:
        query = query.filter(source=Source(filters.source).value)
    if filters.promo:
        tagged = UserTag.filter(channel_id=channel_id, tag=filters.promo).values("user_id")
        query = query.filter(id__in=Subquery(tagged))
    if filters.crm_kind == CRM_NONE:
        query = query.filter(crm_kind__isnull=True)
    elif filters.crm_kind:
        query = query.filter(crm_kind=CrmKind(filters.crm_kind).value)
    return query


async def list_page(channel_id: int, filters: Filters, after: int | None, limit: int) -> Page:
    """One page of the channel's users by id (keyset: ``after`` is the last id seen)."""
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise Invalid(f"limit must be 1 to {LIST_LIMIT_MAX}")
    await _channel(channel_id)
    query = _filtered(channel_id, filters)
    page = query.filter(id__gt=after) if after is not None else query
    rows = await page.order_by("id").limit(limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    # A first page that holds every match is the total: a rare search (a LIKE that scans the
    # channel) then costs one scan, not two.
    total = len(rows) if after is None and not more else await query.count()
    return Page(tuple(document(r) for r in rows), rows[-1].id if more else None, total)


async def audit(user_id: int, limit: int) -> list[AuditRecord]:
    """The user's audit log, newest first."""
    if not 1 <= limit <= AUDIT_LIMIT_MAX:
        raise Invalid(f"limit must be 1 to {AUDIT_LIMIT_MAX}")
    if not await UserRow.exists(id=user_id):
        raise NotFound(f"no user with id {user_id}")
    rows = await AuditEntry.filter(user_id=user_id).order_by("-id").limit(limit)
    return [_audit_record(r) for r in rows]


# ----------------------------------------------------------------------------- the links service


@dataclass(frozen=True)
class Subscriber:
    """A user as a link shows them: the channel's name beside the profile."""

    channel_name: str
    user: User
    changed: tuple[str, ...] = ()
    created: bool = False
    stale: bool = False  # sign_up: the confirmation predates the user's last (un)subscribe


async def _by_kuloo_id(channel_id: int, kuloo_id: str, *, for_update: bool = False) -> UserRow:
    query = UserRow.select_for_update() if for_update else UserRow
    row = await query.get_or_none(channel_id=channel_id, kuloo_id=kuloo_id)
    if row is None:
        raise NotFound("no such subscriber")  # says nothing about which part was unknown
    return row


async def subscriber(channel_id: int, kuloo_id: str) -> Subscriber:
    row = await _by_kuloo_id(channel_id, kuloo_id)
    return Subscriber((await _channel(channel_id)).name, document(row))


async def update_subscriber(
    channel_id: int, kuloo_id: str, changes: Mapping[str, Any], actor: Actor, now: datetime
) -> Subscriber:
    """``update`` for a user named by a link token: frequency and unsubscribed only, one
    transaction."""
    unknown = set(changes) - {"frequency", "unsubscribed"}
    if unknown:
        raise Invalid(f"a link cannot change {sorted(unknown)!r}")
    async with in_transaction():
        row = await _by_kuloo_id(channel_id, kuloo_id, for_update=True)
        channel = await _channel(channel_id)
        changed = await apply_changes(row, changes, actor=actor, now=now)
    return Subscriber(channel.name, document(row), changed)


async def subscriber_active(channel_id: int, kuloo_id: str, now: datetime) -> Subscriber:
    """A click: Last active = ``now`` (never backwards), one transaction."""
    async with in_transaction():
        row = await _by_kuloo_id(channel_id, kuloo_id, for_update=True)
        changed: tuple[str, ...] = ()
        if row.last_active is None or row.last_active < now:
            row.last_active = now
            row.revision += 1
            row.updated_at = now
            await row.save(update_fields=["last_active", "revision", "updated_at"])
            changed = ("last_active",)
    return Subscriber("", document(row), changed)


def unsubscribed_changed(row: UserRow) -> datetime:
    """When the user's unsubscribed state last changed: its column, else the merge's stamp
    (rows from before the column), else the user's creation."""
    if row.unsubscribed_changed_at is not None:
        return row.unsubscribed_changed_at
    stamp = (row.changed_at or {}).get("unsubscribed")
    return _parse_time(stamp) if stamp else row.created_at


class ErasedAfter(Conflict):
    """A signup confirmation issued before the address was erased (``sign_up``)."""


async def sign_up(
    channel_id: int,
    fields: Mapping[str, Any],
    actor: Actor,
    now: datetime,
    issued: datetime | None = None,
    erasure_key: bytes | None = None,
) -> Subscriber:
    """A confirmed signup: a new user (source ``signup``), or the existing one left as is.

    ``fields``: a normalised ``email``, optional ``first_name``/``last_name``. An existing
    user who had unsubscribed and now confirms a signup is subscribed again (their
    names are kept); any other existing user is not changed. ``issued``: when the
    confirmation link was made; an existing user whose unsubscribed state changed (or
    who was created) after it is not changed, and the answer says ``stale`` (a link
    works once: an old one never undoes a later unsubscribe). A new address that was
    erased after ``issued`` raises ``ErasedAfter`` (the erasure wins over an older
    confirmation); otherwise it ends the tombstone, as ``add`` does.
    """
    try:
        async with in_transaction():
            channel = await _channel(channel_id)
            row = await UserRow.select_for_update().get_or_none(
                channel_id=channel_id, email_key=email_key(fields["email"])
            )
            if row is not None:
                if issued is not None and unsubscribed_changed(row) > issued:
                    return Subscriber(channel.name, document(row), stale=True)
                changed = (
                    await apply_changes(
                        row, {"unsubscribed": False}, actor=actor, now=now, note="signup confirmed"
                    )
                    if row.unsubscribed
                    else ()
                )
                return Subscriber(channel.name, document(row), changed)
            if issued is not None:
                since = await erasure.erased_since(channel_id, fields["email"], erasure_key)
                if since is not None and since > issued:
                    raise ErasedAfter(
                        f"the address was erased in channel {channel_id} after this "
                        "confirmation was issued"
                    )
            former = await erasure.adopt(channel_id, fields["email"], erasure_key)
            row = await insert(
                channel_id,
                {**fields, "source": Source.SIGNUP, **({"kuloo_id": former} if former else {})},
                actor=actor,
                now=now,
                note="signup confirmed",
            )
    except IntegrityError:  # a concurrent confirmation of the same address won the race
        return Subscriber(channel.name, await get_by_email(channel_id, fields["email"]), stale=True)
    return Subscriber(channel.name, document(row), (), created=True)
