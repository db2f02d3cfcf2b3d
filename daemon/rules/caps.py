"""Plan caps on linked CRM records (docs/sync-rules.md, rule 1), as a pure selection.

Leads and contacts count together. Links already made keep their place, oldest first;
records that would need a new link are admitted in the order given while room is left;
the rest are refused (the caller writes ``texts.plan_cap`` as their Sync error). When a
plan is lowered below the links it has, the newest links are *suspended*: kept (raising
the plan resumes them without re-linking) but not synced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..vocabulary import PLANS, Plan

T = TypeVar("T")
L = TypeVar("L")


@dataclass(frozen=True)
class CapSelection:
    active: tuple[Any, ...]  # existing links that sync
    suspended: tuple[Any, ...]  # existing links past the cap (newest)
    admitted: tuple[Any, ...]  # candidates that get a link now
    refused: tuple[Any, ...]  # candidates past the cap


def cap_of(plan: Plan | str) -> int | None:
    return PLANS[Plan(plan)].cap


def select(
    cap: int | None, links_oldest_first: Sequence[L], candidates: Sequence[T]
) -> CapSelection:
    if cap is None:
        return CapSelection(tuple(links_oldest_first), (), tuple(candidates), ())
    active = tuple(links_oldest_first[:cap])
    suspended = tuple(links_oldest_first[cap:])
    room = max(0, cap - len(active))
    return CapSelection(active, suspended, tuple(candidates[:room]), tuple(candidates[room:]))


def room_left(cap: int | None, linked: int) -> int | None:
    """How many more links fit (None: no cap)."""
    return None if cap is None else max(0, cap - linked)
