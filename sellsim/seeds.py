"""Seeds: the default account with the six Kuloo custom fields (and four more of other
types), and the demo token.

Owns ``DEMO_TOKEN`` and ``default_seed()``, which returns a dict in the JSON seed format (see
README "Seed format"); the suite-wide fixture uses it. The demo's seed is its own file,
``config/sellsim-demo.json``. Record generation is deterministic.
"""

from __future__ import annotations

import random
from typing import Any

DEMO_TOKEN = "sellsim-demo-token-not-a-secret-".ljust(64, "0")
PROMO_CHOICES = ["welcome", "onboarding", "upsell"]
SUBSCRIPTION_CHOICES = ["daily", "weekly", "monthly", "unsubscribed"]
SOURCE_CHOICES = ["admin", "signup", "sync"]

_FIRST = ["Ada", "Ben", "Chloé", "Dmitri", "Eve", "Farid", "Grace", "Hiro", "Ines", "Jonas",
          "Kemal", "Lena", "Maya", "Nils", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tara"]  # fmt: skip
_LAST = ["Abara", "Berg", "Costa", "Dubois", "Eriksen", "Fischer", "García", "Hansen", "Ito",
         "Jansen", "Kowalski", "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov", "Quist",
         "Rossi", "Schmidt", "Tanaka"]  # fmt: skip


def kuloo_fields(resource: str, promo_choices: list[str] | None = None) -> list[dict[str, Any]]:
    """The six Kuloo custom fields as seed definitions for ``lead`` or ``contact``.

    The setup step never asks for Filterable: ``KulooId`` and ``Sync error`` are left
    unfilterable, so a lookup by KulooId meets ``unknown_filter`` (every record back, or 400).
    """
    flags = {"for_contact": True, "for_company": False} if resource == "contact" else {}
    fields: list[dict[str, Any]] = [
        {"name": "Promo", "type": "multi_select_list", "choices": promo_choices or PROMO_CHOICES},
        {"name": "Subscription", "type": "list", "choices": SUBSCRIPTION_CHOICES},
        {"name": "Source", "type": "list", "choices": SOURCE_CHOICES},
        {"name": "Last active", "type": "date"},
        {"name": "KulooId", "type": "string", "filterable": False},
        {"name": "Sync error", "type": "string", "filterable": False},
    ]
    return [{"filterable": True, **f, **flags} for f in fields]


def other_fields(resource: str) -> list[dict[str, Any]]:
    """Fields a Sell account has besides Kuloo's: a number, a date, a datetime, a checkbox."""
    flags = {"for_contact": True, "for_company": False} if resource == "contact" else {}
    fields: list[dict[str, Any]] = [
        {"name": "Score", "type": "number", "filterable": True},
        {"name": "Birthday", "type": "date"},
        {"name": "Last login", "type": "datetime"},
        {"name": "VIP", "type": "bool"},
    ]
    return [dict(f, **flags) for f in fields]


def _people(n: int, offset: int, domain: str, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        first = _FIRST[(i + offset) % len(_FIRST)]
        last = _LAST[(i * 7 + offset) % len(_LAST)]
        custom: dict[str, Any] = {}
        promo = [p for p in PROMO_CHOICES if rng.random() < 0.4]
        if promo:
            custom["Promo"] = promo
        if rng.random() < 0.8:
            custom["Subscription"] = rng.choice(SUBSCRIPTION_CHOICES)
        if rng.random() < 0.3:
            custom["Last active"] = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        if i % 2 == 0:
            custom["Score"] = str(rng.randint(0, 100))
        if i % 3 == 1:
            custom["Birthday"] = (
                f"19{rng.randint(50, 99)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            )
            custom["Last login"] = (
                f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T08:30:00Z"
            )
        if i % 5 == 2:
            custom["VIP"] = True
        out.append(
            {
                "first_name": first,
                "last_name": last,
                "email": f"{first.lower()}.{last.lower()}.{offset + i}@{domain}",
                "tags": ["newsletter"] if i % 3 == 0 else [],
                "custom_fields": custom,
            }
        )
    return out


def default_seed(leads: int = 0, contacts: int = 0) -> dict[str, Any]:
    """One demo account ("Kuloo Demo"), its admin user, ``DEMO_TOKEN``, the six Kuloo fields on
    leads and contacts, and ``leads``/``contacts`` generated records with varied Promo and
    Subscription values (no KulooId: they look entered in Sell by hand)."""
    rng = random.Random(20250101)
    lead_list = _people(leads, 0, "example.com", rng)
    for i, lead in enumerate(lead_list):
        if i % 4 == 1:
            lead["organization_name"] = f"{lead['last_name']} & Co"
    return {
        "accounts": [
            {
                "name": "Kuloo Demo",
                "subdomain": "kuloo-demo",
                "sync_api": True,
                "users": [
                    {"name": "Demo Admin", "email": "admin@kuloo-demo.test", "role": "admin"}
                ],
                "tokens": [{"token": DEMO_TOKEN, "name": "demo"}],
                "lead_statuses": ["New", "Working", "Unqualified"],
                "custom_fields": {
                    "lead": kuloo_fields("lead") + other_fields("lead"),
                    "contact": kuloo_fields("contact") + other_fields("contact"),
                },
                "leads": lead_list,
                "contacts": _people(contacts, 100, "example.org", rng),
            }
        ]
    }


def account_token(prefix: str, i: int) -> str:
    """The API token of account ``i`` in ``many_accounts_seed(prefix, ...)``."""
    return f"{prefix}-token-{i:02d}-".ljust(64, "0")


def many_accounts_seed(prefix: str, accounts: int, leads: int) -> dict[str, Any]:
    """``accounts`` copies of the demo account ("Account i", one admin, the token
    ``account_token(prefix, i)``), each with ``leads`` generated leads: one account per
    channel, for runs with many channels (the multi-daemon test, the scale bench)."""
    import copy

    template = default_seed(leads=leads)["accounts"][0]
    out = []
    for i in range(accounts):
        acc = copy.deepcopy(template)
        acc["name"], acc["subdomain"] = f"Account {i}", f"account-{i}"
        acc["tokens"] = [{"token": account_token(prefix, i), "name": f"t{i}"}]
        acc["users"] = [{"name": f"Admin {i}", "email": f"admin{i}@acc.test", "role": "admin"}]
        out.append(acc)
    return {"accounts": out}
