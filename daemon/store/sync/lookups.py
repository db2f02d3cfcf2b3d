"""Read-only questions the sync engine asks between its units of work.

Which users a batch of records may belong to (``users_matching``, by link, KulooId and
email; also the query ``batch`` locks), which records collide with a user linked to the
other kind and may be a lead conversion (``conversion_lookups``), which records without
a user to read again because their error may have gone, or an erasure began or ended
(``orphans_to_recheck``), and the
linked record ids (``linked_ids``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tortoise.expressions import Q

from ...rules import caps, linking
from ...rules.linking import LinkIndex
from ...rules.texts import E_CAP, E_DUPLICATE
from ...rules.values import KULOO_ID
from ...vocabulary import email_key
from ..erasure import pending_records
from ..models import SyncError
from ..models import User as UserRow
from .rows import channel_row, linked_count, record_ref, suspended_users, user_ref
from .types import RecordIn


def users_matching(
    channel_id: int, records: Sequence[RecordIn], keys: Sequence[tuple[str, int]]
) -> Any:
    """The query for the channel's users these records may belong to: by link, KulooId, email."""
    kuloo_ids = [r.values.get(KULOO_ID) for r in records if r.values.get(KULOO_ID)]
    emails = [e for r in records if (e := email_key(r.email))]
    # "" matches no row (PostgreSQL refuses a NUL in text, the old sentinel). The channel is
    # in each branch of the OR, so that each one is a search of its own index (SQLite's
    # multi-index OR, PostgreSQL's bitmap OR): with it outside, SQLite reads every user of
    # the channel for each batch.
    q = Q(channel_id=channel_id, kuloo_id__in=kuloo_ids or [""]) | Q(
        channel_id=channel_id, email_key__in=emails or [""]
    )
    for kind in ("lead", "contact"):
        ids = [i for k, i in keys if k == kind]
        if ids:
            q |= Q(channel_id=channel_id, crm_kind=kind, crm_id__in=ids)
    return UserRow.filter(q)


async def conversion_lookups(
    channel_id: int,
    records: Sequence[RecordIn],
    unmatched_contacts: bool = False,
) -> list[tuple[RecordIn, int | None, tuple[str, int] | None]]:
    """Records that collide with a user linked to the other kind (``linking.conversion_lookup``):
    (record, the lead whose conversions to read, the user's link); with ``unmatched_contacts``,
    also the contacts that match no user (``linking.may_be_converted``): (contact, None, None),
    whose own conversions are read. Read-only."""
    if not records:
        return []
    rows = await users_matching(channel_id, records, [(r.kind, r.id) for r in records])
    index = LinkIndex.of([user_ref(row) for row in rows])
    out: list[tuple[RecordIn, int | None, tuple[str, int] | None]] = []
    for rec in records:
        ref = record_ref(rec)
        d = linking.decide(ref, index)
        lead_id = linking.conversion_lookup(rec.kind, rec.id, d)
        if lead_id is not None:
            out.append((rec, lead_id, d.other))
        elif unmatched_contacts and linking.may_be_converted(ref, d):
            out.append((rec, None, None))
    return out


async def orphans_to_recheck(channel_id: int) -> list[tuple[str, int]]:
    """Records without a user whose error may have gone away: a cap with room again, a
    duplicate whose address is no longer linked. The engine reads them again."""
    channel = await channel_row(channel_id)
    rows = await SyncError.filter(
        channel_id=channel_id, user_id=None, code__in=[E_CAP, E_DUPLICATE]
    )
    room = caps.room_left(caps.cap_of(channel.plan), await linked_count(channel_id))
    keys = [email_key(r.email) for r in rows if r.code == E_DUPLICATE]
    linked = set(
        await UserRow.filter(
            channel_id=channel_id, email_key__in=keys or [""], crm_id__not_isnull=True
        ).values_list("email_key", flat=True)
    )
    out = []
    # Linked users suspended by a lowered plan, now inside the cap again.
    suspended = await suspended_users(channel_id, caps.cap_of(channel.plan))
    for e in await SyncError.filter(channel_id=channel_id, user_id__not_isnull=True, code=E_CAP):
        if e.user_id not in suspended:
            user = await UserRow.get_or_none(id=e.user_id)
            if user is not None and user.crm_kind and user.crm_id is not None:
                out.append((user.crm_kind, int(user.crm_id)))
    for r in rows:
        if r.crm_kind is None or r.crm_id is None:
            continue
        if r.code == E_CAP and (room is None or room > 0):
            out.append((r.crm_kind, int(r.crm_id)))
        elif r.code == E_DUPLICATE and email_key(r.email) not in linked:
            out.append((r.crm_kind, int(r.crm_id)))
    # Records of erased users: to show the "erased" error, or to link again once it ended.
    out.extend(k for k in await pending_records(channel_id) if k not in out)
    return out


async def linked_ids(channel_id: int) -> dict[str, list[int]]:
    """The Sell record ids linked to the channel's users, by kind."""
    ids: dict[str, list[int]] = {"lead": [], "contact": []}
    for kind, crm_id in await UserRow.filter(
        channel_id=channel_id, crm_id__not_isnull=True
    ).values_list("crm_kind", "crm_id"):
        ids.setdefault(kind, []).append(int(crm_id))
    return ids
