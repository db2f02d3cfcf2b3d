"""The three-way merge of one linked user and its Sell record (docs/sync-rules.md, rule 4).

For every mapped field the merge compares three canonical values (``values``): the last
value both sides agreed on (the *base*, kept per link), what Kuloo says and what Sell
says.

- Both sides say the same: nothing to write (the record already says what it should).
- Only one side moved away from the base: its value is copied to the other side.
- No base yet (a first link by email or KulooId): a blank side is filled in from the
  other, without a conflict.
- Both moved, to different values: a conflict. ``unsubscribed`` always wins (an opt-out
  is never lost); otherwise the newer change wins — Sell's ``updated_at`` against the
  Kuloo change time of that field; a tie (or two unknown times) goes to Kuloo, whose
  change time is exact where Sell's has only seconds.
- Kuloo → Sell fields (Source, Last active, KulooId, Sync error): Kuloo's value is the
  truth; an edit in Sell is put back.

Every applied change and every conflict comes back as ``FieldChange`` audit data with
both values. The result's ``base`` is what both sides say once the writes are done, so a
merge right after applying a result changes nothing (the property tests check it).
Pure: plain data in, plain data out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..vocabulary import FIELDS, SUBSCRIPTION_UNSUBSCRIBED, Direction
from .values import SUBSCRIPTION

KULOO = "kuloo"
SELL = "sell"


@dataclass(frozen=True)
class FieldChange:
    """One applied change (or conflict) for the audit log."""

    field: str
    side: str  # the side that was written: "kuloo" or "sell"
    old: Any  # that side's value before
    new: Any  # its value after
    kuloo: Any  # what Kuloo said
    sell: Any  # what Sell said
    conflict: bool
    note: str


@dataclass(frozen=True)
class MergeResult:
    to_kuloo: dict[str, Any] = field(default_factory=dict)  # field -> value Kuloo takes
    to_sell: dict[str, Any] = field(default_factory=dict)  # field -> value to write to Sell
    base: dict[str, Any] = field(default_factory=dict)  # agreed values once written
    changes: tuple[FieldChange, ...] = ()

    @property
    def conflicts(self) -> int:
        return sum(1 for c in self.changes if c.conflict)

    @property
    def empty(self) -> bool:
        return not self.to_kuloo and not self.to_sell


def _newer_side(kuloo_at: datetime | None, sell_at: datetime | None) -> str:
    if kuloo_at is None and sell_at is None:
        return KULOO
    if kuloo_at is None:
        return SELL
    if sell_at is None:
        return KULOO
    # Sell keeps whole seconds: a Kuloo change within Sell's second is not older.
    return SELL if sell_at > kuloo_at.replace(microsecond=0) else KULOO


def resolve_conflict(
    name: str, kuloo: Any, sell: Any, kuloo_at: datetime | None, sell_at: datetime | None
) -> tuple[str, str]:
    """Who wins a field changed on both sides, and why (for the audit note)."""
    if name == SUBSCRIPTION and SUBSCRIPTION_UNSUBSCRIBED in (kuloo, sell):
        side = KULOO if kuloo == SUBSCRIPTION_UNSUBSCRIBED else SELL
        return side, "conflict: an opt-out always wins"
    side = _newer_side(kuloo_at, sell_at)
    return side, f"conflict: the newer change wins ({'Kuloo' if side == KULOO else 'Sell'})"


def merge(
    base: Mapping[str, Any],
    kuloo: Mapping[str, Any],
    sell: Mapping[str, Any],
    *,
    kuloo_changed_at: Mapping[str, datetime | None] | None = None,
    sell_updated_at: datetime | None = None,
    fields: tuple[str, ...] | None = None,
) -> MergeResult:
    """Merge every mapped field (or only ``fields``); values are canonical (``values``)."""
    changed_at = kuloo_changed_at or {}
    to_kuloo: dict[str, Any] = {}
    to_sell: dict[str, Any] = {}
    new_base: dict[str, Any] = dict(base)
    changes: list[FieldChange] = []
    for spec in FIELDS:
        name = spec.name
        if fields is not None and name not in fields:
            continue
        k, s = kuloo.get(name), sell.get(name)
        b = base.get(name)
        known = name in base
        if spec.direction == Direction.TO_SELL:
            if s != k:
                to_sell[name] = k
                note = "put back: Kuloo keeps this field" if known and s != b else "written to Sell"
                changes.append(FieldChange(name, SELL, s, k, k, s, False, note))
            new_base[name] = k
            continue
        if k == s:
            new_base[name] = k
            continue
        if not known and (k is None or s is None):
            # First link (no base yet): a blank on one side is not a change, it is filled in.
            if s is None:
                to_sell[name] = k
                changes.append(
                    FieldChange(name, SELL, s, k, k, s, False, "first link: filled in from Kuloo")
                )
                new_base[name] = k
            else:
                to_kuloo[name] = s
                changes.append(
                    FieldChange(name, KULOO, k, s, k, s, False, "first link: filled in from Sell")
                )
                new_base[name] = s
        elif known and s == b:
            to_sell[name] = k
            changes.append(FieldChange(name, SELL, s, k, k, s, False, "changed in Kuloo"))
            new_base[name] = k
        elif known and k == b:
            to_kuloo[name] = s
            changes.append(FieldChange(name, KULOO, k, s, k, s, False, "changed in Sell"))
            new_base[name] = s
        else:
            side, note = resolve_conflict(name, k, s, changed_at.get(name), sell_updated_at)
            if not known:
                note = "first link: " + note
            if side == KULOO:
                to_sell[name] = k
                changes.append(FieldChange(name, SELL, s, k, k, s, True, note))
                new_base[name] = k
            else:
                to_kuloo[name] = s
                changes.append(FieldChange(name, KULOO, k, s, k, s, True, note))
                new_base[name] = s
    return MergeResult(to_kuloo, to_sell, new_base, tuple(changes))
