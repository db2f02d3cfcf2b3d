"""Sync errors: kept (one per user, or per Sell record without a user), cleared, listed.

``set_error`` records one (its text also goes to the user's ``sync_error``), and counts
the attempts of one refused write (``payload_key``) so the engine stops retrying it;
``clear_errors`` removes them once their cause is gone; ``errors``/``error_count`` are
``sync.errors``. The codes and texts are the rules' (``rules.texts``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from tortoise.expressions import Q

from ..models import SyncError
from ..models import User as UserRow
from .rows import channel_row
from .types import ErrorDoc


def payload_key(fields: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


async def set_error(
    channel_id: int,
    now: datetime,
    *,
    user: UserRow | None,
    kind: str | None,
    crm_id: int | None,
    email: str,
    code: str,
    text: str,
    key: str = "",
) -> bool:
    """Record an error (one row per user, or per record without a user); True when new or changed."""
    query = (
        SyncError.filter(user_id=user.id)
        if user is not None
        else SyncError.filter(channel_id=channel_id, user_id=None, crm_kind=kind, crm_id=crm_id)
    )
    existing = await query.first()
    changed = True
    if existing is None:
        await SyncError.create(
            channel_id=channel_id,
            user_id=user.id if user else None,
            crm_kind=kind,
            crm_id=crm_id,
            email=email,
            code=code,
            error=text,
            payload_key=key,
            created_at=now,
            updated_at=now,
        )
    else:
        changed = (existing.code, existing.error, existing.crm_kind, existing.crm_id) != (
            code,
            text,
            kind,
            crm_id,
        )
        same_write = existing.payload_key == key and existing.code == code
        existing.attempts = existing.attempts + 1 if same_write else 1
        existing.code, existing.error, existing.crm_kind, existing.crm_id = code, text, kind, crm_id
        existing.email, existing.payload_key, existing.updated_at = email, key, now
        await existing.save()
    if user is not None and user.sync_error != text:
        user.sync_error = text
        user.updated_at = now
        await user.save(update_fields=["sync_error", "updated_at"])
    return changed


async def clear_errors(
    channel_id: int, user: UserRow | None, kind: str | None, crm_id: int | None
) -> bool:
    """Errors clear themselves when their cause is gone; True when there was one."""
    cleared = 0
    if kind is not None and crm_id is not None:
        cleared += await SyncError.filter(
            channel_id=channel_id, user_id=None, crm_kind=kind, crm_id=crm_id
        ).delete()
    if user is not None:
        cleared += await SyncError.filter(user_id=user.id).delete()
        if user.sync_error:
            user.sync_error = ""
            await user.save(update_fields=["sync_error"])
            cleared += 1
    return bool(cleared)


def errors_matching(
    channel_id: int, keys: Sequence[tuple[str, int]], user_ids: Sequence[int]
) -> Any:
    """The query for the errors of these records (those without a user) and of these users
    (the channel's), each branch of the OR a search of its own index (as in ``users_matching``);
    None when there is nothing to look for."""
    branches = [
        Q(
            channel_id=channel_id,
            crm_kind=kind,
            crm_id__in=[i for k, i in keys if k == kind],
            user_id=None,
        )
        for kind in sorted({k for k, _i in keys})
    ]
    if user_ids:
        branches.append(Q(user_id__in=list(user_ids)))
    return SyncError.filter(Q(*branches, join_type="OR")) if branches else None


async def errors(
    channel_id: int, after: int | None, limit: int
) -> tuple[list[ErrorDoc], int | None]:
    await channel_row(channel_id)
    query = SyncError.filter(channel_id=channel_id)
    if after is not None:
        query = query.filter(id__gt=after)
    rows = await query.order_by("id").limit(limit + 1)
    docs = [
        ErrorDoc(
            r.id,
            r.user_id,
            r.crm_kind,
            int(r.crm_id) if r.crm_id is not None else None,
            r.email,
            r.code,
            r.error,
            r.updated_at,
        )
        for r in rows[:limit]
    ]
    return docs, (docs[-1].id if len(rows) > limit else None)


async def error_count(channel_id: int) -> int:
    """How many Sync errors the channel has, all pages together (one COUNT, no rows read)."""
    return await SyncError.filter(channel_id=channel_id).count()
