"""The control methods: names, parameter checks, the use case each runs, the rendering.

Parameter checking is pure (``check_channel_fields``), so every rule is testable without
a socket; the handlers are thin: check, run the use case (one crossing of the store
bridge per unit of work, through ``sync``/``store``), publish, render the typed result
with ``render``. Everything they use comes from the ``Context`` (``context``) the
control server made of what ``app`` built; most need only its ``Services``.
``clock.set``/``clock.advance`` exist only when the clock is manual.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any, TypeGuard

import structlog

from .. import __version__
from ..clock import MANUAL, ClockError, iso, parse_instant
from ..rules.mail import sender_domain
from ..rules.signing import aligned
from ..secrets import Secret
from ..services import Services
from ..store import Conflict, Invalid, NotFound
from ..store import bounces as bounce_store
from ..store import channels as channel_store
from ..store import leases as lease_store
from ..store import retention as retention_store
from ..store.health import StoreUnavailable
from ..store.sync import runs as sync_runs
from ..sync import connection, engine
from ..vocabulary import SELL_TOKEN_SHAPE, Plan, is_sell_token_shaped
from . import delivery_methods, render, sync_methods, user_methods
from .context import Context, Handler, on_services, on_services_all
from .protocol import PROTOCOL_VERSION, ProtocolError

log = structlog.get_logger("kuloo.control")

# How long clock.advance / clock.set wait by default for the work that became due.
SETTLE_SECONDS = 30.0
SETTLE_MAX_SECONDS = 600.0


@dataclass(frozen=True)
class ChannelEdit:
    """A checked channel edit: the fields, and the token (a ``Secret`` from the start)."""

    fields: dict[str, Any] = field(default_factory=dict)
    set_token: bool = False
    token: Secret | None = None  # with set_token: None removes the token


def _invalid(message: str) -> ProtocolError:
    return ProtocolError("invalid_params", message)


def _channel_id(params: dict[str, Any]) -> int:
    value = params.get("id")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _invalid("'id' must be a positive integer channel id")
    return value


def check_channel_fields(params: dict[str, Any], *, creating: bool) -> ChannelEdit:
    """Validate the editable fields of a channel document; every problem is reported."""
    problems: list[str] = []
    out: dict[str, Any] = {}
    if "name" in params or creating:
        name = params.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append("'name' must be a non-empty string")
        elif len(name.strip()) > 200:
            problems.append("'name' must be at most 200 characters")
        else:
            out["name"] = name.strip()
    if "plan" in params:
        if params["plan"] not in tuple(Plan):
            problems.append(f"'plan' must be one of {', '.join(Plan)}")
        else:
            out["plan"] = Plan(params["plan"]).value
    if "add_all_users_to_crm" in params:
        if not isinstance(params["add_all_users_to_crm"], bool):
            problems.append("'add_all_users_to_crm' must be true or false")
        else:
            out["add_all_users_to_crm"] = params["add_all_users_to_crm"]
    if "sequential_tags" in params:
        tags = params["sequential_tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            problems.append("'sequential_tags' must be a list of strings")
        else:
            bad = [t for t in tags if not t or t != t.strip() or len(t) > 100]
            dupes = sorted(t for t, n in Counter(tags).items() if n > 1)
            if bad:
                problems.append(f"'sequential_tags' has empty, padded or over-long tags: {bad!r}")
            if dupes:
                problems.append(f"'sequential_tags' lists {dupes!r} more than once")
            if not bad and not dupes:
                out["sequential_tags"] = tags
    if "sender" in params:
        sender = params["sender"]
        if not isinstance(sender, str) or (sender and "@" not in parseaddr(sender)[1]):
            problems.append("'sender' must be an email address, e.g. 'News <news@example.com>'")
        else:
            out["sender"] = sender.strip()
    if "postal_address" in params:
        if not isinstance(params["postal_address"], str) or len(params["postal_address"]) > 1000:
            problems.append("'postal_address' must be a string of at most 1000 characters")
        else:
            out["postal_address"] = params["postal_address"]
    set_token, token = False, None
    if "api_token" in params:
        raw = params["api_token"]
        if raw is None or raw == "":
            set_token = True
        elif not isinstance(raw, str):
            problems.append("'api_token' must be a string, or null to remove it")
        else:
            secret = Secret(raw.strip())
            value = secret.reveal()
            if not is_sell_token_shaped(value):
                # Never echo the token back: it is a secret even when malformed.
                problems.append(
                    f"'api_token' does not look like a Zendesk Sell API token ({SELL_TOKEN_SHAPE})"
                )
            else:
                set_token, token = True, secret
    if problems:
        raise ProtocolError("invalid_params", "; ".join(problems), details={"problems": problems})
    return ChannelEdit(out, set_token, token)


def _check_sender_alignment(services: Services, edit: ChannelEdit) -> None:
    """With ``[dkim]`` set, a sender outside its domain is refused (DMARC alignment)."""
    domain = services.config["dkim.domain"]
    sender = edit.fields.get("sender")
    if domain and sender and not aligned(sender_domain(sender), domain):
        problem = f"'sender' must be at {domain} or under it ([dkim] domain: DMARC alignment)"
        raise ProtocolError("invalid_params", problem, details={"problems": [problem]})


async def _dkim_status(services: Services) -> dict[str, Any] | None:
    domain = services.config["dkim.domain"]
    if not domain:
        return None
    channels = await services.store.run(channel_store.list_all)
    return {
        "domain": domain,
        "selector": services.config["dkim.selector"],
        "misaligned": [
            {"id": c.id, "name": c.name, "sender": c.sender}
            for c in channels
            if c.sender and not aligned(sender_domain(c.sender), domain)
        ],
    }


async def status(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Answers during a store outage too: ``store_state`` says so (what it cannot read from
    the store is null then)."""
    services = context.services
    channels: int | None = None
    daemons: list[Any] = []
    size: int | None = None
    dkim: dict[str, Any] | None = None
    try:
        channels = await services.store.run(channel_store.count)
        if services.store.postgres:
            daemons = [render.daemon(d) for d in await services.store.run(lease_store.daemons)]
        size = await services.store.run(
            retention_store.database_size,
            None if services.store.postgres else str(services.config.database_path),
        )
        dkim = await _dkim_status(services)
    except StoreUnavailable:
        pass
    return {
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "pid": os.getpid(),
        "uptime_seconds": round(time.monotonic() - services.started_at, 3),
        "channels": channels,
        "store": services.store.where,
        "scheduler": services.scheduler.status(),
        "stopping": services.stopping,
        "clock": render.clock(services.clock),
        "connections": context.connections(),
        "links": {"url": context.links_url or None},
        "sell": {"web_url": services.config["sell.web_url"].rstrip("/")},  # record links
        "daemon": {"id": services.leases.id},
        "relay": context.delivery.relay.view(),
        "bounces": context.delivery.mailbox.view() if context.delivery.mailbox else None,
        "delivery": {"paused": context.delivery.paused},
        "dkim": dkim,
        "database": {"bytes": size},
        **({"daemons": daemons} if services.store.postgres else {}),
        "store_state": services.store.health.document(),
    }


