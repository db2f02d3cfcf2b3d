"""What a bounce, a complaint or a mailto unsubscribe does to a user (docs/delivery.md,
"Bounces and complaints").

- ``take`` / ``take_many``: one classified message from the bounce mailbox
  (``rules.bounces.classify``), or a batch of them, recorded by the SHA-256 of its bytes in
  the same transaction as its effects, so a message read again after a crash has no
  second effect.
- ``refused_at_rcpt``: the relay's own 5xx answers of one delivery batch (no DSN at all);
  when ten or more users got the same refusal, none is marked (the relay's problem).
- Clearing is ``users.update``'s (``{"clear_bounce": true}``) and ``users.apply_changes``'
  (a changed email), through ``users.clear_bounce_fields``. A bounce about mail sent before
  the address changed or was cleared has no effect (a late report about the old address).
- Only a genuine signed token names a user: a report that quotes an address but carries
  no token is counted and has no effect (anyone can write to the bounce domain).
- ``deliverability``: the channel's figures over the last 30 days.

Effects: a hard bounce (or ``soft_limit`` soft ones since the address was last changed or
cleared, ``rules.bounces.soft_bounces_count_as_hard``) makes the user bounced (no email of
any kind; the bounce goes into Sell's Sync error through ``sync.rows.user_view``) and
cancels their queued mail; a complaint unsubscribes them (actor ``complaint``); a mailto
unsubscribe acts as the one-click link (actor ``link``, note "mailto"). Each effect is an
audit entry and a ``BounceEvent`` row.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from ..rules.bounces import Accepted, Bounce, Kind, VerpKind, soft_bounces_count_as_hard
from ..vocabulary import Actor, OutboxState, email_key
from . import users as user_store
from .delivery import cancel_queued
from .models import BounceEvent, InboundMessage, OutboxMessage
from .models import User as UserRow

# Ten or more users refused with the same words in one batch: the relay's problem, not theirs.
SAME_REFUSAL_LIMIT = 10
WINDOW = timedelta(days=30)  # the deliverability figures' span
SOFT_LOOKBACK = timedelta(days=365)  # soft bounces and deliveries older than this are not read
_ADDRESS = re.compile(r"<[^>]*>|\S+@\S+")
CANCELLED_BOUNCED = "the address bounced"
CANCELLED_COMPLAINT = "the user complained (marked an email as spam)"


@dataclass(frozen=True)
class Taken:
    """What one inbound message did."""

    kind: Kind
    user_ids: tuple[int, ...] = ()  # users changed (bounced, unsubscribed)
    channel_ids: tuple[int, ...] = ()  # channels of every user it named
    duplicate: bool = False  # read before (a crash before its removal): nothing done again


@dataclass(frozen=True)
class Deliverability:
    sent_30d: int
    bounced_30d: int
    complaints_30d: int
    bounce_rate: float  # bounced_30d / sent_30d (0 when nothing was sent)
    complaint_rate: float

    def as_dict(self) -> dict[str, int | float]:
        return {
            "sent_30d": self.sent_30d,
            "bounced_30d": self.bounced_30d,
            "complaints_30d": self.complaints_30d,
            "bounce_rate": self.bounce_rate,
            "complaint_rate": self.complaint_rate,
        }


def bounce_of(row: UserRow) -> dict[str, str] | None:
    """``users.get``'s ``bounce``: ``{"status", "reason", "at"}``, or None."""
    if not row.bounce_status:
        return None
    at = row.bounce_at.isoformat() if row.bounce_at is not None else ""
    return {"status": row.bounce_status, "reason": row.bounce_reason, "at": at}


# ----------------------------------------------------------------------------- effects


async def _event(row: UserRow | None, channel_id: int, bounce: Bounce, kind: Kind, at: datetime):
    await BounceEvent.create(
        channel_id=channel_id,
        user_id=row.id if row is not None else None,
        outbox_id=bounce.outbox_id,
        kind=kind.value,
        status=bounce.status[:32],
        reason=bounce.reason,
        at=at,
    )


async def _mark_bounced(row: UserRow, status: str, reason: str, now: datetime, note: str) -> bool:
    """Make ``row`` bounced (if it is not already); True when it changed."""
    if row.bounce_status:
        return False
    row.bounce_status, row.bounce_reason, row.bounce_at = status[:32] or "5.0.0", reason, now
    row.revision += 1
    row.updated_at = now  # the next sync pushes the Sync error
    row.next_due_at = None
    await row.save(update_fields=[*user_store.BOUNCE_FIELDS, "revision", "updated_at"])
    text = user_store.bounce_text_of(row)
    await user_store.audit_entry(
        row, "bounce", None, text, actor=Actor.BOUNCE, now=now, note=note
    ).save()
    await cancel_queued(OutboxMessage.filter(user_id=row.id), now, CANCELLED_BOUNCED)
    return True


