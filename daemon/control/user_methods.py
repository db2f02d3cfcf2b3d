"""The ``users.*`` control methods: the TUI, ``kuloo-ctl``, the links service and the Kuloo app
add, read, edit and list a channel's users through them.

=================  =====================================================================
``users.add``      ``{"channel", "email", "first_name"?, "last_name"?, "frequency"?,
                   "unsubscribed"?, "add_to_crm"?, "promo_tags"?, "source"?, "actor"?}``
                   → the user document. ``source`` ``admin`` (default) or ``""`` (the app);
                   ``frequency`` defaults to ``weekly``; ``add_to_crm`` to false (the
                   channel's ``add_all_users_to_crm`` applies at sync time, per user it is
                   not copied); the same email (any case) twice in a channel: ``conflict``.
``users.get``      ``{"id"}`` or ``{"channel", "email"}`` → the user document. Its
                   ``bounce`` is ``{"status", "reason", "at"}`` when the address bounced
                   (no email of any kind is sent to it), else null.
``users.update``   ``{"id", "email"?, "first_name"?, "last_name"?, "frequency"?,
                   "unsubscribed"?, "add_to_crm"?, "promo_tags"?, "clear_bounce"?,
                   "actor"?}``; ``source``, ``kuloo_id``, ``bounce`` and the sync's fields
                   are refused by name. ``"clear_bounce": true`` clears the bounce (mail
                   resumes from now, no backlog; audit field ``bounce``), with the other
                   changes in one transaction; on a user not bounced it changes nothing.
``users.activity`` ``{"id", "at"?}``: Last active = ``at`` (ISO, capped at now) or now;
                   it never moves backwards.
``users.list``     ``{"channel", "query"?, "has_sync_error"?, "subscription"?, "source"?,
                   "promo"?, "crm_kind"?, "bounced"?, "after"?, "limit"?}`` → ``{"users",
                   "next", "total"}``, by id; pass ``next`` as ``after``; ``limit`` 1–500,
                   50. ``bounced`` true: only bounced users; false: only the others.
``users.audit``    ``{"id", "limit"?}`` → ``{"entries": [{"at", "actor", "field", "old",
                   "new", "note"}]}``, newest first.
``users.erase``    ``{"id", "confirm": <the user's email>}`` → ``{"id", "channel",
                   "erased": true, "erased_at"}``: the user's personal data removed, a
                   tombstone left (docs/operations.md); a wrong ``confirm``:
                   ``invalid_params``; no ``erasure-key`` credential: ``unavailable``.
=================  =====================================================================

``actor`` is ``admin`` (default) or ``app``. A change publishes ``user.updated`` with the
document; an edit that changes nothing publishes and audits nothing.

Each parameter check is a pure function (``check_new_user``, ``check_changes``,
``check_list``, …) that reports every problem at once; the handlers check, run one use
case of ``store.users`` (one crossing, ``now`` from the clock), publish ``user.updated``
for a change and render the typed result with ``render``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, TypeGuard

import structlog

from ..clock import ClockError, parse_instant
from ..services import Services
from ..store import erasure as erasure_store
from ..store import users as user_store
from ..sync import engine
from ..vocabulary import (
    SUBSCRIPTION_UNSUBSCRIBED,
    Actor,
    CrmKind,
    Frequency,
    InvalidEmail,
    Source,
    valid_email,
)
from . import render
from .context import Context
from .protocol import ProtocolError

log = structlog.get_logger("kuloo.control")

LIST_LIMIT_DEFAULT = 50
AUDIT_LIMIT_DEFAULT = 50
NAME_MAX = 200
QUERY_MAX = 200
TAG_MAX = 100
ID_MAX = 2**31 - 1  # ids are 32-bit integer columns (PostgreSQL refuses a larger parameter)

# What users.add and users.update take from their callers: an admin, or the Kuloo app.
CALLER_ACTORS = (Actor.ADMIN, Actor.APP)
# users.add creates admin-added and app-registered users; signup and sync users arrive
# through the links service and the sync engine.
ADD_SOURCES = (Source.ADMIN, Source.APP)
SUBSCRIPTIONS = (*(f.value for f in Frequency), SUBSCRIPTION_UNSUBSCRIBED)
CRM_KINDS = (*(k.value for k in CrmKind), user_store.CRM_NONE)
# Fields of the document that users.update refuses by name (rather than ignoring them).
READ_ONLY = (
    "source",
    "kuloo_id",
    "channel",
    "last_active",
    "crm",
    "sync_error",
    "bounce",  # cleared with "clear_bounce": true; set only by the bounce mailbox and relay
    "created_at",
    "updated_at",
)


class Problems:
    """Collects every problem with a request's parameters; ``raise_any`` reports them all."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, message: str) -> None:
        self.found.append(message)

    def raise_any(self) -> None:
        if self.found:
            raise ProtocolError(
                "invalid_params", "; ".join(self.found), details={"problems": self.found}
            )


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from JSON's \ud800
        return False
    return True


