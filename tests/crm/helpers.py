"""Shared helpers of the crm tests: field definitions as the seed has them."""

from __future__ import annotations

from typing import Any

from kuloo_daemon.crm.records import CustomFieldDef

TAGS = ["welcome", "onboarding", "upsell"]


def field_dicts(tags: list[str] | None = None) -> list[dict[str, Any]]:
    tags = TAGS if tags is None else tags

    def choices(names: list[str]) -> list[dict[str, Any]]:
        return [{"id": i + 1, "name": n} for i, n in enumerate(names)]

    return [
        {"id": 1, "name": "Promo", "type": "multi_select_list", "choices": choices(tags)},
        {
            "id": 2,
            "name": "Subscription",
            "type": "list",
            "choices": choices(["daily", "weekly", "monthly", "unsubscribed"]),
        },
        {
            "id": 3,
            "name": "Source",
            "type": "list",
            "choices": choices(["admin", "signup", "sync"]),
        },
        {"id": 4, "name": "Last active", "type": "date", "choices": None},
        {"id": 5, "name": "KulooId", "type": "string", "choices": None},
        {"id": 6, "name": "Sync error", "type": "string", "choices": None},
    ]


def defs(dicts: list[dict[str, Any]] | None = None, resource: str = "lead") -> list[CustomFieldDef]:
    return [
        CustomFieldDef.from_data(d, resource)
        for d in (dicts if dicts is not None else field_dicts())
    ]


def edited(field_name: str, /, **changes: Any) -> list[dict[str, Any]]:
    """The seed's fields with the one named ``field_name`` changed (``remove=True``: dropped)."""
    out = []
    for d in field_dicts():
        if d["name"] == field_name:
            if changes.get("remove"):
                continue
            d = {**d, **changes}
        out.append(d)
    return out
