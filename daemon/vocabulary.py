"""The product's words, defined once: plans, frequencies, sources, states, the field table.

Owns the names every layer shares (docs/sync-rules.md, docs/delivery.md): the
``StrEnum``s below, the plans as data (cadence and cap), the Sell field mapping
(docs/sync-rules.md, "The field table") as data with its pure value conversions
(``to_sell`` / ``to_kuloo``), and the status transitions as pure functions. The store
persists these values, the CRM client checks Sell against the field table, control
renders them; none of them re-spells a word that is defined here.

Imports only the standard library (no tortoise, no trio), so every layer may import it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

# ----------------------------------------------------------------------------- words


class Plan(StrEnum):
    FREE = "free"
    STARTER = "starter"
    PRO = "pro"
    ENTERPRISE = "enterprise"


class Frequency(StrEnum):
    """How often a user gets the newsletter digest; ``disabled`` stops digests only."""

    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    DISABLED = "disabled"


class Source(StrEnum):
    """How a user arrived; blank means registered in the Kuloo app."""

    APP = ""
    ADMIN = "admin"
    SIGNUP = "signup"
    SYNC = "sync"


class CrmKind(StrEnum):
    LEAD = "lead"
    CONTACT = "contact"


class ConnectionStatus(StrEnum):
    """A channel's Sell connection; sync runs only while it is ``verified``."""

    NONE = "none"  # no token
    UNVERIFIED = "unverified"  # not checked yet, or Sell could not be reached
    VERIFIED = "verified"
    FAILED = "failed"  # the custom fields need fixing in Sell
    NEEDS_NEW_TOKEN = "needs_new_token"  # Sell answered 401


class OutboxState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNCERTAIN = "uncertain"  # a crash while sending: it may have left; shown to the admin
    CANCELLED = "cancelled"  # the user unsubscribed, or the article was withdrawn


class SyncRunStatus(StrEnum):
    RUNNING = "running"
    OK = "ok"
    PARTIAL = "partial"
    FAILED = "failed"
    SKIPPED = "skipped"


# Why a sync run failed without running to its end (kept beside the status).
INTERRUPTED = "interrupted"

# ----------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class PlanRules:
    cadence: timedelta  # how often the channel syncs
    cap: int | None  # leads and contacts linked at most; None = no cap


PLANS: dict[Plan, PlanRules] = {
    Plan.FREE: PlanRules(timedelta(days=1), 10),
    Plan.STARTER: PlanRules(timedelta(hours=1), 500),
    Plan.PRO: PlanRules(timedelta(minutes=5), 5_000),
    Plan.ENTERPRISE: PlanRules(timedelta(minutes=5), None),
}

# ----------------------------------------------------------------------------- status transitions


class InvalidTransition(ValueError):
    pass


def connection_after_token_change(new_token_set: bool) -> ConnectionStatus:
    """A new token is unchecked until verified; no token means no connection."""
    return ConnectionStatus.UNVERIFIED if new_token_set else ConnectionStatus.NONE


def connection_after_check(
    *, ok: bool, needs_new_token: bool, unreachable: bool
) -> ConnectionStatus:
    """The status a finished check leaves; a check that could not reach Sell proves nothing."""
    if ok:
        return ConnectionStatus.VERIFIED
    if needs_new_token:
        return ConnectionStatus.NEEDS_NEW_TOKEN
    if unreachable:
        return ConnectionStatus.UNVERIFIED
    return ConnectionStatus.FAILED


def verified_at_after(
    status: ConnectionStatus, previous: datetime | None, now: datetime
) -> datetime | None:
    """When the connection was last known good: kept while unverified, cleared by a failure."""
    if status == ConnectionStatus.VERIFIED:
        return now
    if status == ConnectionStatus.UNVERIFIED:
        return previous
    return None


OUTBOX_MOVES: dict[OutboxState, frozenset[OutboxState]] = {
    OutboxState.QUEUED: frozenset({OutboxState.SENDING, OutboxState.CANCELLED}),
    OutboxState.SENDING: frozenset({OutboxState.SENT, OutboxState.FAILED, OutboxState.UNCERTAIN}),
    OutboxState.FAILED: frozenset({OutboxState.QUEUED, OutboxState.CANCELLED}),
    OutboxState.UNCERTAIN: frozenset(
        {OutboxState.QUEUED, OutboxState.CANCELLED}
    ),  # an admin decides
    OutboxState.SENT: frozenset(),
    OutboxState.CANCELLED: frozenset(),
}