def _positive_id(params: dict[str, Any], key: str, problems: Problems, what: str) -> int | None:
    value = params.get(key)
    if not _is_int(value) or not 1 <= value <= ID_MAX:
        problems.add(f"'{key}' must be a positive integer {what} id")
        return None
    return value


def _limit(params: dict[str, Any], default: int, maximum: int, problems: Problems) -> int:
    value = params.get("limit", default)
    if not _is_int(value) or not 1 <= value <= maximum:
        problems.add(f"'limit' must be an integer from 1 to {maximum}")
        return default
    return value


def _name(params: dict[str, Any], key: str, out: dict[str, Any], problems: Problems) -> None:
    value = params[key]
    if not isinstance(value, str) or not _encodable(value):
        problems.add(f"'{key}' must be a string")
    elif len(value.strip()) > NAME_MAX:
        problems.add(f"'{key}' must be at most {NAME_MAX} characters")
    elif not value.isprintable():
        problems.add(f"'{key}' must not contain control characters")
    else:
        out[key] = value.strip()


def _email(value: Any, problems: Problems) -> str | None:
    if not isinstance(value, str) or not _encodable(value):
        problems.add("'email' must be a string")
        return None
    try:
        return valid_email(value)
    except InvalidEmail as exc:
        problems.add(f"'email': {exc}")
        return None


def _editable(params: dict[str, Any], problems: Problems) -> dict[str, Any]:
    """The editable fields present in ``params``, checked (the channel checks promo tags)."""
    out: dict[str, Any] = {}
    if "email" in params:
        email = _email(params["email"], problems)
        if email is not None:
            out["email"] = email
    for key in ("first_name", "last_name"):
        if key in params:
            _name(params, key, out, problems)
    if "frequency" in params:
        if params["frequency"] not in tuple(Frequency):
            problems.add(f"'frequency' must be one of {', '.join(Frequency)}")
        else:
            out["frequency"] = Frequency(params["frequency"])
    for key in ("unsubscribed", "add_to_crm"):
        if key in params:
            if not isinstance(params[key], bool):
                problems.add(f"'{key}' must be true or false")
            else:
                out[key] = params[key]
    if "promo_tags" in params:
        tags = params["promo_tags"]
        if not isinstance(tags, list) or not all(
            isinstance(t, str) and _encodable(t) for t in tags
        ):
            problems.add("'promo_tags' must be a list of the channel's sequential tags")
        else:
            dupes = sorted(t for t, n in Counter(tags).items() if n > 1)
            if dupes:
                problems.add(f"'promo_tags' lists {dupes!r} more than once")
            else:
                out["promo_tags"] = list(tags)
    return out


def _actor(params: dict[str, Any], problems: Problems) -> Actor:
    value = params.get("actor", Actor.ADMIN.value)
    if value not in CALLER_ACTORS:
        problems.add(f"'actor' must be one of {', '.join(CALLER_ACTORS)}")
        return Actor.ADMIN
    return Actor(value)


@dataclass(frozen=True)
class NewUser:
    channel_id: int
    fields: dict[str, Any]
    actor: Actor


def check_new_user(params: dict[str, Any]) -> NewUser:
    problems = Problems()
    channel_id = _positive_id(params, "channel", problems, "channel")
    if "email" not in params:
        problems.add("'email' is required")
    fields = _editable(params, problems)
    source = params.get("source", Source.ADMIN.value)
    if source not in ADD_SOURCES:
        problems.add("'source' must be 'admin' (the default) or '' (registered in the Kuloo app)")
    else:
        fields["source"] = Source(source)
    actor = _actor(params, problems)
    problems.raise_any()
    assert channel_id is not None
    return NewUser(channel_id, fields, actor)


