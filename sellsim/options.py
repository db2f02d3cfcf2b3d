"""Simulator options: every behaviour the reference marks as unknown ([I]) or third-party ([T]).

This module owns the option names, their defaults and their validation. Defaults are the
*stricter* plausible behaviour, so a client that passes against sellsim copes with the real
service too. Options can be given at start (``SellSim(**options)``, seed ``"options"``) and
changed while running (``POST /_sim/options``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Options:
    # --- transport ([T]) -------------------------------------------------------------------
    require_user_agent: bool = True  # 400 invalid_user_agent without one [T]
    reject_lowercase_bearer: bool = True  # "bearer xyz" -> 401 [T]
    reject_lowercase_method: bool = True  # "get" -> 400 with an HTML body [C]
    # --- rate limits (DOCS: 36,000/h per token, i.e. 10/s) -----------------------------------
    rate_per_second: float = 10
    rate_per_hour: int = 36_000
    rate_window: str = "sliding"  # "sliding" (any 1-s interval) or "fixed" (wall-clock second) [I]
    rate_count_rejected: bool = True  # a 429'd request still uses the budget [I]
    # every request with a valid token uses budget, also one answered by a fault or a header
    # error (the limiter is checked first); False: only requests that reach the endpoint [I]
    rate_count_all: bool = True
    rate_limit_headers: bool = False  # X-RateLimit-*/Retry-After: none documented [C]
    rate_limit_body: str = "text"  # "text" | "json" | "empty": ZAP never parses 429 bodies [I]
    # --- records ---------------------------------------------------------------------------
    reject_readonly_attributes: bool = True  # id/created_at/... in a write -> 422 [I]
    field_pointer_prefix: str = ""  # "" -> "/email"; "/data" -> "/data/email" (both seen) [C]
    create_updated_lag: int = 1  # updated_at = created_at + N s on create (seen 1-2 s) [C]
    email_filter: str = "ci"  # "ci" exact case-insensitive (reference's advice) | "cs" [I]
    name_filter: str = "cs"  # first_name/last_name filters: "cs" exact case-sensitive | "ci" [I]
    require_filterable: bool = True  # custom_fields[X] filter on a non-filterable field -> 400 [I]
    create_status: int = 200  # POST /v2/leads|contacts success status [T]
    # number custom fields read back as strings like "123.45" (the DOCS table) | "as_sent" [C/I]
    custom_number_format: str = "string"
    # --- lead conversion ([I]) ---------------------------------------------------------------
    # merge into the oldest person contact with the same email ("email"), or else the same
    # first+last name ("any"; Sell dedups "matched by name"), "name" only, or "never" [C/I].
    # "any" is stricter but the default seed's leads and contacts share names (tests/crm).
    conversion_merge: str = "email"
    conversion_copy_custom_fields: bool = False  # copy custom fields that exist for contacts
    conversion_lead: str = "removed"  # "removed" (404, gone from lists) | "kept"
    conversion_status: int = 200  # POST /v2/lead_conversions success status [I]
    conversion_create_deal: bool = True  # create_deal when the body omits it ("default true?") [I]
    # --- Sync API ----------------------------------------------------------------------------
    sync_page_size: int = 50  # items per queue page [I]
    sync_empty_pages: int = 1  # empty 200 pages served before the data of a session [I]
    sync_include_users: bool = True  # the queue also carries the token's user [I]
    sync_device_limit: int = 100  # active devices per account [C]
    extra: dict[str, Any] = field(default_factory=dict)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply ``changes``; raise ValueError naming any unknown option or wrong type."""
        names = {f.name: f for f in dataclasses.fields(self) if f.name != "extra"}
        for key, value in changes.items():
            if key not in names:
                raise ValueError(f"unknown option {key!r}")
            current = getattr(self, key)
            if isinstance(current, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"option {key!r} must be a boolean")
            elif isinstance(current, int | float) and not isinstance(current, bool):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"option {key!r} must be a number")
                if isinstance(current, int) and key != "rate_per_second":
                    value = int(value)
            elif isinstance(current, str) and not isinstance(value, str):
                raise ValueError(f"option {key!r} must be a string")
            choices = _CHOICES.get(key)
            if choices and value not in choices:
                raise ValueError(f"option {key!r} must be one of {sorted(choices)}")
            setattr(self, key, value)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("extra")
        return out


_CHOICES = {
    "rate_window": {"sliding", "fixed"},
    "rate_limit_body": {"text", "json", "empty"},
    "field_pointer_prefix": {"", "/data"},
    "email_filter": {"ci", "cs"},
    "name_filter": {"ci", "cs"},
    "conversion_merge": {"any", "email", "name", "never"},
    "custom_number_format": {"string", "as_sent"},
    "conversion_lead": {"removed", "kept"},
}


def make_options(changes: dict[str, Any] | None = None) -> Options:
    opts = Options()
    if changes:
        opts.update(changes)
    return opts