def outbox_move(current: OutboxState, new: OutboxState) -> OutboxState:
    """``new`` if an outbox message may go from ``current`` to it; raises otherwise."""
    if new not in OUTBOX_MOVES[OutboxState(current)]:
        raise InvalidTransition(f"an outbox message cannot go from {current} to {new}")
    return OutboxState(new)


def outbox_after_crash(state: OutboxState) -> OutboxState:
    """A message found ``sending`` at start-up may have left: never send it again silently."""
    return OutboxState.UNCERTAIN if state == OutboxState.SENDING else OutboxState(state)


SYNC_RUN_MOVES: dict[SyncRunStatus, frozenset[SyncRunStatus]] = {
    SyncRunStatus.RUNNING: frozenset(
        {SyncRunStatus.OK, SyncRunStatus.PARTIAL, SyncRunStatus.FAILED, SyncRunStatus.SKIPPED}
    ),
    **{s: frozenset() for s in SyncRunStatus if s != SyncRunStatus.RUNNING},
}


def sync_run_finish(current: SyncRunStatus, new: SyncRunStatus) -> SyncRunStatus:
    """Only a running sync run finishes, and only once."""
    if new not in SYNC_RUN_MOVES[SyncRunStatus(current)]:
        raise InvalidTransition(f"a sync run cannot go from {current} to {new}")
    return SyncRunStatus(new)


def sync_run_after_crash(status: SyncRunStatus) -> tuple[SyncRunStatus, str] | None:
    """A run left ``running`` by a crash is ``failed`` with reason ``interrupted``; others stay."""
    if status == SyncRunStatus.RUNNING:
        return SyncRunStatus.FAILED, INTERRUPTED
    return None


# ----------------------------------------------------------------------------- the field table


class Direction(StrEnum):
    BOTH = "both"
    TO_SELL = "kuloo_to_sell"  # Kuloo is the truth; an edit in Sell is put back


SUBSCRIPTION_UNSUBSCRIBED = "unsubscribed"


def _blank(value: Any) -> bool:
    return value is None or value == "" or value == []


def _subscription_to_sell(user: Mapping[str, Any]) -> str | None:
    if user["unsubscribed"]:
        return SUBSCRIPTION_UNSUBSCRIBED
    frequency = Frequency(user["frequency"])
    return None if frequency == Frequency.DISABLED else frequency.value


def _subscription_to_kuloo(value: Any) -> dict[str, Any]:
    # "unsubscribed" says nothing about the frequency: the user keeps theirs for when
    # they subscribe again. Any frequency (or blank) in Sell means subscribed.
    if _blank(value):
        return {"frequency": Frequency.DISABLED, "unsubscribed": False}
    if value == SUBSCRIPTION_UNSUBSCRIBED:
        return {"unsubscribed": True}
    frequency = Frequency(value)
    if frequency == Frequency.DISABLED:  # not a Sell choice: blank is how Sell says it
        raise ValueError("'disabled' is written as a blank Subscription in Sell")
    return {"frequency": frequency, "unsubscribed": False}


def _promo_to_sell(user: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys(user["promo_tags"] or ()))


def _promo_to_kuloo(value: Any) -> dict[str, Any]:
    if _blank(value):
        return {"promo_tags": []}
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"Promo must be a list of choice names, not {value!r}")
    return {"promo_tags": list(dict.fromkeys(value))}


def _source_to_sell(user: Mapping[str, Any]) -> str | None:
    return Source(user["source"]).value or None


def _source_to_kuloo(value: Any) -> dict[str, Any]:
    return {"source": Source.APP if _blank(value) else Source(value)}


def _last_active_to_sell(user: Mapping[str, Any]) -> str | None:
    when: date | datetime | None = user["last_active"]
    if when is None:
        return None
    if isinstance(when, datetime):
        when = when.astimezone(UTC).date()
    return when.isoformat()