@dataclass(frozen=True)
class Changes:
    user_id: int
    fields: dict[str, Any]
    actor: Actor
    clear_bounce: bool = False


def check_changes(params: dict[str, Any]) -> Changes:
    problems = Problems()
    user_id = _positive_id(params, "id", problems, "user")
    for key in READ_ONLY:
        if key in params:
            problems.add(f"'{key}' cannot be changed with users.update")
    fields = _editable(params, problems)
    clear_bounce = params.get("clear_bounce", False)
    if not isinstance(clear_bounce, bool):
        problems.add("'clear_bounce' must be true or false")
        clear_bounce = False
    actor = _actor(params, problems)
    problems.raise_any()
    assert user_id is not None
    return Changes(user_id, fields, actor, clear_bounce)


@dataclass(frozen=True)
class Listing:
    channel_id: int
    filters: user_store.Filters
    after: int | None
    limit: int


def check_list(params: dict[str, Any]) -> Listing:
    problems = Problems()
    channel_id = _positive_id(params, "channel", problems, "channel")
    query = params.get("query", "")
    if query is None:
        query = ""
    if not isinstance(query, str) or not _encodable(query) or len(query) > QUERY_MAX:
        problems.add(f"'query' must be a string of at most {QUERY_MAX} characters")
        query = ""
    has_error = params.get("has_sync_error")
    if has_error is not None and not isinstance(has_error, bool):
        problems.add("'has_sync_error' must be true or false")
        has_error = None
    subscription = params.get("subscription")
    if subscription is not None and subscription not in SUBSCRIPTIONS:
        problems.add(f"'subscription' must be one of {', '.join(SUBSCRIPTIONS)}")
        subscription = None
    source = params.get("source")
    if source is not None and source not in tuple(Source):
        problems.add(
            "'source' must be one of 'admin', 'signup', 'sync' or '' (registered in the app)"
        )
        source = None
    promo = params.get("promo")
    if promo is not None and (
        not isinstance(promo, str) or not promo or not _encodable(promo) or len(promo) > TAG_MAX
    ):
        problems.add(f"'promo' must be a tag (a non-empty string of at most {TAG_MAX} characters)")
        promo = None
    bounced = params.get("bounced")
    if bounced is not None and not isinstance(bounced, bool):
        problems.add("'bounced' must be true or false")
        bounced = None
    crm_kind = params.get("crm_kind")
    if crm_kind is not None and crm_kind not in CRM_KINDS:
        problems.add(f"'crm_kind' must be one of {', '.join(CRM_KINDS)}")
        crm_kind = None
    after = params.get("after")
    if after is not None and (not _is_int(after) or not 0 <= after <= ID_MAX):
        problems.add("'after' must be the 'next' of the previous page")
        after = None
    limit = _limit(params, LIST_LIMIT_DEFAULT, user_store.LIST_LIMIT_MAX, problems)
    problems.raise_any()
    assert channel_id is not None
    filters = user_store.Filters(
        query=query,
        has_sync_error=has_error,
        subscription=subscription,
        source=Source(source) if source is not None else None,
        promo=promo,
        crm_kind=crm_kind,
        bounced=bounced,
    )
    return Listing(channel_id, filters, after, limit)


# ----------------------------------------------------------------------------- handlers


def _updated(services: Services, doc: user_store.User) -> dict[str, Any]:
    services.publish("user.updated", doc)
    return render.user(doc)


