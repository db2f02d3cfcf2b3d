"""The user and channel rows as every sync unit of work reads and changes them.

A user's view for the merge (``user_view``; ``VIEW_COLUMNS``/``view_of`` for a query that
reads only those columns), the entries of the link index (``user_ref``, ``record_ref``:
``rules.linking``), the channel's links counted and those suspended past a lowered plan's
cap (``linked_count``, ``suspended_users``), and a link saved (``save_link``). Runs inside
the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from ...rules.bounces import bounce_text, sync_error_field
from ...rules.linking import RecordRef, UserRef
from ...rules.values import KULOO_ID
from ...vocabulary import email_key
from .. import NotFound
from ..models import Channel as ChannelRow
from ..models import User as UserRow
from .types import RecordIn

# The columns ``user_view`` reads: a query for the merge need not read (and parse) the rest.
VIEW_COLUMNS = (
    "id",
    "kuloo_id",
    "email",
    "first_name",
    "last_name",
    "source",
    "frequency",
    "unsubscribed",
    "promo_tags",
    "last_active",
    "sync_error",
    "bounce_status",
    "bounce_reason",
    "bounce_at",
)


def user_view(row: UserRow, sync_error: str | None = None) -> dict[str, Any]:
    """The attributes ``values.kuloo_values`` reads, from a user row."""
    return {
        "kuloo_id": row.kuloo_id,
        "email": row.email,
        "first_name": row.first_name,
        "last_name": row.last_name,
        "source": row.source,
        "frequency": row.frequency,
        "unsubscribed": row.unsubscribed,
        "promo_tags": list(row.promo_tags or ()),
        "last_active": row.last_active,
        "sync_error": sell_sync_error(
            row.sync_error if sync_error is None else sync_error,
            row.bounce_status,
            row.bounce_reason,
            row.bounce_at,
        ),
    }


def sell_sync_error(
    sync_error: str, bounce_status: str, bounce_reason: str, bounce_at: datetime | None
) -> str:
    """Sell's Sync error field: the sync error, then " · " and the bounce (if the address
    bounced), one line of at most 250 characters (``rules.bounces.sync_error_field``)."""
    if not bounce_status or bounce_at is None:
        return sync_error
    return sync_error_field(sync_error, bounce_text(bounce_status, bounce_reason, bounce_at))


_BOUNCE_COLUMNS = ("bounce_status", "bounce_reason", "bounce_at")


def view_of(values: Mapping[str, Any]) -> dict[str, Any]:
    """``user_view`` of a row read as plain values (``VIEW_COLUMNS``)."""
    view = {k: values[k] for k in VIEW_COLUMNS if k not in ("id", *_BOUNCE_COLUMNS)}
    view["promo_tags"] = list(values["promo_tags"] or ())
    view["sync_error"] = sell_sync_error(
        values["sync_error"], values["bounce_status"], values["bounce_reason"], values["bounce_at"]
    )
    return view


def user_ref(row: UserRow) -> UserRef:
    link = (row.crm_kind, int(row.crm_id)) if row.crm_kind and row.crm_id is not None else None
    return UserRef(row.id, row.kuloo_id, row.email_key or email_key(row.email), link)


def record_ref(rec: RecordIn) -> RecordRef:
    return RecordRef(
        rec.kind,
        rec.id,
        rec.values.get(KULOO_ID),
        email_key(rec.email) or None,
        rec.is_organization,
    )


async def channel_row(channel_id: int) -> ChannelRow:
    row = await ChannelRow.get_or_none(id=channel_id)
    if row is None:
        raise NotFound(f"no channel with id {channel_id}")
    return row


async def linked_count(channel_id: int) -> int:
    return await UserRow.filter(channel_id=channel_id, crm_id__not_isnull=True).count()


async def suspended_users(channel_id: int, cap: int | None) -> set[int]:
    """Users whose links are past a lowered plan's cap: the newest links (caps.select)."""
    if cap is None:
        return set()
    linked = await linked_count(channel_id)
    if linked <= cap:
        return set()
    ids = (
        await UserRow.filter(channel_id=channel_id, crm_id__not_isnull=True)
        .order_by("-crm_linked_at", "-id")
        .limit(linked - cap)
        .values_list("id", flat=True)
    )
    return set(cast("list[int]", ids))  # flat values_list: bare ids (typed as tuples)


async def save_link(row: UserRow) -> None:
    """Save the columns of ``row``'s link: kind, id, when, merge base, push intent."""
    await row.save(
        update_fields=["crm_kind", "crm_id", "crm_linked_at", "synced_values", "crm_push_at"]
    )
