"""The channel connection: is this channel's Sell token good and its setup right?

``channels.create``/``channels.update`` (a new token, changed sequential tags) and
``channels.verify`` run ``check_channel``; so do two scheduler jobs (``jobs``):

- ``connection-recheck`` (monotonic time: it is a retry): channels whose last check could
  not reach Sell are checked again after ``sell.recheck_seconds``.
- ``connection-reverify`` (business time): a verified channel is checked again once a
  day (``REVERIFY_EVERY``), so a custom field renamed or removed in Sell shows up as a
  listed problem instead of as failing syncs.

Sync runs only for channels whose status is ``verified``; the statuses and their rules
are in ``vocabulary``. Every check is bounded by ``sell.verify_timeout_seconds``.
Imports ``services``, ``crm``, ``store`` (through ``Store.run``) and the base modules.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
import trio

from ..crm.errors import AuthenticationError, scrub
from ..crm.verify import TOKEN_REJECTED, verify_connection
from ..scheduler import ClockJob, Job
from ..secrets import Secret
from ..services import Services
from ..store import channels as channel_store
from ..store.channels import Channel, CheckInputs
from ..vocabulary import ConnectionStatus, connection_after_check

log = structlog.get_logger("kuloo.sync")

REVERIFY_EVERY = timedelta(days=1)


async def check_channel(services: Services, inputs: CheckInputs) -> Channel:
    """Check one channel's token and custom fields; record and return its document."""
    # The client stays open for this check even if the token is replaced meanwhile.
    async with services.sell_pool.use(inputs.token) as sell:
        result = await verify_connection(
            sell, inputs.sequential_tags, deadline_s=services.config["sell.verify_timeout_seconds"]
        )
    status = connection_after_check(
        ok=result.ok, needs_new_token=result.needs_new_token, unreachable=result.unreachable
    )
    # Last guard: no problem text keeps a piece of the token, whatever Sell echoed.
    problems = [scrub(p, inputs.token.reveal()) for p in result.problems]
    log.info(
        "channel connection checked",
        channel_id=inputs.channel_id,
        status=status.value,
        problems=len(problems),
    )
    # A check of a token replaced meanwhile is moot: the store keeps the current document.
    return await services.store.run(
        channel_store.set_connection,
        inputs.channel_id,
        inputs.token,
        status,
        problems,
        services.clock.now(),
    )


async def token_rejected(
    services: Services, channel_id: int, token: Secret, exc: AuthenticationError
) -> Channel:
    """A 401 in the middle of any work: mark the channel as needing a new token.

    Only that channel stops syncing; the reason says what to do. A token replaced
    meanwhile is left alone (the document returned is the current one).
    """
    log.warning("sell rejected the channel's token", channel_id=channel_id, logref=exc.logref)
    return await services.store.run(
        channel_store.set_connection,
        channel_id,
        token,
        ConnectionStatus.NEEDS_NEW_TOKEN,
        [TOKEN_REJECTED],
        services.clock.now(),
    )


def jobs(services: Services) -> list[Job | ClockJob]:
    return [_recheck_job(services), _reverify_job(services)]


def _recheck_job(services: Services) -> Job:
    """Unreachable-Sell checks are retried on monotonic time, each channel after ``recheck_seconds``."""
    seen: dict[
        int, float
    ] = {}  # channel -> when (monotonic) we last checked it or first saw it waiting
    state = {"next": 0.0}

    async def run() -> None:
        recheck = services.config["sell.recheck_seconds"]
        now = trio.current_time()
        state["next"] = now + min(recheck, 60)
        waiting = await services.store.run(channel_store.awaiting_check)
        for gone in set(seen) - {i.channel_id for i in waiting}:
            del seen[gone]
        for inputs in waiting:
            # a channel first seen waiting was just checked (by whoever set its token)
            if now - seen.setdefault(inputs.channel_id, now) < recheck:
                continue
            seen[inputs.channel_id] = trio.current_time()
            services.publish("channel.updated", await check_channel(services, inputs))

    return Job("connection-recheck", lambda now: state["next"], run)


def _reverify_job(services: Services) -> ClockJob:
    state: dict[str, datetime | None] = {"next": None}  # None: not looked yet, due at once

    async def run() -> None:
        due, state["next"] = await services.store.run(
            channel_store.due_for_reverify, services.clock.now(), REVERIFY_EVERY
        )
        for inputs in due:
            services.publish("channel.updated", await check_channel(services, inputs))

    return ClockJob("connection-reverify", lambda now: state["next"] or now, run)