def _address_since(row: UserRow) -> datetime | None:
    """Since when the user's address is the one it is: its last change, or the last clearing
    of a bounce, whichever is later (None: since the user was created)."""
    times = [row.bounce_cleared_at]
    stamp = (row.changed_at or {}).get("email")
    if stamp:
        times.append(datetime.fromisoformat(stamp))
    return max((t for t in times if t is not None), default=None)


async def _about_an_older_address(row: UserRow, bounce: Bounce) -> bool:
    """A bounce about mail sent before the address changed (or before its bounce was
    cleared): a late report about the address that was, which says nothing of this one."""
    since = _address_since(row)
    if since is None:
        return False
    if bounce.outbox_id is None:
        return True
    sent = await OutboxMessage.get_or_none(id=bounce.outbox_id, user_id=row.id)
    return sent is None or sent.created_at < since


async def _soft_counts_as_hard(row: UserRow, now: datetime, soft_limit: int, soft_days: float):
    since = max(now - SOFT_LOOKBACK, _address_since(row) or now - SOFT_LOOKBACK)
    softs = await BounceEvent.filter(
        user_id=row.id, kind=Kind.SOFT.value, at__gte=since
    ).values_list("at", flat=True)
    sent = await OutboxMessage.filter(
        user_id=row.id, state=OutboxState.SENT.value, sent_at__gte=since
    ).values_list("id", "sent_at")
    bounced_ids = set(
        await BounceEvent.filter(user_id=row.id, outbox_id__not_isnull=True).values_list(
            "outbox_id", flat=True
        )
    )
    accepted = [Accepted(at, oid in bounced_ids) for oid, at in sent if at is not None]
    return soft_bounces_count_as_hard(
        cast("list[datetime]", softs),  # flat values_list: bare values (typed as tuples)
        accepted,
        now,
        soft_limit=soft_limit,
        soft_days=soft_days,
    )


async def _users_named(bounce: Bounce) -> list[UserRow]:
    """The user a bounce is about: the one its signed token names. A report without a
    genuine token names nobody, whatever address it quotes: anyone can write to the bounce
    domain, and every email this daemon sends carries its token (docs/delivery.md)."""
    token = bounce.token
    if token is not None and token.kind in (VerpKind.BOUNCE, VerpKind.UNSUBSCRIBE):
        row = await UserRow.select_for_update().get_or_none(kuloo_id=token.kuloo_id)
        return [row] if row is not None else []
    return []


async def _apply(
    bounce: Bounce, now: datetime, soft_limit: int, soft_days: float
) -> tuple[list[int], list[int]]:
    """The effects of ``bounce`` (inside the caller's transaction): changed and named users'
    ids, and their channels."""
    changed: list[int] = []
    channels: list[int] = []
    token = bounce.token
    if token is not None and token.kind == VerpKind.CONFIRM:  # a confirmation: counted only
        if bounce.kind in (Kind.HARD, Kind.SOFT, Kind.COMPLAINT) and token.channel is not None:
            await _event(None, token.channel, bounce, bounce.kind, now)
            channels.append(token.channel)
        return changed, channels
    for row in await _users_named(bounce):
        channels.append(row.channel_id)
        kind = bounce.kind
        if kind in (Kind.HARD, Kind.SOFT) and await _about_an_older_address(row, bounce):
            await _event(row, row.channel_id, bounce, Kind.MESSAGE, now)  # counted, no effect
        elif kind == Kind.HARD:
            await _event(row, row.channel_id, bounce, kind, now)
            if await _mark_bounced(row, bounce.status, bounce.reason, now, "bounce"):
                changed.append(row.id)
        elif kind == Kind.SOFT:
            await _event(row, row.channel_id, bounce, kind, now)
            if await _soft_counts_as_hard(row, now, soft_limit, soft_days):
                note = f"{soft_limit} soft bounces over {soft_days:g} days"
                if await _mark_bounced(row, bounce.status, bounce.reason, now, note):
                    changed.append(row.id)
        elif kind == Kind.MESSAGE:
            await _event(row, row.channel_id, bounce, kind, now)
        elif kind in (Kind.COMPLAINT, Kind.UNSUBSCRIBE):
            await _event(row, row.channel_id, bounce, kind, now)
            actor, note = (
                (Actor.COMPLAINT, "feedback report")
                if kind == Kind.COMPLAINT
                else (Actor.LINK, "mailto")
            )
            # as the one-click link: Subscription = unsubscribed, queued mail cancelled
            if await user_store.apply_changes(
                row, {"unsubscribed": True}, actor=actor, now=now, note=note
            ):
                changed.append(row.id)
    return changed, channels


