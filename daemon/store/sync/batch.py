"""One batch of Sell's change feed applied to Kuloo, in one transaction (``apply_batch``).

Deletions (with their lead conversions) first, then records: each record is matched to
a user (``rules.linking.decide``), then linked, imported as a new user
(``rules.importing``), merged (``rules.merge``) or recorded as a Sync error
(``rules.texts``); the feed state is kept, and the Sell writes that follow are returned
(``Outcome``). The batch is committed here before the engine acknowledges it to Sell.
Users are read and written inside the transaction (locked where the database can), so a
user changed meanwhile by a link click or an admin is merged as it is now: an opt-out is
never overwritten.

User rows change only through ``store.users`` (``apply_changes``/``insert``: audit log,
change times, revision). Portable tortoise queries only (SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from tortoise.transactions import in_transaction

from ...rules import caps, importing, linking, texts
from ...rules.linking import LinkIndex, UserRef
from ...rules.merge import KULOO, merge
from ...rules.texts import (
    E_CAP,
    E_CONVERTED,
    E_DUPLICATE,
    E_ERASED,
    E_NO_EMAIL,
    E_ORG_ONLY,
    E_REFUSED,
    E_TAMPERED,
    E_UNKNOWN_ID,
    E_VALUE,
)
from ...rules.values import (
    EMAIL,
    FIELD_NAMES,
    KULOO_ID,
    PROMO,
    SUBSCRIPTION,
    SYNC_ERROR,
    kuloo_values,
)
from ...vocabulary import RESTORED_AT, Actor, CrmKind, Plan, Source, email_key, to_kuloo
from .. import erasure
from .. import users as user_store
from ..models import Channel as ChannelRow
from ..models import SyncError
from ..models import User as UserRow
from .errors import clear_errors, errors_matching, payload_key, set_error
from .lookups import users_matching
from .rows import (
    channel_row,
    linked_count,
    record_ref,
    save_link,
    suspended_users,
    user_ref,
    user_view,
)
from .types import DeletionIn, Outcome, RecordIn, SellWrite

# Which user attributes a field's Kuloo change time is read from.
FIELD_ATTRS = {
    PROMO: ("promo_tags",),
    SUBSCRIPTION: ("frequency", "unsubscribed"),
    "email": ("email",),
    "first_name": ("first_name",),
    "last_name": ("last_name",),
}


def _changed_at(row: UserRow) -> dict[str, datetime | None]:
    stamps = row.changed_at or {}
    out: dict[str, datetime | None] = {}
    for name, attrs in FIELD_ATTRS.items():
        times = [datetime.fromisoformat(stamps[a]) for a in attrs if stamps.get(a)]
        out[name] = max(times) if times else row.created_at
    return out


def _user(d: linking.Decision) -> UserRef:
    """The user a merge, tampered, duplicate or link decision names (``linking.decide``)."""
    assert d.user is not None
    return d.user


def _unlink(row: UserRow) -> None:
    row.crm_kind = None
    row.crm_id = None
    row.crm_linked_at = None
    row.synced_values = {}


class _Batch:
    """One ``apply_batch`` call's working state (inside its transaction)."""

    def __init__(
        self, channel: ChannelRow, now: datetime, retries: int, erasure_key: bytes | None = None
    ) -> None:
        self.channel = channel
        self.erasure_key = erasure_key
        self.tombstones: list[importing.Tombstone] = []
        self.now = now
        self.retries = retries
        self.tags = tuple(channel.sequential_tags or ())
        self.cap = caps.cap_of(channel.plan)
        self.out = Outcome()
        self.rows: dict[int, UserRow] = {}
        self.index = LinkIndex()
        self.linked = 0
        self.user_errors: dict[int, SyncError] = {}
        self.suspended: set[int] = set()
        self.record_errors: set[tuple[str | None, int]] = set()
        self.pending: list[
            Any
        ] = []  # imported users' tags and first audit entries, inserted together
        self.pending_users: set[int] = set()
        self.imports: list[tuple[UserRow, RecordIn]] = []  # new users, not inserted yet
        self.writes = (
            user_store.RowWrites()
        )  # merged users' UPDATEs, written together before the commit
        # Right after a restore: unknown KulooIds are users created after the backup.
        self.adopting = bool((channel.sync_state or {}).get(RESTORED_AT))
        self.taken_kuloo_ids: set[str] = set()  # read by ``load`` when adopting

    async def flush(self) -> None:
        if self.pending:
            await user_store.save_pending(self.pending)
        self.pending_users.clear()

    def audit(self, row: UserRow, name: str, old: Any, new: Any, note: str) -> None:
        """An audit entry, inserted with the batch's others (``flush``): every entry of the
        batch goes through ``pending`` in order, so a user's log keeps its order."""
        self.pending.append(
            user_store.audit_entry(row, name, old, new, actor=Actor.SYNC, now=self.now, note=note)
        )

    async def load(self, records: Sequence[RecordIn], deletions: Sequence[DeletionIn]) -> None:
        cid = self.channel.id
        keys = [(r.kind, r.id) for r in records] + [(d.kind, d.id) for d in deletions]
        keys += [
            ("contact", d.conversion.individual_id)
            for d in deletions
            if d.conversion and d.conversion.individual_id is not None
        ]
        rows = await users_matching(cid, records, keys).select_for_update()
        # Tombstones of erased users these records may match (by KulooId, by email hash).
        hashes = [h for r in records if (h := self.email_hash(r.email))]
        self.tombstones = await erasure.matching(
            cid, [r.values[KULOO_ID] for r in records if r.values.get(KULOO_ID)], hashes
        )
        for row in rows:
            self.rows[row.id] = row
            self.index.put(user_ref(row))
        if self.adopting:  # after a restore: which KulooIds are taken, in any channel (one query)
            ids = [k for r in records if isinstance(k := r.values.get(KULOO_ID), str) and k]
            taken = await UserRow.filter(kuloo_id__in=ids).values_list("kuloo_id", flat=True)
            self.taken_kuloo_ids = set(cast("list[str]", taken))  # flat: bare values
        if self.cap is not None:  # no cap, no count to keep (``importing.over_cap``)
            self.linked = await linked_count(cid)
            self.suspended = await suspended_users(cid, self.cap)
        # The errors this batch may clear, read once (most records have none).
        query = errors_matching(cid, keys, list(self.rows))
        for e in await query if query is not None else ():
            if e.user_id is not None:
                self.user_errors[e.user_id] = e
            else:
                self.record_errors.add((e.crm_kind, int(e.crm_id)))

    def email_hash(self, email: str | None) -> str | None:
        if self.erasure_key is None:
            return None
        return importing.email_hash(self.erasure_key, email)

    async def clear(self, user: UserRow | None, kind: str | None, crm_id: int | None) -> bool:
        """``clear_errors``, skipped when this batch knows there is nothing to clear."""
        known = (user is not None and (user.id in self.user_errors or user.sync_error)) or (
            kind,
            crm_id,
        ) in self.record_errors
        if not known:
            return False
        if user is not None:
            self.user_errors.pop(user.id, None)
        self.record_errors.discard((kind, crm_id))
        return await clear_errors(self.channel.id, user, kind, crm_id)

    def _sync_write(self, rec: RecordIn, fields: dict[str, Any], user: UserRow | None) -> None:
        if fields:
            self.out.writes.append(
                SellWrite(
                    rec.kind,
                    rec.id,
                    fields,
                    user.id if user else None,
                    tuple(user.promo_tags or ()) if user else (),
                    rec.email or "",
                )
            )

    async def record_error(
        self, rec: RecordIn, code: str, text: str, user: UserRow | None = None
    ) -> None:
        """A record that does not sync: the error kept, and written to its Sync error field."""
        # An erased user's address is not kept again, not even beside the record's error.
        email = "" if code == E_ERASED else rec.email or ""
        if await set_error(
            self.channel.id,
            self.now,
            user=user,
            kind=rec.kind,
            crm_id=rec.id,
            email=email,
            code=code,
            text=text,
        ):
            self.out.add("errors")
        if user is not None:
            self.out.touched(user.id)
            recorded = await SyncError.filter(user_id=user.id).first()
            assert recorded is not None  # set_error just recorded it, in this transaction
            self.user_errors[user.id] = recorded
        else:
            self.record_errors.add((rec.kind, rec.id))
        if rec.values.get(SYNC_ERROR) != text:
            self._sync_write(rec, {SYNC_ERROR: text}, None)

    # -- deletions and conversions

    async def deletion(self, d: DeletionIn) -> RecordIn | None:
        """Apply one deletion; returns the contact to merge when the lead was converted."""
        ref = self.index.by_link.get((d.kind, d.id))
        await SyncError.filter(
            channel_id=self.channel.id, user_id=None, crm_kind=d.kind, crm_id=d.id
        ).delete()
        if ref is None:
            return None
        row = self.rows[ref.id]
        conv = d.conversion
        old = (d.kind, d.id)
        follow = (
            linking.follow_conversion(ref, conv.individual_id, self.index)
            if conv is not None
            else None
        )
        if follow is not None and follow.action == linking.CONVERTED_INTO_LINKED:
            # Merged into a contact another user has: that link stays; this user stops.
            # (follow_conversion names the contact and its holder for this action.)
            assert conv is not None and conv.individual_id is not None and follow.holder is not None
            _unlink(row)
            await save_link(row)
            self.index.relink(row.id, None)
            self.out.unlinked.append(old)
            await set_error(
                self.channel.id,
                self.now,
                user=row,
                kind=None,
                crm_id=None,
                email=row.email,
                code=E_CONVERTED,
                text=texts.converted_into_linked_contact(
                    d.id, conv.individual_id, follow.holder.email
                ),
            )
            self.audit(
                row,
                "crm",
                f"lead {d.id}",
                None,
                f"lead converted in Sell into contact "
                f"{conv.individual_id}, already synced with {follow.holder.email}: sync stopped",
            )
            self.out.add("errors")
            self.out.touched(row.id)
            return None
        if follow is not None and follow.action == linking.FOLLOW:
            # Follow the user to the contact. Fields the contact lacks take Kuloo's values
            # (their base is the blank), the others merge as usual: a contact with another
            # email is a Sell-side change of the user's email, not a new identity.
            assert conv is not None and conv.individual_id is not None  # follow names the contact
            contact = conv.contact
            base = dict(row.synced_values or {})
            if contact is not None:
                for name in FIELD_NAMES:
                    if contact.values.get(name) is None:
                        base[name] = None
            row.crm_kind, row.crm_id = CrmKind.CONTACT.value, conv.individual_id
            row.synced_values = base
            await save_link(row)
            self.index.relink(row.id, ("contact", conv.individual_id))
            self.out.unlinked.append(old)
            self.out.linked.append(("contact", conv.individual_id))
            self.audit(
                row,
                "crm",
                f"lead {d.id}",
                f"contact {conv.individual_id}",
                "lead converted in Sell: following the user to the contact",
            )
            self.out.touched(row.id)
            return contact
        _unlink(row)
        await save_link(row)
        self.index.relink(row.id, None)
        self.out.unlinked.append(old)
        self.out.touched(row.id)
        if conv is not None:  # converted to an organization only: never re-pushed
            await set_error(
                self.channel.id,
                self.now,
                user=row,
                kind=None,
                crm_id=None,
                email=row.email,
                code=E_ORG_ONLY,
                text=texts.organization_only_conversion(d.id, conv.organization_id),
            )
            self.out.add("errors")
            return None
        again = row.add_to_crm or self.channel.add_all_users_to_crm
        self.audit(
            row,
            "crm",
            f"{d.kind} {d.id}",
            None,
            "deleted in Sell: "
            + ("pushed again as a new lead" if again else "sync stopped for this user"),
        )
        return None

    # -- records

    async def record(self, rec: RecordIn) -> None:
        d = linking.decide(record_ref(rec), self.index)
        if d.action == linking.IGNORE:
            return
        if d.action in (linking.IMPORT, linking.UNKNOWN_KULOO_ID) and self.tombstones:
            gone = importing.erased(
                rec.values.get(KULOO_ID) or None, self.email_hash(rec.email), self.tombstones
            )
            if gone is not None:  # an erased user's record: never imported again meanwhile
                await self.record_error(rec, gone.code, gone.text)
                return
        if EMAIL in rec.cleaned:  # an address is never rewritten: it would mail someone else
            user = self.rows[_user(d).id] if d.action in (linking.MERGE, linking.TAMPERED) else None
            await self.record_error(rec, E_VALUE, texts.email_control_characters(), user)
            return
        if d.action == linking.MERGE and _user(d).id in self.suspended:
            # The plan was lowered below the links it has: the newest wait, linked, for room.
            await self.record_error(
                rec, E_CAP, texts.plan_cap(Plan(self.channel.plan)), self.rows[_user(d).id]
            )
        elif d.action == linking.MERGE:
            await self.merge(self.rows[_user(d).id], rec)
        elif d.action == linking.TAMPERED:
            assert d.expected is not None  # decide() names the KulooId to restore
            row = self.rows[_user(d).id]
            await self.record_error(
                rec, E_TAMPERED, texts.kuloo_id_changed(d.expected, rec.values.get(KULOO_ID)), row
            )
        elif d.action == linking.DUPLICATE:
            assert d.other is not None  # decide() names the record already linked
            kind, crm_id = d.other
            text = (
                texts.duplicate_kuloo_id(_user(d).kuloo_id, kind, crm_id)
                if rec.values.get(KULOO_ID)
                else texts.duplicate_email(rec.email or "", kind, crm_id)
            )
            await self.record_error(rec, E_DUPLICATE, text)
        elif d.action == linking.UNKNOWN_KULOO_ID and self.adopting and self.adoptable(rec):
            await self.import_record(rec, kuloo_id=rec.values[KULOO_ID])
        elif d.action == linking.UNKNOWN_KULOO_ID:
            await self.record_error(rec, E_UNKNOWN_ID, texts.unknown_kuloo_id(rec.values[KULOO_ID]))
        elif d.action == linking.NO_EMAIL:
            await self.record_error(rec, E_NO_EMAIL, texts.no_email())
        elif d.action == linking.LINK:
            refused = importing.over_cap(self.channel.plan, self.linked)
            if refused is not None:
                await self.record_error(rec, refused.code, refused.text)
                return
            row = self.rows[_user(d).id]
            row.crm_kind, row.crm_id, row.crm_linked_at = rec.kind, rec.id, self.now
            row.synced_values, row.crm_push_at = {}, None
            await save_link(row)
            self.index.relink(row.id, (rec.kind, rec.id))
            self.linked += 1
            self.out.linked.append((rec.kind, rec.id))
            self.audit(row, "crm", None, f"{rec.kind} {rec.id}", "linked to the Sell record")
            await self.merge(row, rec)
        elif d.action == linking.IMPORT:
            await self.import_record(rec)

    def adoptable(self, rec: RecordIn) -> bool:
        """After a restore: the record's KulooId is free to adopt (no user anywhere has it)."""
        kuloo_id = rec.values.get(KULOO_ID)
        return isinstance(kuloo_id, str) and bool(kuloo_id) and kuloo_id not in self.taken_kuloo_ids

    async def import_record(self, rec: RecordIn, *, kuloo_id: str | None = None) -> None:
        """A new user from ``rec`` (what it becomes is ``importing.new_user``'s decision);
        ``kuloo_id``: the one it already carries (a user the restored copy did not know)."""
        user = importing.new_user(
            rec.email,
            rec.values,
            sequential_tags=self.tags,
            plan=self.channel.plan,
            linked=self.linked,
        )
        if isinstance(user, importing.Refusal):
            await self.record_error(rec, user.code, user.text)
            return
        fields = {
            **user,
            "crm_kind": rec.kind,
            "crm_id": rec.id,
            "crm_linked_at": self.now,
            "synced_values": dict(rec.values),
        }
        if kuloo_id is not None:
            fields["kuloo_id"] = kuloo_id
            source = rec.values.get("Source")
            if source in {s.value for s in Source}:  # who added them, as Sell kept it
                fields["source"] = source
        row = user_store.new_row(self.channel.id, fields, self.now, checked=False)
        # Inserted with the batch's other imports (``save_imports``); until then the index
        # knows it by a provisional id, enough to call a later record with its email or
        # KulooId a duplicate of this one.
        self.index.put(
            UserRef(-1 - len(self.imports), row.kuloo_id, row.email_key, (rec.kind, rec.id))
        )
        self.imports.append((row, rec))
        self.linked += 1
        self.out.linked.append((rec.kind, rec.id))
        self.out.add("users_created")
        await self.clear(None, rec.kind, rec.id)

    async def save_imports(self) -> None:
        """The users this batch imports: inserted together, then merged with their records."""
        imports, self.imports = self.imports, []
        added = [
            (row, f"added from Sell {rec.kind} {rec.id}" + rec.cleaning_note(importing.IMPORTED))
            for row, rec in imports
        ]
        await user_store.insert_many(added, actor=Actor.SYNC, now=self.now, pending=self.pending)
        for row, rec in imports:
            self.rows[row.id] = row
            self.index.put(user_ref(row))
            self.pending_users.add(row.id)
            self.out.touched(row.id)
            await self.merge(row, rec, imported=True)

    async def merge(self, row: UserRow, rec: RecordIn, *, imported: bool = False) -> None:
        err = self.user_errors.get(row.id)
        refused = err is not None and err.code == E_REFUSED
        if not refused and await self.clear(row, rec.kind, rec.id):
            self.out.touched(row.id)
        base = dict(row.synced_values or {})

        def run_merge():
            return merge(
                base,
                kuloo_values(user_view(row)),
                rec.values,
                kuloo_changed_at=_changed_at(row),
                sell_updated_at=rec.updated_at,
            )

        result = run_merge()
        hold = False
        if refused and not {n for n in result.to_sell if n != SYNC_ERROR}:
            # What Sell refused is no longer asked for: the error has cleared itself.
            await self.clear(row, rec.kind, rec.id)
            self.out.touched(row.id)
            result = run_merge()
        elif (
            refused
            and err is not None
            and err.payload_key == payload_key(result.to_sell)
            and err.attempts >= self.retries
        ):
            hold = True  # refused that often: wait for a change (the base stays where it was)
        self.out.add("conflicts", result.conflicts)
        # The base moves for the fields now agreed; those still to write move once Sell takes them.
        new_base = {n: v for n, v in result.base.items() if n not in result.to_sell}
        for name in result.to_sell:
            if name in base:
                new_base[name] = base[name]
        base_saved = new_base == (row.synced_values or {})
        if row.id in self.pending_users and (result.to_kuloo or not imported):
            await self.flush()  # its tag rows are in before apply_changes rewrites them
        if result.to_kuloo:
            attrs = importing.sell_changes(result.to_kuloo, rec.email, sequential_tags=self.tags)
            if isinstance(attrs, importing.Refusal):
                await self.record_error(rec, attrs.code, attrs.text, row)
                return
            if "email" in attrs:
                taken = (
                    await UserRow.filter(
                        channel_id=row.channel_id, email_key=email_key(attrs["email"])
                    )
                    .exclude(id=row.id)
                    .first()
                )
                if taken is not None:
                    await self.record_error(
                        rec,
                        E_DUPLICATE,
                        texts.duplicate_email(
                            attrs["email"], taken.crm_kind or "user", taken.crm_id or taken.id
                        ),
                        row,
                    )
                    return
            for change in result.changes:
                if change.side != KULOO:
                    continue
                field_attrs = {
                    a: attrs[a] for a in to_kuloo(change.field, change.new) if a in attrs
                }
                if change.field == "email":
                    field_attrs = {"email": attrs["email"]}
                note = (
                    f"{change.note} (Kuloo had {change.kuloo!r}, Sell had {change.sell!r})"
                    + rec.cleaning_note([change.field])
                )
                also = () if base_saved else ("synced_values",)  # saved by the same UPDATE
                row.synced_values = new_base
                if await user_store.apply_changes(
                    row,
                    field_attrs,
                    actor=Actor.SYNC,
                    now=self.now,
                    note=note,
                    also=also,
                    pending=self.pending,
                    writes=self.writes,
                ):
                    base_saved = True
            if not imported:
                self.out.add("users_updated")
            self.out.touched(row.id)
        for change in result.changes:
            if change.side != KULOO and not imported:
                self.audit(
                    row,
                    change.field,
                    change.sell,
                    change.kuloo,
                    f"written to Sell {rec.kind} {rec.id}: {change.note}",
                )
        if not base_saved:
            row.synced_values = new_base
            self.writes.save(row, ["synced_values"])
        if not hold:
            self._sync_write(rec, dict(result.to_sell), row)