_US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")


def parse_sell_date(value: str) -> date:
    """Sell writes dates as ``YYYY-MM-DD`` but may read them back otherwise: parse leniently."""
    text = value.strip()
    us = _US_DATE.match(text)
    if us:
        month, day, year = (int(g) for g in us.groups())
        return date(year, month, day)
    if len(text) > 10 and text[10] in "T ":
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    return date.fromisoformat(text)


def _last_active_to_kuloo(value: Any) -> dict[str, Any]:
    return {"last_active": None if _blank(value) else parse_sell_date(str(value))}


def _text_to_sell(attr: str) -> Callable[[Mapping[str, Any]], str | None]:
    return lambda user: user[attr] or None


def _text_to_kuloo(attr: str) -> Callable[[Any], dict[str, Any]]:
    return lambda value: {attr: "" if _blank(value) else str(value)}


@dataclass(frozen=True)
class MappedField:
    """One row of the field table: a Sell field, its type and choices, and the Kuloo side."""

    name: str  # exact Sell name (case and spaces matter)
    sell_type: str  # Sell's custom-field type, or "standard" for email and names
    kuloo: tuple[str, ...]  # the user attributes it carries
    direction: Direction
    to_sell_fn: Callable[[Mapping[str, Any]], Any]
    to_kuloo_fn: Callable[[Any], dict[str, Any]]
    choices: tuple[str, ...] | None = None  # None: not a choice field
    choices_are_tags: bool = False  # Promo: the choices are the channel's sequential tags

    @property
    def custom(self) -> bool:
        return self.sell_type != "standard"

    def choices_for(self, sequential_tags: Iterable[str]) -> tuple[str, ...] | None:
        if self.choices_are_tags:
            return tuple(dict.fromkeys(t for t in sequential_tags if t))
        return self.choices


SUBSCRIPTION_CHOICES = (
    Frequency.DAILY.value,
    Frequency.WEEKLY.value,
    Frequency.MONTHLY.value,
    SUBSCRIPTION_UNSUBSCRIBED,
)
SOURCE_CHOICES = tuple(s.value for s in Source if s != Source.APP)

FIELDS: tuple[MappedField, ...] = (
    MappedField(
        "Promo",
        "multi_select_list",
        ("promo_tags",),
        Direction.BOTH,
        _promo_to_sell,
        _promo_to_kuloo,
        choices_are_tags=True,
    ),
    MappedField(
        "Subscription",
        "list",
        ("frequency", "unsubscribed"),
        Direction.BOTH,
        _subscription_to_sell,
        _subscription_to_kuloo,
        choices=SUBSCRIPTION_CHOICES,
    ),
    MappedField(
        "Source",
        "list",
        ("source",),
        Direction.TO_SELL,
        _source_to_sell,
        _source_to_kuloo,
        choices=SOURCE_CHOICES,
    ),
    MappedField(
        "Last active",
        "date",
        ("last_active",),
        Direction.TO_SELL,
        _last_active_to_sell,
        _last_active_to_kuloo,
    ),
    MappedField(
        "KulooId",
        "string",
        ("kuloo_id",),
        Direction.TO_SELL,
        _text_to_sell("kuloo_id"),
        _text_to_kuloo("kuloo_id"),
    ),
    MappedField(
        "Sync error",
        "string",
        ("sync_error",),
        Direction.TO_SELL,
        _text_to_sell("sync_error"),
        _text_to_kuloo("sync_error"),
    ),
    MappedField(
        "email",
        "standard",
        ("email",),
        Direction.BOTH,
        _text_to_sell("email"),
        _text_to_kuloo("email"),
    ),
    MappedField(
        "first_name",
        "standard",
        ("first_name",),
        Direction.BOTH,
        _text_to_sell("first_name"),
        _text_to_kuloo("first_name"),
    ),
    MappedField(
        "last_name",
        "standard",
        ("last_name",),
        Direction.BOTH,
        _text_to_sell("last_name"),
        _text_to_kuloo("last_name"),
    ),
)
FIELD_BY_NAME: dict[str, MappedField] = {f.name: f for f in FIELDS}
CUSTOM_FIELDS: tuple[MappedField, ...] = tuple(f for f in FIELDS if f.custom)