async def _take(
    bounce: Bounce, digest: str | None, now: datetime, soft_limit: int, soft_days: float
) -> Taken:
    """One message's effects and digest, inside the caller's transaction."""
    if digest is not None:
        if await InboundMessage.exists(digest=digest):
            return Taken(bounce.kind, duplicate=True)
        await InboundMessage.create(digest=digest, kind=bounce.kind.value, at=now)
    changed, channels = await _apply(bounce, now, soft_limit, soft_days)
    return Taken(bounce.kind, tuple(changed), tuple(dict.fromkeys(channels)))


async def take(
    bounce: Bounce,
    now: datetime,
    *,
    digest: str | None = None,
    soft_limit: int = 5,
    soft_days: float = 7,
) -> Taken:
    """Apply one inbound message's ``bounce``, once: ``digest`` is the SHA-256 (hex) of its
    bytes, recorded with the effects in one transaction. An ``unknown`` message has no
    effect (the caller moves it to the unknown folder) but is recorded too."""
    try:
        async with in_transaction():
            return await _take(bounce, digest, now, soft_limit, soft_days)
    except IntegrityError:  # another daemon recorded the same message first
        return Taken(bounce.kind, duplicate=True)


async def take_many(
    items: Sequence[tuple[Bounce, str]],
    now: datetime,
    *,
    soft_limit: int = 5,
    soft_days: float = 7,
) -> list[Taken]:
    """``take`` for a batch of (bounce, digest) read together: one transaction, one store
    crossing, the results in order (the same bytes twice in a batch: the second is a
    duplicate). When another daemon recorded one of them first, one at a time instead."""
    try:
        async with in_transaction():
            return [await _take(b, d, now, soft_limit, soft_days) for b, d in items]
    except IntegrityError:
        return [
            await take(b, now, digest=d, soft_limit=soft_limit, soft_days=soft_days)
            for b, d in items
        ]


def _refusal(bounce: Bounce) -> tuple[str, str]:
    """A refusal's words without the addresses in them: one per cause, not per recipient."""
    return bounce.status, " ".join(_ADDRESS.sub("", bounce.reason).split()).lower()


async def refused_at_rcpt(refusals: Sequence[Bounce], now: datetime) -> list[int]:
    """The relay's 5xx answers at RCPT (or after DATA) of one delivery batch, each ``Bounce``
    carrying its message's VERP token (``rules.bounces.classify_reply``): hard ones make
    their users bounced, unless ten or more users got the same refusal (the relay's problem,
    not theirs). Returns the users changed."""
    hard = [b for b in refusals if b.kind == Kind.HARD and b.token is not None]
    same = Counter(_refusal(b) for b in hard)
    changed: list[int] = []
    async with in_transaction():
        for bounce in hard:
            if same[_refusal(bounce)] >= SAME_REFUSAL_LIMIT:
                continue
            for row in await _users_named(bounce):
                if await _about_an_older_address(row, bounce):
                    continue  # the address changed while the message was on its way
                await _event(row, row.channel_id, bounce, Kind.HARD, now)
                if await _mark_bounced(
                    row, bounce.status, bounce.reason, now, "refused by the relay"
                ):
                    changed.append(row.id)
    return changed


async def deliverability(channel_id: int, now: datetime) -> Deliverability:
    """The channel's last 30 days: emails sent, hard bounces, complaints, and their rates."""
    since = now - WINDOW
    sent = await OutboxMessage.filter(
        channel_id=channel_id, state=OutboxState.SENT.value, sent_at__gte=since
    ).count()
    # a user's events only: a confirmation's (no user) comes back to a c- address anyone
    # who signs up learns, and confirmations are not among the emails sent
    events = BounceEvent.filter(channel_id=channel_id, at__gte=since, user_id__not_isnull=True)
    bounced = await events.filter(kind=Kind.HARD.value).count()
    complaints = await events.filter(kind=Kind.COMPLAINT.value).count()
    return Deliverability(
        sent,
        bounced,
        complaints,
        bounced / sent if sent else 0.0,
        complaints / sent if sent else 0.0,
    )


async def prune_inbound(before: datetime) -> int:
    """Forget the digests of inbound messages read before ``before`` (retention)."""
    return await InboundMessage.filter(at__lt=before).delete()


async def address_bounced(channel_id: int, address: str) -> bool:
    """Whether a user of the channel with this address is bounced: a signup to it gets no
    confirmation email (the requester is answered as for any signup)."""
    return await UserRow.filter(
        channel_id=channel_id, email_key=email_key(address), bounce_status__not=""
    ).exists()