async def channels_create(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    edit = check_channel_fields(params, creating=True)
    _check_sender_alignment(services, edit)
    created = await services.store.run(
        channel_store.create, edit.fields, edit.token, services.clock.now()
    )
    doc = created.channel
    log.info("channel created", channel_id=doc.id, channel=doc.name)
    if created.check is not None:
        doc = await connection.check_channel(services, created.check)
    services.publish("channel.updated", doc)
    engine.poke(services)
    return render.channel(doc)


async def channels_list(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "channels": [render.channel(c) for c in await services.store.run(channel_store.list_all)]
    }


async def channels_get(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    """``channels.get {"id"}`` or ``{"name"}`` → the channel document, plus ``sync``'s
    ``next_sync_at`` and ``last_run``, and ``deliverability``: ``{"sent_30d",
    "bounced_30d", "complaints_30d", "bounce_rate", "complaint_rate"}`` over the last 30
    days of business time (hard bounces and complaints per email sent; fractions, 0 when
    nothing was sent). Above 2 % bounces or 0.1 % complaints the mailbox providers start
    to refuse the sender (Gmail's hard line: 0.3 % complaints)."""
    if "name" in params and "id" not in params:
        if not isinstance(params["name"], str) or len(params["name"]) > 200:
            raise _invalid("'name' must be a string of at most 200 characters")
        doc = await services.store.run(channel_store.get_by_name, params["name"])
    else:
        doc = await services.store.run(channel_store.get, _channel_id(params))
    out = render.channel(doc)
    # The sync schedule and the last run, for the channel document.
    last = await services.store.run(sync_runs.last_run, doc.id)
    out["sync"]["next_sync_at"] = iso(await engine.next_sync_at(services, doc.id))
    out["sync"]["last_run"] = render.sync_run(last) if last else None
    # The channel owner's sender reputation: the last 30 days of business time.
    out["deliverability"] = render.deliverability(
        await services.store.run(bounce_store.deliverability, doc.id, services.clock.now())
    )
    return out


async def channels_update(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    channel_id = _channel_id(params)
    edit = check_channel_fields(params, creating=False)
    _check_sender_alignment(services, edit)
    updated = await services.store.run(
        channel_store.update,
        channel_id,
        edit.fields,
        edit.set_token,
        edit.token,
        services.clock.now(),
    )
    doc = updated.channel
    if updated.changed:
        log.info("channel updated", channel_id=channel_id, changed=list(updated.changed))
        if updated.released_token is not None:
            await services.sell_pool.discard(updated.released_token)
        # A new token, or new sequential tags (the Promo choices), is checked at once:
        # the reply lists every problem with the Sell setup.
        if updated.check is not None:
            doc = await connection.check_channel(services, updated.check)
        services.publish("channel.updated", doc)
        engine.poke(services)
    return render.channel(doc)


async def channels_verify(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    inputs = await services.store.run(channel_store.check_inputs, _channel_id(params))
    if inputs is None:
        raise _invalid("the channel has no Zendesk Sell API token; set one with channels.update")
    doc = await connection.check_channel(services, inputs)
    services.publish("channel.updated", doc)
    engine.poke(services)
    return render.channel(doc)


def _settle_seconds(params: dict[str, Any]) -> float:
    value = params.get("timeout_seconds", SETTLE_SECONDS)
    if not _is_number(value) or not 0 <= value <= SETTLE_MAX_SECONDS:
        raise _invalid(f"'timeout_seconds' must be a number from 0 to {SETTLE_MAX_SECONDS:g}")
    return float(value)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


async def _moved(services: Services, within_seconds: float) -> dict[str, Any]:
    """After a move: wait for the business-time work that became due, and say what ran."""
    settled = await services.scheduler.settle(within_seconds)
    services.publish("clock.moved", {"now": iso(services.clock.now())})
    return {
        "now": iso(services.clock.now()),
        "ran": settled.ran,
        "pending": settled.pending,
        "timed_out": settled.timed_out,
    }


async def clock_advance(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    seconds = params.get("seconds")
    if not _is_number(seconds) or seconds < 0:
        raise _invalid(
            "'seconds' must be a number of seconds, 0 or more (the clock only moves forwards)"
        )
    timeout = _settle_seconds(params)
    try:
        # Registered for the manual clock only (``available``).
        at = await services.clock.advance(seconds)  # type: ignore[attr-defined]
    except ClockError as exc:
        raise _invalid(str(exc)) from None
    log.info("clock advanced", seconds=seconds, now=iso(at))
    return await _moved(services, timeout)


async def clock_set(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(params.get("at"), str):
        raise _invalid("'at' must be an ISO 8601 time with its offset, e.g. 2026-01-01T09:00:00Z")
    timeout = _settle_seconds(params)
    try:
        # Registered for the manual clock only (``available``).
        at = await services.clock.set(parse_instant(params["at"]))  # type: ignore[attr-defined]
    except ClockError as exc:
        raise _invalid(str(exc)) from None
    log.info("clock set", now=iso(at))
    return await _moved(services, timeout)


async def channels_delete(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    """``channels.delete {"id", "confirm": <name>}``: the channel and everything of it, gone.

    The name typed out is the confirmation. No sync run and no delivery pass of the channel
    may be under way (this daemon's locks; on PostgreSQL both leases). Users go in small
    batches, each its own short transaction; the Sell records are left as they are.
    """
    services = context.services
    channel_id = _channel_id(params)
    confirm = params.get("confirm")
    if not isinstance(confirm, str) or not confirm:
        raise _invalid("'confirm' must be the channel's name, typed out")
    doc = await services.store.run(channel_store.get, channel_id)
    if confirm != doc.name:
        raise _invalid(f"'confirm' must be the channel's exact name, {doc.name!r}")
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
            users = 0
            while batch := await services.store.run(channel_store.delete_users_batch, channel_id):
                users += batch
            name = await services.store.run(channel_store.delete, channel_id, confirm)
    log.info("channel deleted", channel_id=channel_id, users=users)
    services.publish("channel.deleted", {"id": channel_id})
    return {"id": channel_id, "name": name, "deleted": True, "users": users}


METHODS: dict[str, Handler] = {
    "status": status,
    "channels.delete": channels_delete,
    "users.erase": user_methods.users_erase,
    **on_services_all(
        {
            "channels.create": channels_create,
            "channels.list": channels_list,
            "channels.get": channels_get,
            "channels.update": channels_update,
            "channels.verify": channels_verify,
            **user_methods.METHODS,
        }
    ),
}

METHODS.update(on_services_all(sync_methods.METHODS))
METHODS.update(delivery_methods.METHODS)

MANUAL_CLOCK_METHODS: dict[str, Handler] = {
    "clock.advance": on_services(clock_advance),
    "clock.set": on_services(clock_set),
}


def available(services: Services) -> dict[str, Handler]:
    """The methods this daemon answers: the clock is moved by hand only in manual mode."""
    if services.clock.mode == MANUAL:
        return {**METHODS, **MANUAL_CLOCK_METHODS}
    return METHODS


def unknown_method_message(method: str, methods: dict[str, Handler]) -> str:
    """Short enough for a log line however many methods there are: the same group's, or the groups.

    The full list travels in the error's ``details.known``.
    """
    group = method.split(".", 1)[0] if isinstance(method, str) else ""
    same = sorted(m.split(".", 1)[1] for m in methods if "." in m and m.split(".", 1)[0] == group)
    if same:
        return f"unknown method {method!r}; {group}.* has: {', '.join(same)}"
    groups = sorted({m.split(".", 1)[0] + (".*" if "." in m else "") for m in methods})
    return f"unknown method {method!r}; known: {', '.join(groups)}"


async def dispatch(
    context: Context, method: str, params: dict[str, Any], request_id: Any = None
) -> Any:
    """Run one method; store errors become protocol errors with their codes."""
    methods = available(context.services)
    handler = methods.get(method)
    if handler is None:
        raise ProtocolError(
            "unknown_method",
            unknown_method_message(method, methods),
            request_id,
            details={"known": sorted(methods)},
        )
    try:
        return await handler(context, params)
    except ProtocolError as exc:
        exc.id = request_id
        raise
    except StoreUnavailable as exc:  # "the database is unreachable" (or its disk is full)
        raise ProtocolError(
            "unavailable",
            f"{exc}; try again when it is back",
            request_id,
            details={"store_state": context.services.store.health.document()},
        ) from None
    except NotFound as exc:
        raise ProtocolError("not_found", str(exc), request_id) from None
    except Conflict as exc:
        raise ProtocolError("conflict", str(exc), request_id) from None
    except Invalid as exc:
        raise ProtocolError("invalid_params", str(exc), request_id) from None
