"""Channel documents: the use cases behind ``channels.*`` (run on the store's loop).

Each function is one unit of work for ``Store.run`` and returns plain data. The Sell
token is returned only as ``Secret`` (``token_of``) or masked (``as_document``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from ..secrets import Secret, mask
from . import Conflict, NotFound
from .models import Channel

EDITABLE = ("name", "plan", "add_all_users_to_crm", "sequential_tags", "sender", "postal_address")


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def as_document(channel: Channel) -> dict[str, Any]:
    return {
        "id": channel.id,
        "name": channel.name,
        "plan": channel.plan,
        "add_all_users_to_crm": channel.add_all_users_to_crm,
        "sequential_tags": list(channel.sequential_tags or []),
        "sender": channel.sender,
        "postal_address": channel.postal_address,
        "api_token": mask(channel.sell_token),
        "connection": {
            "status": channel.connection_status,
            "problems": list(channel.connection_problems or []),
            "verified_at": _iso(channel.verified_at),
            "checked_at": _iso(channel.connection_checked_at),
        },
        "sync": {"status": channel.sync_status, "last_sync_at": _iso(channel.last_sync_at)},
        "created_at": _iso(channel.created_at),
        "updated_at": _iso(channel.updated_at),
    }


async def _get(channel_id: int) -> Channel:
    channel = await Channel.get_or_none(id=channel_id)
    if channel is None:
        raise NotFound(f"no channel with id {channel_id}")
    return channel


async def create(fields: dict[str, Any], api_token: str | None = None) -> dict[str, Any]:
    try:
        async with in_transaction():
            channel = await Channel.create(**{k: v for k, v in fields.items() if k in EDITABLE})
            if api_token:
                channel.sell_token = api_token
                channel.connection_status = "unverified"
                await channel.save(update_fields=["sell_token", "connection_status"])
    except IntegrityError:
        raise Conflict(f"a channel named {fields.get('name')!r} already exists") from None
    return as_document(channel)


async def list_all() -> list[dict[str, Any]]:
    return [as_document(c) for c in await Channel.all().order_by("id")]


async def get(channel_id: int | None = None, name: str | None = None) -> dict[str, Any]:
    if channel_id is not None:
        return as_document(await _get(channel_id))
    channel = await Channel.get_or_none(name=name)
    if channel is None:
        raise NotFound(f"no channel named {name!r}")
    return as_document(channel)


async def update(channel_id: int, fields: dict[str, Any], token_change: tuple[bool, str | None] = (False, None)) -> dict[str, Any]:
    """Apply the edits; returns the document plus what changed (``changed`` list).

    ``token_change`` is (set?, value): value None or "" removes the token and stops all
    syncing for the channel; links between users and CRM records are kept.
    """
    changed: list[str] = []
    try:
        async with in_transaction():
            channel = await Channel.select_for_update().get_or_none(id=channel_id)
            if channel is None:
                raise NotFound(f"no channel with id {channel_id}")
            for key, value in fields.items():
                if key in EDITABLE and getattr(channel, key) != value:
                    setattr(channel, key, value)
                    changed.append(key)
            setting, token = token_change
            old_token = channel.sell_token
            if setting and (token or None) != channel.sell_token:
                channel.sell_token = token or None
                channel.connection_status = "unverified" if token else "none"
                channel.connection_problems = []
                channel.verified_at = None
                channel.connection_checked_at = None
                changed.append("api_token")
            if changed:
                await channel.save()
    except IntegrityError:
        raise Conflict(f"a channel named {fields.get('name')!r} already exists") from None
    result: dict[str, Any] = {"document": as_document(channel), "changed": changed}
    if "api_token" in changed and old_token:
        result["replaced_token"] = Secret(old_token)
    return result


async def token_of(channel_id: int) -> Secret | None:
    channel = await _get(channel_id)
    return Secret(channel.sell_token) if channel.sell_token else None


async def connection_inputs(channel_id: int) -> tuple[Secret | None, list[str], str]:
    """What a connection check needs: the token, the sequential tags, the current status."""
    channel = await _get(channel_id)
    token = Secret(channel.sell_token) if channel.sell_token else None
    return token, list(channel.sequential_tags or []), channel.connection_status


async def set_connection(channel_id: int, status: str, problems: list[str], token: Secret | None) -> dict[str, Any] | None:
    """Record a connection check, unless the token changed meanwhile (then None)."""
    async with in_transaction():
        channel = await Channel.select_for_update().get_or_none(id=channel_id)
        if channel is None:
            raise NotFound(f"no channel with id {channel_id}")
        current = Secret(channel.sell_token) if channel.sell_token else None
        if current != token:
            return None
        now = datetime.now(UTC)
        channel.connection_status = status
        channel.connection_problems = problems
        channel.connection_checked_at = now
        if status == "verified":
            channel.verified_at = now
        elif status != "unverified":
            channel.verified_at = None
        await channel.save()
    return as_document(channel)


async def awaiting_check(older_than: datetime) -> list[int]:
    """Channels with a token whose check could not finish (Sell unreachable) and is due again."""
    rows = await Channel.filter(sell_token__not_isnull=True, connection_status="unverified").values_list(
        "id", "connection_checked_at"
    )
    return [cid for cid, checked in rows if checked is None or checked <= older_than]


async def token_users(token: str) -> int:
    """How many channels use this token (the client pool shares one client per token)."""
    return await Channel.filter(sell_token=token).count()


async def count() -> int:
    return await Channel.all().count()
