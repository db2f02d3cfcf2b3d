"""The channel connection: is this channel's Sell token good and its setup right?

``channels.update`` (a new token, changed sequential tags) and ``channels.verify`` run
``check_channel``; so does the scheduler, for channels whose last check could not reach
Sell. Sync runs only for channels whose status is ``verified``.

Statuses: ``none`` (no token), ``unverified`` (not checked yet, or Sell could not be
reached: checked again every ``sell.recheck_seconds``), ``verified``, ``failed`` (the
custom fields need fixing in Sell: every problem is listed), ``needs_new_token`` (Sell
rejected the token with 401; only a new token helps).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from ..crm.errors import AuthenticationError, scrub
from ..crm.pool import ClientPool
from ..crm.verify import TOKEN_REJECTED, Verification, verify_connection
from ..secrets import Secret
from ..store import channels as channel_store
from ..store.bridge import Store

log = structlog.get_logger("kuloo.sync")


def status_of(result: Verification) -> str:
    """The channel's connection status after a check (pure)."""
    if result.ok:
        return "verified"
    if result.needs_new_token:
        return "needs_new_token"
    if result.unreachable:
        return "unverified"
    return "failed"


async def check_channel(store: Store, pool: ClientPool, channel_id: int, *, deadline_s: float = 60.0) -> dict[str, Any]:
    """Check one channel's token and custom fields; record and return its document."""
    token, tags, _ = await store.run(channel_store.connection_inputs, channel_id)
    if token is None:
        return await store.run(channel_store.get, channel_id)
    # The client stays open for this check even if the token is replaced meanwhile.
    async with pool.use(token) as sell:
        result = await verify_connection(sell, tags, deadline_s=deadline_s)
    status = status_of(result)
    # Last guard: no problem text keeps a piece of the token, whatever Sell echoed.
    problems = [scrub(p, token.reveal()) for p in result.problems]
    doc = await store.run(channel_store.set_connection, channel_id, status, problems, token)
    if doc is None:  # the token changed while we checked: the check is moot, not an error
        log.info("channel connection check moot: the token was replaced meanwhile", channel_id=channel_id)
        return await store.run(channel_store.get, channel_id)
    log.info("channel connection checked", channel_id=channel_id, status=status, problems=len(problems))
    return doc


async def token_rejected(store: Store, channel_id: int, token: Secret, exc: AuthenticationError) -> dict[str, Any] | None:
    """A 401 in the middle of any work: mark the channel as needing a new token.

    Only that channel stops syncing; the reason says what to do. Returns the document, or
    None when the token was already replaced.
    """
    log.warning("Sell rejected the channel's token", channel_id=channel_id, logref=exc.logref)
    return await store.run(channel_store.set_connection, channel_id, "needs_new_token", [TOKEN_REJECTED], token)


async def release_token(store: Store, pool: ClientPool, token: Secret | None) -> None:
    """Close the pooled client of a removed or replaced token, unless a channel still uses it."""
    if token is not None and await store.run(channel_store.token_users, token.reveal()) == 0:
        await pool.discard(token)


async def recheck_unreachable(store: Store, pool: ClientPool, recheck_seconds: float, publish) -> None:
    """Scheduler job: check again the channels whose last check could not reach Sell."""
    cutoff = datetime.now(UTC) - timedelta(seconds=recheck_seconds)
    for channel_id in await store.run(channel_store.awaiting_check, cutoff):
        doc = await check_channel(store, pool, channel_id)
        publish("channel.updated", doc)
