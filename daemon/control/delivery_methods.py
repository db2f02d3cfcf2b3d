"""The delivery methods: articles.*, outbox.*, delivery.run, users.progress, users.reset_sequence.

``outbox.counts {"channel"}`` → ``{"counts": {state: n}}`` with every outbox state (the
dashboard's figures: counted in the database, no message read); ``outbox.list {"channel",
"state"?, "limit"?, "after"?}`` pages the messages themselves.

Thin like every handler: check the parameters (pure), call the ``Delivery`` (the
``Context``'s) or the store, render with ``render``. Registered into ``methods.METHODS``.
"""

from __future__ import annotations

from typing import Any, Literal, overload

from ..clock import iso
from ..delivery.service import ImportError_
from ..rules.headers import HeaderError
from ..services import Services
from ..store import delivery as delivery_store
from ..vocabulary import InvalidTransition, OutboxState
from . import render
from .context import Context, Handler, on_services
from .protocol import ProtocolError

MAX_LIMIT = 1000


def _invalid(message: str) -> ProtocolError:
    return ProtocolError("invalid_params", message)


@overload
def _positive(params: dict[str, Any], name: str, *, required: Literal[True] = ...) -> int: ...
@overload
def _positive(params: dict[str, Any], name: str, *, required: bool) -> int | None: ...
def _positive(params: dict[str, Any], name: str, *, required: bool = True) -> int | None:
    value = params.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _invalid(f"'{name}' must be a positive integer id")
    return value


async def articles_import(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    channel = _positive(params, "channel")
    path = params.get("path")
    if not isinstance(path, str) or not path.strip() or len(path) > 4096 or "\x00" in path:
        raise _invalid("'path' must be a folder under [articles] root")
    dry_run = params.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise _invalid("'dry_run' must be true or false")
    try:
        report = await context.delivery.import_articles(channel, path, dry_run=dry_run)
    except ImportError_ as exc:
        raise _invalid(str(exc)) from None
    if not dry_run:
        context.services.publish("articles.changed", {"channel": channel})
    return report


async def articles_list(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    channel = _positive(params, "channel")
    rows = await services.store.run(delivery_store.list_articles, channel)
    return {"articles": [render.article(a) for a in rows]}


async def articles_preview(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    article = _positive(params, "id")
    user = _positive(params, "user", required=False)
    try:
        return await context.delivery.preview(article, user)
    except HeaderError as exc:  # the user's name (say) cannot stand in a header: no email either
        raise _invalid(str(exc)) from None


async def outbox_list(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    channel = _positive(params, "channel")
    state = params.get("state")
    if state is not None and state not in tuple(OutboxState):
        raise _invalid(f"'state' must be one of {', '.join(OutboxState)}")
    limit = params.get("limit", 100)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise _invalid(f"'limit' must be an integer from 1 to {MAX_LIMIT}")
    after = _positive(params, "after", required=False)
    rows = await services.store.run(delivery_store.list_outbox, channel, state, limit, after)
    return {
        "messages": [render.outbox_entry(e) for e in rows],
        "next_after": rows[-1].id if len(rows) == limit else None,
    }


async def outbox_counts(services: Services, params: dict[str, Any]) -> dict[str, Any]:
    channel = _positive(params, "channel")
    counts = await services.store.run(delivery_store.outbox_counts, channel)
    return {"counts": {state.value: n for state, n in counts.items()}}


async def outbox_resolve(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    outbox_id = _positive(params, "id")
    decision = params.get("as")
    if decision not in ("sent", "resend"):
        raise _invalid("'as' must be 'sent' (it did arrive) or 'resend' (send it again)")
    services = context.services
    try:
        entry = await services.store.run(
            delivery_store.resolve, outbox_id, decision, services.clock.now()
        )
    except InvalidTransition as exc:
        raise ProtocolError("conflict", str(exc)) from None
    context.delivery.dirty = True
    return render.outbox_entry(entry)


async def outbox_resend_failed(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    """``outbox.resend_failed {"channel"}``: every failed message queued again, attempts reset."""
    channel = _positive(params, "channel")
    services = context.services
    count = await services.store.run(delivery_store.resend_failed, channel, services.clock.now())
    if count:
        context.delivery.mark_changed(channel)
    return {"resent": count}


async def delivery_resume(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    """``delivery.resume {}``: sending starts again after a restore paused it."""
    return {"resumed": context.delivery.resume()}


async def delivery_run(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    channel = _positive(params, "channel", required=False)
    counts = await context.delivery.run(channel)
    return {
        "queued": counts.queued,
        "sent": counts.sent,
        "failed": counts.failed,
        "uncertain": counts.uncertain,
    }


async def users_progress(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    user = _positive(params, "id")
    result = await context.delivery.progress(user)
    nxt = result["next"]
    return {
        "sent": [{**s, "sent_at": iso(s["sent_at"])} for s in result["sent"]],
        "next": None if nxt is None else {**nxt, "due_at": iso(nxt["due_at"])},
    }


async def users_reset_sequence(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    user = _positive(params, "id")
    cleared = await context.delivery.reset_sequence(user)
    return {"id": user, "cleared": cleared}


METHODS: dict[str, Handler] = {
    "articles.import": articles_import,
    "articles.list": on_services(articles_list),
    "articles.preview": articles_preview,
    "outbox.counts": on_services(outbox_counts),
    "outbox.list": on_services(outbox_list),
    "outbox.resolve": outbox_resolve,
    "outbox.resend_failed": outbox_resend_failed,
    "delivery.resume": delivery_resume,
    "delivery.run": delivery_run,
    "users.progress": users_progress,
    "users.reset_sequence": users_reset_sequence,
}
