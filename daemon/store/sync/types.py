"""The plain data that crosses between the sync engine and its store units of work.

What the engine read from Sell (``RecordIn``, ``DeletionIn`` with its ``ConversionIn``),
what the store asks it to write (``SellWrite``, ``PushIn``, ``PushPlan``, ``Outcome``),
and what it reports (``RunStart``, ``RunDoc``, ``ErrorDoc``). Frozen dataclasses (but
``Outcome``, filled while a batch is applied); no tortoise here, so the engine and the
control methods import them without the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ...secrets import Secret
from ...vocabulary import Plan, SyncRunStatus

COUNT_KEYS = (
    "pulled",
    "users_created",
    "users_updated",
    "leads_created",
    "sell_updated",
    "conflicts",
    "errors",
    "requests",
)


@dataclass(frozen=True)
class RecordIn:
    """A Lead or Contact as the engine read it, in canonical values (``values.sell_values``)."""

    kind: str
    id: int
    values: dict[str, Any]
    email: str | None  # as spelled in Sell (trimmed)
    updated_at: datetime | None
    is_organization: bool = False
    cleaned: tuple[str, ...] = ()  # fields whose text was cleaned as it was read (``crm.records``)

    def cleaning_note(self, fields: Iterable[str]) -> str:
        """The audit words for ``fields`` applied to a user after cleaning ("" if none was)."""
        names = [n for n in fields if n in self.cleaned]
        return f"; control characters removed from Sell's {', '.join(names)}" if names else ""


@dataclass(frozen=True)
class ConversionIn:
    lead_id: int
    individual_id: int | None
    organization_id: int | None
    contact: RecordIn | None  # the contact the lead became, read from Sell


@dataclass(frozen=True)
class DeletionIn:
    kind: str
    id: int
    conversion: ConversionIn | None = None


@dataclass(frozen=True)
class SellWrite:
    """A partial PUT: only ``fields`` (canonical values), Promo in the user's order."""

    kind: str
    id: int
    fields: dict[str, Any]
    user_id: int | None
    promo_order: tuple[str, ...] = ()
    email: str = ""


@dataclass(frozen=True)
class PushIn:
    user_id: int
    kuloo_id: str
    email: str
    values: dict[str, Any]  # what the new lead carries (canonical)
    promo_order: tuple[str, ...]
    look_up_first: bool  # a POST may already have been sent for this user


@dataclass
class Outcome:
    writes: list[SellWrite] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    changed_users: list[int] = field(default_factory=list)
    linked: list[tuple[str, int]] = field(default_factory=list)
    unlinked: list[tuple[str, int]] = field(default_factory=list)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def touched(self, user_id: int) -> None:
        if user_id not in self.changed_users:
            self.changed_users.append(user_id)


@dataclass(frozen=True)
class RunDoc:
    id: int
    channel_id: int
    status: SyncRunStatus
    reason: str
    error: str
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, int]
    daemon_id: str = ""  # PostgreSQL: the daemon that ran it (store.leases)
    retry_at: datetime | None = None  # rate_limited: when Sell takes requests again


@dataclass(frozen=True)
class RunStart:
    run: RunDoc
    token: Secret | None
    plan: Plan
    sequential_tags: tuple[str, ...]
    add_all: bool
    feed_state: dict[str, Any]
    linked_ids: dict[str, list[int]]
    retry_at: datetime | None = None  # the previous run's: Sell rate-limited it until then


@dataclass(frozen=True)
class PushPlan:
    updates: list[SellWrite]
    creates: list[PushIn]
    refused: int


@dataclass(frozen=True)
class ErrorDoc:
    id: int
    user_id: int | None
    crm_kind: str | None
    crm_id: int | None
    email: str
    code: str
    error: str
    updated_at: datetime