async def apply_batch(
    channel_id: int,
    records: Sequence[RecordIn],
    deletions: Sequence[DeletionIn],
    feed_state: Mapping[str, Any] | None,
    now: datetime,
    retries: int = 3,
    erasure_key: bytes | None = None,
) -> Outcome:
    """Apply one batch of the change feed in one transaction; returns the Sell writes it needs.

    ``erasure_key``: the ``erasure-key`` credential, to match records to erased users by
    their email's keyed hash (without it, by KulooId only)."""
    async with in_transaction():
        channel = await channel_row(channel_id)
        batch = _Batch(channel, now, retries, erasure_key)
        await batch.load(records, deletions)
        todo: list[RecordIn] = []
        for d in deletions:
            contact = await batch.deletion(d)
            if contact is not None:
                todo.append(contact)
        seen: set[tuple[str, int]] = set()
        for rec in [*todo, *records]:
            if (rec.kind, rec.id) in seen:
                continue
            seen.add((rec.kind, rec.id))
            await batch.record(rec)
        await batch.save_imports()
        await batch.flush()
        await batch.writes.flush()
        if feed_state is not None:
            channel.sync_state = dict(feed_state)
            await channel.save(update_fields=["sync_state"])
    batch.out.add("pulled", len(records) + len(deletions))
    return batch.out
