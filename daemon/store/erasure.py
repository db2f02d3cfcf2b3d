"""A user's erasure (``users.erase``) and the tombstone it leaves (docs/operations.md).

``erase`` deletes the user row in one transaction: tags, sequence progress, outbox and
bounce events go with it (cascades; so does a confirmation's bounce that names the
address); the user's audit entries keep their fact but lose their values and
notes (so do other entries of the channel that name the address); their Sync errors, and
any record error that carries or names their address, are deleted. An ``ErasedUser`` row
keeps what the sync needs to recognise the Sell record again (the former id and KulooId,
the email's keyed hash, the record) and no personal data; the channel's audit log gets one
line naming only the former id. SQLite's ``secure_delete`` (``bridge``) overwrites what is
deleted, so it is gone from the file.

A new user with that address (``users.add``, a signup) ends the tombstone and takes the
former KulooId back, so the Sell record that still carries it links to them again
(``adopt``). Tombstones are matched per channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from ..rules.importing import Tombstone, email_hash
from ..rules.texts import E_ERASED
from ..vocabulary import Actor, email_key
from . import Invalid, NotFound
from .models import AuditEntry, BounceEvent, ErasedUser, SyncError
from .models import User as UserRow


@dataclass(frozen=True)
class Erased:
    """What ``erase`` did (no personal data)."""

    id: int
    channel_id: int
    erased_at: datetime


async def erase(user_id: int, confirm: str, key: bytes, now: datetime) -> Erased:
    """Erase one user; ``confirm`` must be their email (compared as ``email_key``)."""
    async with in_transaction():
        row = await UserRow.select_for_update().get_or_none(id=user_id)
        if row is None:
            raise NotFound(f"no user {user_id}")
        if email_key(confirm) != row.email_key:
            raise Invalid("'confirm' must be the user's email, typed out")
        hashed = email_hash(key, row.email) or ""
        await AuditEntry.filter(user_id=row.id).update(old=None, new=None, note="")
        # Other entries of the channel that name the address (a duplicate, a conversion note,
        # an address another user had before): their values and notes go too.
        await AuditEntry.filter(
            Q(note__icontains=row.email)
            | Q(old__icontains=row.email)
            | Q(new__icontains=row.email),
            channel_id=row.channel_id,
        ).update(old=None, new=None, note="")
        mine = (
            Q(user_id=row.id)
            | Q(channel_id=row.channel_id, email__iexact=row.email)
            | Q(channel_id=row.channel_id, error__icontains=row.email)
        )
        if row.crm_kind is not None and row.crm_id is not None:
            mine |= Q(
                channel_id=row.channel_id, user_id=None, crm_kind=row.crm_kind, crm_id=row.crm_id
            )
        await SyncError.filter(mine).delete()
        # Their bounce events go with the row (cascade); a bounce without a user (a
        # confirmation email's) that names the address goes too.
        await BounceEvent.filter(
            channel_id=row.channel_id, user_id=None, reason__icontains=row.email
        ).delete()
        await ErasedUser.create(
            channel_id=row.channel_id,
            former_id=row.id,
            kuloo_id=row.kuloo_id,
            email_hash=hashed,
            crm_kind=row.crm_kind,
            crm_id=row.crm_id,
            erased_at=now,
        )
        await AuditEntry.create(
            channel_id=row.channel_id,
            user_id=None,
            at=now,
            actor=Actor.ADMIN.value,
            field="user",
            note=f"user {row.id} erased",
        )
        await row.delete()
    return Erased(user_id, row.channel_id, now)


async def adopt(channel_id: int, email: str, key: bytes | None) -> str | None:
    """End the tombstones of ``email`` in the channel (a new user has it): the former
    KulooId to give the new user (the newest), or None. Inside the caller's transaction."""
    hashed = email_hash(key, email) if key is not None else None
    if hashed is None:
        return None
    stones = await ErasedUser.filter(channel_id=channel_id, email_hash=hashed).order_by("-id")
    if not stones:
        return None
    await ErasedUser.filter(id__in=[s.id for s in stones]).delete()
    taken = await UserRow.filter(kuloo_id=stones[0].kuloo_id).exists()
    return None if taken else stones[0].kuloo_id


async def erased_since(channel_id: int, email: str, key: bytes | None) -> datetime | None:
    """When ``email`` was last erased in the channel while a tombstone stands, or None."""
    hashed = email_hash(key, email) if key is not None else None
    if hashed is None:
        return None
    stone = (
        await ErasedUser.filter(channel_id=channel_id, email_hash=hashed).order_by("-id").first()
    )
    return stone.erased_at if stone is not None else None


async def matching(channel_id: int, kuloo_ids: list[str], hashes: list[str]) -> list[Tombstone]:
    """The channel's tombstones these KulooIds or email hashes match (the sync's batch)."""
    if not kuloo_ids and not hashes:
        return []
    rows = await ErasedUser.filter(
        Q(channel_id=channel_id, kuloo_id__in=kuloo_ids or [""])
        | Q(channel_id=channel_id, email_hash__in=hashes or [""])
    )
    return [Tombstone(r.kuloo_id, r.email_hash, r.erased_at) for r in rows]


async def pending_records(channel_id: int) -> list[tuple[str, int]]:
    """Sell records whose "erased" state changed since their Sync error was last written:
    a tombstone's record without its error yet, an ``erased`` error whose tombstone ended.
    The engine reads them again by id (``lookups.orphans_to_recheck``)."""
    stones: set[tuple[str, int]] = {
        (r.crm_kind, int(r.crm_id))
        for r in await ErasedUser.filter(channel_id=channel_id)
        if r.crm_kind is not None and r.crm_id is not None
    }
    shown: set[tuple[str, int]] = {
        (r.crm_kind, int(r.crm_id))
        for r in await SyncError.filter(channel_id=channel_id, user_id=None, code=E_ERASED)
        if r.crm_kind is not None and r.crm_id is not None
    }
    return sorted((stones - shown) | (shown - stones))
