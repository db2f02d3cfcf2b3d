"""The control methods: names, parameter checks, and the use case each one runs.

Parameter checking is pure (``check_channel_fields``), so every rule is testable
without a socket; the handlers are thin: check, run one unit of work in the store,
publish an event, return plain data.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any

import structlog

from .. import __version__
from ..store import Conflict, NotFound
from ..store import channels as channel_store
from ..store.models import PLANS
from ..sync import connection
from .protocol import PROTOCOL_VERSION, ProtocolError

if TYPE_CHECKING:
    from ..config import Config
    from ..crm.pool import ClientPool
    from ..store.bridge import Store

log = structlog.get_logger("kuloo.control")

Handler = Callable[["Context", dict[str, Any]], Awaitable[Any]]


@dataclass
class Context:
    """What the methods may use; owned by ``app``."""

    config: Config
    store: Store
    sell_pool: ClientPool
    publish: Callable[[str, Any], None] = lambda event, data: None
    started_at: float = field(default_factory=time.monotonic)
    scheduler_status: Callable[[], dict[str, Any]] = dict
    stopping: bool = False
    connections: Callable[[], int] = lambda: 0  # open control connections, set by app


def _invalid(message: str) -> ProtocolError:
    return ProtocolError("invalid_params", message)


def _channel_id(params: dict[str, Any]) -> int:
    value = params.get("id")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _invalid("'id' must be a positive integer channel id")
    return value


def check_channel_fields(params: dict[str, Any], *, creating: bool) -> tuple[dict[str, Any], tuple[bool, str | None]]:
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
        if params["plan"] not in PLANS:
            problems.append(f"'plan' must be one of {', '.join(PLANS)}")
        else:
            out["plan"] = params["plan"]
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
            dupes = sorted({t for t in tags if tags.count(t) > 1})
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
    token_change: tuple[bool, str | None] = (False, None)
    if "api_token" in params:
        token = params["api_token"]
        if token is None or token == "":
            token_change = (True, None)
        elif not isinstance(token, str):
            problems.append("'api_token' must be a string, or null to remove it")
        else:
            token = token.strip()
            if any(c.isspace() for c in token) or not 20 <= len(token) <= 512:
                # Never echo the token back: it is a secret even when malformed.
                problems.append("'api_token' does not look like a Zendesk Sell API token (no spaces, 64 characters)")
            else:
                token_change = (True, token)
    if problems:
        raise ProtocolError("invalid_params", "; ".join(problems), details={"problems": problems})
    return out, token_change


async def status(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    channels = await ctx.store.run(channel_store.count)
    return {
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "pid": os.getpid(),
        "uptime_seconds": round(time.monotonic() - ctx.started_at, 3),
        "channels": channels,
        "store": str(ctx.store.db_path),
        "scheduler": ctx.scheduler_status(),
        "stopping": ctx.stopping,
        "connections": ctx.connections(),
    }


async def _check_connection(ctx: Context, channel_id: int) -> dict[str, Any]:
    return await connection.check_channel(
        ctx.store, ctx.sell_pool, channel_id, deadline_s=ctx.config["sell.verify_timeout_seconds"]
    )


async def channels_create(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    fields, (_, token) = check_channel_fields(params, creating=True)
    doc = await ctx.store.run(channel_store.create, fields, token)
    log.info("channel created", channel_id=doc["id"], channel=doc["name"])
    if token:
        doc = await _check_connection(ctx, doc["id"])
    ctx.publish("channel.updated", doc)
    return doc


async def channels_list(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"channels": await ctx.store.run(channel_store.list_all)}


async def channels_get(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    if "name" in params and "id" not in params:
        if not isinstance(params["name"], str) or len(params["name"]) > 200:
            raise _invalid("'name' must be a string of at most 200 characters")
        return await ctx.store.run(channel_store.get, None, params["name"])
    return await ctx.store.run(channel_store.get, _channel_id(params))


async def channels_update(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    channel_id = _channel_id(params)
    fields, token_change = check_channel_fields(params, creating=False)
    result = await ctx.store.run(channel_store.update, channel_id, fields, token_change)
    doc, changed = result["document"], result["changed"]
    if changed:
        log.info("channel updated", channel_id=channel_id, changed=changed)
        await connection.release_token(ctx.store, ctx.sell_pool, result.get("replaced_token"))
        # A new token, or new sequential tags (the Promo choices), is checked at once:
        # the reply lists every problem with the Sell setup.
        if doc["api_token"] and ("api_token" in changed or "sequential_tags" in changed):
            doc = await _check_connection(ctx, channel_id)
        ctx.publish("channel.updated", doc)
    return doc


async def channels_verify(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    channel_id = _channel_id(params)
    token, _tags, _status = await ctx.store.run(channel_store.connection_inputs, channel_id)
    if token is None:
        raise _invalid("the channel has no Zendesk Sell API token; set one with channels.update")
    doc = await _check_connection(ctx, channel_id)
    ctx.publish("channel.updated", doc)
    return doc


METHODS: dict[str, Handler] = {
    "status": status,
    "channels.create": channels_create,
    "channels.list": channels_list,
    "channels.get": channels_get,
    "channels.update": channels_update,
    "channels.verify": channels_verify,
}


async def dispatch(ctx: Context, method: str, params: dict[str, Any], request_id: Any = None) -> Any:
    """Run one method; store errors become protocol errors with their codes."""
    handler = METHODS.get(method)
    if handler is None:
        raise ProtocolError("unknown_method", f"unknown method {method!r}; known: {', '.join(sorted(METHODS))}", request_id)
    try:
        return await handler(ctx, params)
    except ProtocolError as exc:
        exc.id = request_id
        raise
    except NotFound as exc:
        raise ProtocolError("not_found", str(exc), request_id) from None
    except Conflict as exc:
        raise ProtocolError("conflict", str(exc), request_id) from None