def to_sell(field_name: str, user: Mapping[str, Any]) -> Any:
    """The Sell value of one mapped field for a user (a mapping of user attributes).

    Blank is ``None`` for single values and ``[]`` for Promo.
    """
    return FIELD_BY_NAME[field_name].to_sell_fn(user)


def to_kuloo(field_name: str, value: Any) -> dict[str, Any]:
    """The user attributes a Sell value stands for (only those it determines).

    Raises ``ValueError`` for a value that is not one of the field's Kuloo values.
    """
    return FIELD_BY_NAME[field_name].to_kuloo_fn(value)


# ----------------------------------------------------------------------------- users


class Actor(StrEnum):
    """Who changed a user, as the audit log says it."""

    ADMIN = "admin"  # an admin, through the TUI or kuloo-ctl
    APP = "app"  # the Kuloo app, through the control API
    SYNC = "sync"  # the sync engine, applying an edit made in Sell
    LINK = "link"  # the user, through an unsubscribe/frequency link or the signup form
    BOUNCE = "bounce"  # the bounce mailbox or the relay: the address bounced (or was cleared)
    COMPLAINT = "complaint"  # a provider's feedback loop: the user marked an email as spam


# The user attributes whose Kuloo change time the merge compares with Sell's updated_at:
# the ones that travel both ways (docs/sync-rules.md). users.update edits exactly these.
EDITABLE_USER_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "frequency",
    "unsubscribed",
    "add_to_crm",
    "promo_tags",
)


# A Zendesk Sell API token as it may be entered: it goes into an HTTP header as it is, so
# only printable ASCII without spaces (anything else would fail at the first request).
SELL_TOKEN_SHAPE = "20 to 512 printable ASCII characters, no spaces"
_SELL_TOKEN = re.compile(r"[\x21-\x7e]{20,512}")


def is_sell_token_shaped(value: str) -> bool:
    """True when ``value`` is :data:`SELL_TOKEN_SHAPE` (already trimmed)."""
    return _SELL_TOKEN.fullmatch(value) is not None


class InvalidEmail(ValueError):
    pass


_EMAIL_LOCAL = re.compile(r"^[^\s@\"(),:;<>\[\\\]]+$")
_EMAIL_LABEL = re.compile(r"^(?!-)[^\s@\"(),:;<>\[\\\]./]+(?<!-)$")


def valid_email(text: str) -> str:
    """The one email validator: an address as it is kept and sent to, trimmed; raises
    ``InvalidEmail`` if it is not one.

    The case is kept (it is the user's spelling); ``email_key`` is what is compared.
    Deliberately plain: ``local@domain.tld`` with no spaces, quotes or brackets, the
    lengths of RFC 5321 (64 for the local part, 254 in all).
    """
    address = text.strip()
    if not address:
        raise InvalidEmail("an email address is required")
    if len(address) > 254:
        raise InvalidEmail("an email address has at most 254 characters")
    if not address.isprintable():
        raise InvalidEmail(f"{address!r} contains control characters")
    local, at, domain = address.rpartition("@")
    labels = domain.split(".")
    if (
        not at
        or not local
        or len(local) > 64
        or not _EMAIL_LOCAL.match(local)
        or local.startswith(".")
        or local.endswith(".")
        or ".." in local
        or len(labels) < 2
        or not all(_EMAIL_LABEL.match(label) for label in labels)
    ):
        raise InvalidEmail(f"{address!r} is not an email address like name@example.com")
    return address


def email_key(address: object) -> str:
    """The one email key: what two addresses are compared by, everywhere — one user per key
    per channel, Sell's records matched to users, the Sell client's re-check of an
    ``?email=`` answer. ``lower()`` of the trimmed address, never ``casefold()`` (which
    would make "straße" and "STRASSE" one person); "" for a blank or a non-text value."""
    return address.strip().lower() if isinstance(address, str) else ""


# In a channel's change-feed state after ``kuloo-daemon restore``, until the first complete
# sync: Sell records carrying a KulooId the restored copy does not know (users created after
# the backup) are imported with that KulooId instead of being refused (docs/operations.md).
RESTORED_AT = "restored_at"
