"""Kuloo-side changes going to Sell, and what Sell made of them.

``plan_pushes``: the Sell writes for linked users changed in Kuloo (changed fields only;
a lowered plan's suspended links get their cap error), and the users to push as new leads
(their intent stamped in ``crm_push_at`` before any POST, within the plan's cap).
``confirm_writes``: what Sell accepted (the merge base moves only then) and refused (Sync
errors, retried ``batch_retries`` times). ``link_pushed``: the leads found or created for
pushed users, linked.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from ...rules import caps, texts
from ...rules.texts import (
    E_CAP,
    E_CONVERTED,
    E_DUPLICATE,
    E_ORG_ONLY,
    E_REFUSED,
    E_TAMPERED,
    E_VALUE,
)
from ...rules.values import FIELD_NAMES, SYNC_ERROR, kuloo_values
from ...vocabulary import Actor, Plan, SyncRunStatus
from .. import users as user_store
from ..models import SyncError, SyncRun
from ..models import User as UserRow
from .errors import clear_errors, payload_key, set_error
from .rows import (
    VIEW_COLUMNS,
    channel_row,
    linked_count,
    save_link,
    suspended_users,
    user_view,
    view_of,
)
from .types import PushIn, PushPlan, SellWrite

# Errors that keep a user from being pushed as a new lead until the cause is gone.
BLOCKS_PUSH = frozenset({E_ORG_ONLY, E_CONVERTED})


async def _audit(row: UserRow, name: str, old: Any, new: Any, note: str, now: datetime) -> None:
    await user_store.audit_entry(row, name, old, new, actor=Actor.SYNC, now=now, note=note).save()


async def plan_pushes(channel_id: int, now: datetime, retries: int = 3) -> PushPlan:
    """Linked users changed in Kuloo (their Sell writes), and users to push as new leads.

    Each user to push gets ``crm_push_at`` stamped here, before any POST; one found
    already stamped is looked up in Sell before it is created again.
    """
    async with in_transaction():
        channel = await channel_row(channel_id)
        errors_by_user = {
            e.user_id: e
            for e in await SyncError.filter(channel_id=channel_id, user_id__not_isnull=True)
        }
        updates: list[SellWrite] = []
        for user_id in await suspended_users(channel_id, caps.cap_of(channel.plan)):
            cap_text = texts.plan_cap(Plan(channel.plan))
            err = errors_by_user.get(user_id)
            if err is not None and err.code == E_CAP:
                continue
            row = await UserRow.get(id=user_id)
            await set_error(
                channel_id,
                now,
                user=row,
                kind=None,
                crm_id=None,
                email=row.email,
                code=E_CAP,
                text=cap_text,
            )
            recorded = await SyncError.filter(user_id=user_id).first()
            assert recorded is not None  # set_error just recorded it, in this transaction
            assert row.crm_kind is not None  # a suspended user is linked: kind and id set together
            errors_by_user[user_id] = recorded
            updates.append(
                SellWrite(
                    row.crm_kind, int(row.crm_id), {SYNC_ERROR: cap_text}, row.id, (), row.email
                )
            )
        linked = UserRow.filter(channel_id=channel_id, crm_id__not_isnull=True)
        # Only users changed since the last run that got this far (and those with errors to
        # retry) can differ from what Sell has: never read every user of a big channel.
        since = (
            await SyncRun.filter(
                channel_id=channel_id,
                status__in=[SyncRunStatus.OK.value, SyncRunStatus.PARTIAL.value],
            )
            .order_by("-id")
            .first()
        )
        if since is not None:
            linked = linked.filter(
                Q(updated_at__gte=since.started_at) | Q(id__in=list(errors_by_user) or [0])
            )
        # plain values (no model per user: a first run reads every linked user)
        for vals in await linked.values(*VIEW_COLUMNS, "crm_kind", "crm_id", "synced_values"):
            err = errors_by_user.get(vals["id"])
            if err is not None and err.code in (E_TAMPERED, E_DUPLICATE, E_VALUE, E_CAP):
                continue  # waits for the record to change in Sell
            k = kuloo_values(view_of(vals))
            base = vals["synced_values"] or {}
            fields = {n: k[n] for n in FIELD_NAMES if n not in base or base[n] != k[n]}
            if not fields:
                continue
            if (
                err is not None
                and err.code == E_REFUSED
                and err.payload_key == payload_key(fields)
                and err.attempts >= retries
            ):
                continue  # refused that often: wait for a change
            updates.append(
                SellWrite(
                    vals["crm_kind"],
                    int(vals["crm_id"]),
                    fields,
                    vals["id"],
                    tuple(vals["promo_tags"] or ()),
                    vals["email"],
                )
            )
        wanted = UserRow.filter(channel_id=channel_id, crm_id__isnull=True)
        if not channel.add_all_users_to_crm:
            wanted = wanted.filter(add_to_crm=True)
        candidates = []
        for row in await wanted.order_by("id"):
            err = errors_by_user.get(row.id)
            if err is not None and (
                err.code in BLOCKS_PUSH or (err.code == E_REFUSED and err.attempts >= retries)
            ):
                continue
            candidates.append(row)
        count = await linked_count(channel_id)
        cap = caps.cap_of(channel.plan)
        chosen = caps.select(
            cap, [None] * min(count, cap if cap is not None else count), candidates
        )
        creates = []
        for row in chosen.admitted:
            look_up_first = row.crm_push_at is not None
            row.crm_push_at = now
            creates.append(
                PushIn(
                    row.id,
                    row.kuloo_id,
                    row.email,
                    kuloo_values(user_view(row, "")),
                    tuple(row.promo_tags or ()),
                    look_up_first,
                )
            )
        # every intent in one statement, committed with this unit before any POST
        await user_store.update_many(
            UserRow, ["crm_push_at"], [(now, row.id) for row in chosen.admitted]
        )
        for row in chosen.refused:
            await set_error(
                channel_id,
                now,
                user=row,
                kind=None,
                crm_id=None,
                email=row.email,
                code=E_CAP,
                text=texts.plan_cap(Plan(channel.plan)),
            )
    return PushPlan(updates, creates, len(chosen.refused))


async def confirm_writes(
    channel_id: int,
    accepted: Sequence[SellWrite],
    refused: Sequence[tuple[SellWrite, str]],
    now: datetime,
) -> tuple[list[int], bool]:
    """Sell took ``accepted`` (the base moves); it refused ``refused`` (Sync errors).

    Returns the users touched, and whether an error cleared (its Sync error is then due in Sell).
    """
    touched: list[int] = []
    cleared = False
    async with in_transaction():
        ids = {w.user_id for w in accepted if w.user_id} | {
            w.user_id for w, _ in refused if w.user_id
        }
        rows = {
            r.id: r
            for r in await UserRow.filter(id__in=list(ids) or [0])
            .select_for_update()
            .only("id", "crm_kind", "crm_id", "synced_values", "sync_error")
        }
        # A user's Sync error row goes with its ``sync_error`` text (``set_error``,
        # ``clear_errors``): users without one have no refusal to clear (most batches).
        with_error = [r.id for r in rows.values() if r.sync_error]
        refused_users = (
            set(
                await SyncError.filter(user_id__in=with_error, code=E_REFUSED).values_list(
                    "user_id", flat=True
                )
            )
            if with_error
            else set()
        )
        moved: dict[int, UserRow] = {}
        for w in accepted:
            row = rows.get(w.user_id) if w.user_id else None
            if row is None or (row.crm_kind, row.crm_id) != (w.kind, w.id):
                continue
            row.synced_values = {**(row.synced_values or {}), **w.fields}
            moved[row.id] = row
            if row.id in refused_users and (SYNC_ERROR not in w.fields or not w.fields[SYNC_ERROR]):
                await SyncError.filter(user_id=row.id, code=E_REFUSED).delete()
                refused_users.discard(row.id)
                touched.append(row.id)
                cleared = True
                if row.sync_error:
                    row.sync_error = ""
                    await row.save(update_fields=["sync_error"])
        await user_store.update_many(
            UserRow, ["synced_values"], [(r.synced_values, r.id) for r in moved.values()]
        )
        for w, text in refused:
            row = rows.get(w.user_id) if w.user_id else None
            await set_error(
                channel_id,
                now,
                user=row,
                kind=w.kind,
                crm_id=w.id,
                email=w.email,
                code=E_REFUSED,
                text=texts.sell_refused(text),
                key=payload_key(w.fields),
            )
            if row is not None:
                touched.append(row.id)
    return touched, cleared


async def link_pushed(
    channel_id: int,
    created: Sequence[tuple[int, str, int, dict[str, Any]]],
    failed: Sequence[tuple[int, str, bool]],
    now: datetime,
) -> list[int]:
    """Leads found or created for users: link them (base = what the lead carries).

    ``failed``: (user, error text, maybe applied) — an ambiguous create keeps its intent,
    so the next run looks the lead up before any second POST.
    """
    touched: list[int] = []
    async with in_transaction():
        for user_id, kind, crm_id, values in created:
            row = await UserRow.filter(id=user_id).select_for_update().first()
            if row is None:
                continue
            taken = (
                await UserRow.filter(channel_id=channel_id, crm_kind=kind, crm_id=crm_id)
                .exclude(id=user_id)
                .exists()
            )
            if taken:
                continue
            row.crm_kind, row.crm_id, row.crm_linked_at = kind, crm_id, now
            row.synced_values, row.crm_push_at = dict(values), None
            await save_link(row)
            await clear_errors(channel_id, row, None, None)
            await _audit(row, "crm", None, f"{kind} {crm_id}", "pushed to Sell as a lead", now)
            touched.append(row.id)
        for user_id, text, maybe_applied in failed:
            row = await UserRow.get_or_none(id=user_id)
            if row is None:
                continue
            if not maybe_applied:
                row.crm_push_at = None
                await row.save(update_fields=["crm_push_at"])
            await set_error(
                channel_id,
                now,
                user=row,
                kind=None,
                crm_id=None,
                email=row.email,
                code=E_REFUSED,
                text=texts.sell_refused(text),
            )
            touched.append(row.id)
    return touched
