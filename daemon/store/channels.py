"""Channel documents: the use cases behind ``channels.*`` (run on the store's loop).

Each function is one whole unit of work for ``Store.run`` (one crossing of the bridge)
and returns a typed result: ``Channel`` documents, ``CheckInputs`` for a connection
check, ``Updated`` for an edit. The Sell token enters as ``Secret`` and leaves only as
``Secret`` (``CheckInputs``) or masked (``Channel.api_token``). Business times come in as
``now`` (from the clock); the status rules are ``vocabulary``'s, this module persists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from ..secrets import Secret, mask
from ..vocabulary import ConnectionStatus, Plan, connection_after_token_change, verified_at_after
from . import Conflict, Invalid, NotFound
from .models import Channel as ChannelRow

EDITABLE = ("name", "plan", "add_all_users_to_crm", "sequential_tags", "sender", "postal_address")


@dataclass(frozen=True)
class Connection:
    status: ConnectionStatus
    problems: tuple[str, ...]
    verified_at: datetime | None
    checked_at: datetime | None


@dataclass(frozen=True)
class Channel:
    """The channel document; the token only masked."""

    id: int
    name: str
    plan: Plan
    add_all_users_to_crm: bool
    sequential_tags: tuple[str, ...]
    sender: str
    postal_address: str
    api_token: str  # masked, "" when there is none
    connection: Connection
    sync_status: str
    last_sync_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True)
class CheckInputs:
    """What a connection check needs: which channel, its token, its sequential tags."""

    channel_id: int
    token: Secret
    sequential_tags: tuple[str, ...]


@dataclass(frozen=True)
class Updated:
    channel: Channel
    changed: tuple[str, ...]
    check: CheckInputs | None  # a new token or new tags with a token: check the connection now
    released_token: Secret | None  # a removed or replaced token that no channel uses any more


def _document(row: ChannelRow) -> Channel:
    return Channel(
        id=row.id,
        name=row.name,
        plan=Plan(row.plan),
        add_all_users_to_crm=row.add_all_users_to_crm,
        sequential_tags=tuple(row.sequential_tags or ()),
        sender=row.sender,
        postal_address=row.postal_address,
        api_token=mask(row.sell_token),
        connection=Connection(
            status=ConnectionStatus(row.connection_status),
            problems=tuple(row.connection_problems or ()),
            verified_at=row.verified_at,
            checked_at=row.connection_checked_at,
        ),
        sync_status=row.sync_status,
        last_sync_at=row.last_sync_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _inputs(row: ChannelRow) -> CheckInputs | None:
    if not row.sell_token:
        return None
    return CheckInputs(row.id, Secret(row.sell_token), tuple(row.sequential_tags or ()))


async def _row(channel_id: int, *, for_update: bool = False) -> ChannelRow:
    query = ChannelRow.select_for_update() if for_update else ChannelRow
    row = await query.get_or_none(id=channel_id)
    if row is None:
        raise NotFound(f"no channel with id {channel_id}")
    return row


async def _save(row: ChannelRow, now: datetime) -> None:
    """Save with ``updated_at`` from the clock (a model save stamps the wall's time)."""
    await row.save()
    await ChannelRow.filter(id=row.id).update(updated_at=now)
    row.updated_at = now


def _set_token(row: ChannelRow, token: Secret | None) -> None:
    # tortoise types a TextField as str even with null=True.
    row.sell_token = token.reveal() if token else None  # type: ignore[assignment]
    row.connection_status = connection_after_token_change(bool(token)).value
    row.connection_problems = []
    row.verified_at = None
    row.connection_checked_at = None


async def create(fields: Mapping[str, Any], token: Secret | None, now: datetime) -> Updated:
    """A new channel; with a token, ``check`` says to verify it at once."""
    try:
        async with in_transaction():
            row = ChannelRow(**{k: v for k, v in fields.items() if k in EDITABLE}, created_at=now)
            _set_token(row, token)
            await _save(row, now)
    except IntegrityError:
        raise Conflict(f"a channel named {fields.get('name')!r} already exists") from None
    return Updated(_document(row), tuple(k for k in fields if k in EDITABLE), _inputs(row), None)


async def list_all() -> list[Channel]:
    return [_document(c) for c in await ChannelRow.all().order_by("id")]


async def get(channel_id: int) -> Channel:
    return _document(await _row(channel_id))


async def get_by_name(name: str) -> Channel:
    row = await ChannelRow.get_or_none(name=name)
    if row is None:
        raise NotFound(f"no channel named {name!r}")
    return _document(row)


async def update(
    channel_id: int, fields: Mapping[str, Any], set_token: bool, token: Secret | None, now: datetime
) -> Updated:
    """Apply the edits in one transaction.

    ``set_token`` with ``token`` None removes the token, which stops all syncing for the
    channel; links between users and CRM records are kept.
    """
    changed: list[str] = []
    released: Secret | None = None
    try:
        async with in_transaction():
            row = await _row(channel_id, for_update=True)
            for key, value in fields.items():
                if key in EDITABLE and getattr(row, key) != value:
                    setattr(row, key, value)
                    changed.append(key)
            old_token = row.sell_token
            if set_token and (token.reveal() if token else None) != old_token:
                _set_token(row, token)
                changed.append("api_token")
                if (
                    old_token
                    and not await ChannelRow.filter(sell_token=old_token)
                    .exclude(id=row.id)
                    .exists()
                ):
                    released = Secret(old_token)
            if changed:
                await _save(row, now)
    except IntegrityError:
        raise Conflict(f"a channel named {fields.get('name')!r} already exists") from None
    check = _inputs(row) if ("api_token" in changed or "sequential_tags" in changed) else None
    return Updated(_document(row), tuple(changed), check, released)


async def check_inputs(channel_id: int) -> CheckInputs | None:
    """What a connection check of this channel needs; None when it has no token."""
    return _inputs(await _row(channel_id))


async def set_connection(
    channel_id: int, token: Secret, status: ConnectionStatus, problems: Sequence[str], now: datetime
) -> Channel:
    """Record a check of ``token``; a check of a token replaced meanwhile is moot and ignored."""
    async with in_transaction():
        row = await _row(channel_id, for_update=True)
        if row.sell_token is None or Secret(row.sell_token) != token:
            return _document(row)
        row.connection_status = ConnectionStatus(status).value
        row.connection_problems = list(problems)
        row.connection_checked_at = now
        row.verified_at = verified_at_after(ConnectionStatus(status), row.verified_at, now)
        await _save(row, now)
    return _document(row)


async def awaiting_check() -> list[CheckInputs]:
    """Channels with a token whose last check could not reach Sell."""
    rows = await ChannelRow.filter(
        sell_token__not_isnull=True, connection_status=ConnectionStatus.UNVERIFIED.value
    )
    return [i for r in rows if (i := _inputs(r)) is not None]


async def due_for_reverify(now: datetime, every: timedelta) -> tuple[list[CheckInputs], datetime]:
    """Verified channels last verified ``every`` ago or more, and when the next one is due."""
    rows = await ChannelRow.filter(
        sell_token__not_isnull=True, connection_status=ConnectionStatus.VERIFIED.value
    )
    due = [
        i
        for r in rows
        if r.verified_at is None or r.verified_at + every <= now
        if (i := _inputs(r))
    ]
    later = [
        r.verified_at + every
        for r in rows
        if r.verified_at is not None and r.verified_at + every > now
    ]
    return due, min([*later, now + every])


async def count() -> int:
    return await ChannelRow.all().count()


DELETE_BATCH = 500  # users deleted (with their rows, by cascade) per statement


async def delete_users_batch(channel_id: int) -> int:
    """Delete up to ``DELETE_BATCH`` of the channel's users (their tags, progress, outbox,
    errors by cascade); 0 when none are left. One short transaction per call."""
    from .models import User

    async with in_transaction():
        ids = (
            await User.filter(channel_id=channel_id)
            .order_by("id")
            .limit(DELETE_BATCH)
            .values_list("id", flat=True)
        )
        if not ids:
            return 0
        await User.filter(id__in=list(ids)).delete()
        return len(ids)


async def delete(channel_id: int, confirm: str) -> str:
    """Delete the channel and everything of it (articles, runs, errors, audit, leases by
    cascade); ``confirm`` must be its exact name. Its users go first, in batches
    (``delete_users_batch``). Returns the name."""
    async with in_transaction():
        row = await _row(channel_id)
        if confirm != row.name:
            raise Invalid(f"'confirm' must be the channel's exact name, {row.name!r}")
        await row.delete()
        return row.name