async def users_add(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    new = check_new_user(params)
    doc = await services.store.run(
        user_store.add,
        new.channel_id,
        new.fields,
        new.actor,
        services.clock.now(),
        services.config.erasure_key(),
    )
    log.info("user added", user_id=doc.id, channel_id=doc.channel_id, actor=new.actor.value)
    return _updated(services, doc)


async def users_get(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    problems = Problems()
    if "id" in params:
        user_id = _positive_id(params, "id", problems, "user")
        problems.raise_any()
        assert user_id is not None
        return render.user(await services.store.run(user_store.get, user_id))
    if "channel" not in params or "email" not in params:
        raise ProtocolError("invalid_params", "give 'id', or 'channel' and 'email'")
    channel_id = _positive_id(params, "channel", problems, "channel")
    email = _email(params["email"], problems)
    problems.raise_any()
    assert channel_id is not None and email is not None
    return render.user(await services.store.run(user_store.get_by_email, channel_id, email))


async def users_update(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    changes = check_changes(params)
    done = await services.store.run(
        user_store.update,
        changes.user_id,
        changes.fields,
        changes.actor,
        services.clock.now(),
        clear_bounce=changes.clear_bounce,
    )
    if not done.changed:
        return render.user(done.user)
    log.info(
        "user updated", user_id=done.user.id, changed=list(done.changed), actor=changes.actor.value
    )
    return _updated(services, done.user)


async def users_activity(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    problems = Problems()
    user_id = _positive_id(params, "id", problems, "user")
    now = services.clock.now()
    at = now
    if "at" in params:
        try:
            if not isinstance(params["at"], str):
                raise ClockError("'at' must be a string")
            at = parse_instant(params["at"])
        except ClockError as exc:
            problems.add(f"'at': {exc}")
    problems.raise_any()
    assert user_id is not None
    done = await services.store.run(user_store.mark_active, user_id, at, now)
    if not done.changed:
        return render.user(done.user)
    return _updated(services, done.user)


async def users_list(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    listing = check_list(params)
    page = await services.store.run(
        user_store.list_page, listing.channel_id, listing.filters, listing.after, listing.limit
    )
    return {"users": [render.user(u) for u in page.users], "next": page.next, "total": page.total}


async def users_audit(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    problems = Problems()
    user_id = _positive_id(params, "id", problems, "user")
    limit = _limit(params, AUDIT_LIMIT_DEFAULT, user_store.AUDIT_LIMIT_MAX, problems)
    problems.raise_any()
    assert user_id is not None
    entries = await services.store.run(user_store.audit, user_id, limit)
    return {"entries": [render.audit_entry(e) for e in entries]}


def erasure_key_missing(services: Services) -> str:
    """The error text when the erasure-key credential is missing (never its content)."""
    name = services.config["credentials.erasure_key"]
    return (
        f"users.erase needs the erasure-key credential: put a long random secret in the "
        f"file {name!r} of the credentials folder ([credentials] erasure_key), and never "
        "change it (erased users are recognised by it)"
    )


async def users_erase(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    """``users.erase {"id", "confirm"}``: the user's personal data gone, a tombstone left.

    Like ``channels.delete``, not while the channel's sync runs (``conflict``), and under the
    delivery pass lock (on PostgreSQL both leases): no batch or send holds the user meanwhile.
    """
    services = context.services
    problems = Problems()
    user_id = _positive_id(params, "id", problems, "user")
    confirm = params.get("confirm")
    if not isinstance(confirm, str) or not confirm.strip():
        problems.add("'confirm' must be the user's email, typed out")
    problems.raise_any()
    assert user_id is not None and isinstance(confirm, str)
    key = services.config.erasure_key()
    if key is None:
        raise ProtocolError("unavailable", erasure_key_missing(services))
    channel_id = (await services.store.run(user_store.get, user_id)).channel_id
    sync_lock = engine.channel_lock(services, channel_id)
    if sync_lock.locked():
        raise ProtocolError(
            "conflict", "a sync of this channel is running; try again when it has ended"
        )
    async with sync_lock, context.delivery.pass_lock:
        async with (
            services.leases.hold("sync", channel_id) as sync_held,
            services.leases.hold("delivery", channel_id) as delivery_held,
        ):
            if not (sync_held and delivery_held):
                raise ProtocolError(
                    "conflict", "another daemon is working on this channel; try again shortly"
                )
            done = await services.store.run(
                erasure_store.erase, user_id, confirm, key, services.clock.now()
            )
    log.info("user erased", user_id=done.id, channel_id=done.channel_id)
    services.publish("user.erased", {"id": done.id, "channel": done.channel_id})
    return {
        "id": done.id,
        "channel": done.channel_id,
        "erased": True,
        "erased_at": done.erased_at.isoformat(),
    }


METHODS = {
    "users.add": users_add,
    "users.get": users_get,
    "users.update": users_update,
    "users.activity": users_activity,
    "users.list": users_list,
    "users.audit": users_audit,
}
