"""Which Kuloo user a Sell record belongs to, as a pure decision (docs/sync-rules.md, 2, 5, 6).

A record is matched by its link first, then by the KulooId it carries, then by its
normalised email:

- linked, KulooId ours (or blank: it is put back)   → ``merge``
- linked, KulooId changed to another value          → ``tampered`` (Sync error naming the
  value to restore; no other write, on either side)
- not linked, KulooId of an unlinked user            → ``link`` (a lead we created before a
  crash, a contact that kept the KulooId)
- not linked, KulooId of a user linked elsewhere     → ``duplicate`` naming that record
- not linked, KulooId of no user                     → ``unknown_kuloo_id``
- not linked, no KulooId, email of an unlinked user  → ``link``
- not linked, no KulooId, email of a linked user     → ``duplicate`` naming that record
- not linked, no KulooId, new email                  → ``import`` (a new user, source sync)
- no email                                           → ``no_email``
- an organization contact                            → ``ignore`` (never synced)

A duplicate across kinds may be a lead conversion that kept the lead (rule 5; sellsim's
``conversion_lead=kept``): a contact colliding with a user linked to a lead may be what the
lead became, and a lead colliding with a user linked to a contact may be the lead kept
after its conversion. ``conversion_lookup`` names the lead whose conversions tell. A
contact that carries neither a linked user's email nor their KulooId (a Sell user changed
or cleared them while converting, or the lead merged into a contact with another email)
may be what a linked lead became too: ``may_be_converted`` says which contacts to ask
about (by their own id), instead of importing them as a second user.

Where a user linked to a converted lead goes (``follow_conversion``; docs/sync-rules.md, rule 5,
with its edge cases):

- converted into a contact no other user has        → ``follow`` (re-linked to it)
- merged into a contact linked to another user      → ``converted_into_linked``: that
  link stays; this user is unlinked with a Sync error naming the contact and the other
  user, and is not pushed again (the person is the other user's now, in Sell's eyes)
- converted to an organization only                 → ``organization_only``: unlinked
  with a Sync error, not pushed again

Which linked lead, if any, became each of MANY contacts in question (``ConversionScan``):
at most ``FEW_CONVERSION_QUESTIONS`` are asked one by one (``individual_id=C``, the cheapest);
more are matched against ONE listing of the conversions, newest first, that stops as soon as
every contact is explained (a linked lead's conversion into it was seen), or is older than
any conversion into it can be (its ``created_at`` minus ``CONVERSION_CLOCK_SLACK``), or
after ``listing_pages(n)`` pages — what is still open then is asked one by one, so the
cost never exceeds the one-by-one reads by more than those few pages.

``LinkIndex`` is the plain lookup the engine keeps up to date while it walks a batch,
so a second record with the same new email in one batch is a duplicate of the first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

MERGE = "merge"
LINK = "link"
IMPORT = "import"
TAMPERED = "tampered"
DUPLICATE = "duplicate"
UNKNOWN_KULOO_ID = "unknown_kuloo_id"
NO_EMAIL = "no_email"
IGNORE = "ignore"
# follow_conversion
FOLLOW = "follow"
CONVERTED_INTO_LINKED = "converted_into_linked"
ORGANIZATION_ONLY = "organization_only"

# ConversionScan
FEW_CONVERSION_QUESTIONS = 2  # up to this many contacts: one ``individual_id`` read each
CONVERSIONS_PER_PAGE = 200  # GET /v2/lead_conversions' maximum ``per_page`` (this endpoint only)
# A conversion into contact C cannot predate C: C is either created by the conversion or an
# existing contact the lead merged into. Both timestamps are Sell's own, second-precision,
# stamped by different requests of its servers (the contact's row may be written a moment
# after the conversion's, and their clocks may disagree slightly) — 5 minutes of slack keeps
# that wide margin at the cost of reading a little further back.
CONVERSION_CLOCK_SLACK = timedelta(minutes=5)


@dataclass(frozen=True)
class UserRef:
    id: int
    kuloo_id: str
    email: str  # vocabulary.email_key
    link: tuple[str, int] | None = None  # (kind, crm id)


@dataclass(frozen=True)
class RecordRef:
    kind: str  # "lead" | "contact"
    id: int
    kuloo_id: str | None  # canonical: None when blank
    email: str | None  # vocabulary.email_key (None when blank)
    is_organization: bool = False


@dataclass(frozen=True)
class Decision:
    action: str
    user: UserRef | None = None
    other: tuple[str, int] | None = None  # the record already linked (duplicates)
    expected: str | None = None  # tampered: the KulooId to restore
    holder: UserRef | None = None  # converted_into_linked: the user the contact is linked to


@dataclass
class LinkIndex:
    by_id: dict[int, UserRef] = field(default_factory=dict)
    by_kuloo_id: dict[str, UserRef] = field(default_factory=dict)
    by_email: dict[str, UserRef] = field(default_factory=dict)
    by_link: dict[tuple[str, int], UserRef] = field(default_factory=dict)

    @classmethod
    def of(cls, users: list[UserRef]) -> LinkIndex:
        index = cls()
        for user in users:
            index.put(user)
        return index

    def put(self, user: UserRef) -> None:
        old = self.by_id.get(user.id)
        if old is not None:
            self.by_kuloo_id.pop(old.kuloo_id, None)
            if self.by_email.get(old.email) is old:
                self.by_email.pop(old.email, None)
            if old.link is not None and self.by_link.get(old.link) is old:  # only links are put
                self.by_link.pop(old.link, None)
        self.by_id[user.id] = user
        self.by_kuloo_id[user.kuloo_id] = user
        if user.email:
            self.by_email[user.email] = user
        if user.link is not None:
            self.by_link[user.link] = user

    def relink(self, user_id: int, link: tuple[str, int] | None) -> UserRef:
        user = replace(self.by_id[user_id], link=link)
        self.put(user)
        return user

    def linked(self) -> int:
        return len(self.by_link)


def decide(record: RecordRef, index: LinkIndex) -> Decision:
    if record.is_organization:
        return Decision(IGNORE)
    linked = index.by_link.get((record.kind, record.id))
    if linked is not None:
        if record.kuloo_id is not None and record.kuloo_id != linked.kuloo_id:
            return Decision(TAMPERED, linked, expected=linked.kuloo_id)
        return Decision(MERGE, linked)
    if record.kuloo_id is not None:
        owner = index.by_kuloo_id.get(record.kuloo_id)
        if owner is None:
            return Decision(UNKNOWN_KULOO_ID)
        if owner.link is not None:
            return Decision(DUPLICATE, owner, other=owner.link)
        return Decision(LINK, owner)
    if not record.email:
        return Decision(NO_EMAIL)
    owner = index.by_email.get(record.email)
    if owner is None:
        return Decision(IMPORT)
    if owner.link is not None:
        return Decision(DUPLICATE, owner, other=owner.link)
    return Decision(LINK, owner)


def conversion_lookup(kind: str, record_id: int, decision: Decision) -> int | None:
    """The lead whose conversions may explain a duplicate across kinds (None: a plain duplicate)."""
    if decision.action != DUPLICATE or decision.other is None or decision.other[0] == kind:
        return None
    return decision.other[1] if kind == "contact" else record_id


def may_be_converted(record: RecordRef, decision: Decision) -> bool:
    """A person contact that matches no user (it would be imported, or refused for its lack
    of email or its unknown KulooId): it may be what a linked lead became, so the contact's
    own lead conversions are asked before (only when the channel links leads)."""
    return (
        record.kind == "contact"
        and not record.is_organization
        and decision.action in (IMPORT, NO_EMAIL, UNKNOWN_KULOO_ID)
    )


def follow_conversion(user: UserRef, individual_id: int | None, index: LinkIndex) -> Decision:
    """Where ``user``, linked to a lead converted into ``individual_id`` (None: an
    organization only), goes. ``other`` names the contact."""
    if individual_id is None:
        return Decision(ORGANIZATION_ONLY, user)
    contact = ("contact", individual_id)
    holder = index.by_link.get(contact)
    if holder is not None and holder.id != user.id:
        return Decision(CONVERTED_INTO_LINKED, user, other=contact, holder=holder)
    return Decision(FOLLOW, user, other=contact)


def listing_pages(n: int) -> int:
    """The most pages of the conversions listing read for ``n`` contacts in question (then
    the rest is asked one by one)."""
    return math.ceil(n / CONVERSIONS_PER_PAGE) + 2


@dataclass(frozen=True)
class ConversionRef:
    """One lead conversion, as plain data (``created_at``: None when Sell gave none)."""

    id: int
    lead_id: int | None
    individual_id: int | None
    organization_id: int | None = None
    created_at: datetime | None = None


@dataclass
class ConversionScan:
    """Reading ``GET /v2/lead_conversions`` newest first for many contacts in question.

    ``created``: the scanned contacts' ``created_at`` (one without it is never scanned: it is
    asked by its id, ``by_id``). Feed it pages with ``take``: it says when paging stops —
    every contact explained or settled, or ``cap`` pages read. ``found`` holds, per contact,
    every conversion into it seen; ``open`` the contacts neither explained (a linked lead's
    conversion into them seen) nor settled (the listing is past the oldest moment a
    conversion into them may have). A listing that ends settles everything (``finish``).

    An explained contact is not followed further back: an older conversion of ANOTHER linked
    lead into the same contact is not seen here — that lead's user is then left on its lead
    until the lead's deletion is read (``lead_id=``), or, if Sell kept it, stays on it;
    never lost nor duplicated.
    """

    created: dict[int, datetime]
    is_linked_lead: Callable[[int], bool]
    cap: int
    by_id: list[int] = field(default_factory=list)
    pages: int = 0
    found: dict[int, list[ConversionRef]] = field(default_factory=dict)
    open: set[int] = field(default_factory=set)

    @classmethod
    def of(
        cls, contacts: Iterable[tuple[int, datetime | None]], is_linked_lead: Callable[[int], bool]
    ) -> ConversionScan:
        created: dict[int, datetime] = {}
        by_id: list[int] = []
        for contact_id, at in contacts:
            if at is None:
                by_id.append(contact_id)
            else:
                created[contact_id] = at
        return cls(created, is_linked_lead, listing_pages(len(created)), by_id, open=set(created))

    def take(self, page: Sequence[ConversionRef]) -> bool:
        """Match one page (newest first) to the contacts; True when paging stops."""
        self.pages += 1
        for conv in page:
            if conv.individual_id in self.created:
                self.found.setdefault(conv.individual_id, []).append(conv)
                if conv.lead_id is not None and self.is_linked_lead(conv.lead_id):
                    self.open.discard(conv.individual_id)
        dated = [c.created_at for c in page if c.created_at is not None]
        if dated:  # conversions further on are older still: the contacts created later are settled
            oldest = min(dated)
            self.open = {c for c in self.open if oldest >= self.created[c] - CONVERSION_CLOCK_SLACK}
        return not self.open or self.pages >= self.cap

    def finish(self) -> None:
        """The listing ended: no conversion is left unseen."""
        self.open.clear()

    def answered(self) -> dict[int, list[ConversionRef]]:
        """The conversions into each contact the listing answered for."""
        return {i: self.found.get(i, []) for i in self.created if i not in self.open}

    def ask_by_id(self) -> list[int]:
        """The contacts to ask one by one (``individual_id=``): without ``created_at``, or
        left open by the cap."""
        return [*self.by_id, *sorted(self.open)]
