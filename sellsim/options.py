"""Simulator options: every Sell behaviour known only as inferred ([I]) or third-party ([T]).

This module owns the option names, their defaults, their validation and their declarations
(``DECLARED``: each option's evidence mark as in the reference — [C] confirmed, [T]
third-party, [I] inferred — and the values the tests run it with; ``open_answers`` lists
every value of the [I] and [T] options, the worlds the sync's matrix test runs). Defaults are the
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
    # "sliding" (any 1-s interval) or "fixed" (wall-clock second) per-second caps, or
    # "hourly_lockout": rate_per_hour per clock hour of the simulated clock, no per-second
    # cap, and past it every request is 429 until the hour turns [I]
    rate_window: str = "sliding"
    rate_count_rejected: bool = True  # a 429'd request still uses the budget [I]
    # every request with a valid token uses budget, also one answered by a fault or a header
    # error (the limiter is checked first); False: only requests that reach the endpoint [I]
    rate_count_all: bool = True
    rate_limit_headers: bool = False  # X-RateLimit-*/Retry-After: none documented [C]
    # "json" (error envelope, code rate_limit_exceeded: the errors page lists it) | "text"
    # (plain text, also seen) | "empty" [C/I]
    rate_limit_body: str = "json"
    # --- records ---------------------------------------------------------------------------
    reject_readonly_attributes: bool = True  # id/created_at/... in a write -> 422 [I]
    field_pointer_prefix: str = ""  # "" -> "/email"; "/data" -> "/data/email" (both seen) [C]
    # a new record's updated_at is created_at + N s (seen 0-2 s) [C]; "random": 0, 1 or 2 s
    # from the world's seeded RNG. created_at is set back by the lag: no stamp in the future.
    create_updated_lag: int | str = "random"
    email_filter: str = "cs"  # "cs" exact case-sensitive (unknown: the client normalises) | "ci"
    name_filter: str = "cs"  # first_name/last_name filters: "cs" exact case-sensitive | "ci" [I]
    # custom_fields[X] naming an unknown field, a non-filterable field or a type that cannot be
    # filtered: "ignore" drops the filter (every record comes back, W6W's claim) | "reject" 400 [I]
    unknown_filter: str = "ignore"
    # a PUT that changes nothing still moves updated_at and the revision (unknown) | False
    noop_write_bumps: bool = True
    # date custom fields are written YYYY-MM-DD; read back as "us" (4/27/2016, the docs'
    # example), "iso" (as written) or "datetime" (2016-04-27T00:00:00Z) [I]
    custom_date_read_format: str = "us"
    # datetime custom fields (written YYYY-MM-DDTHH:MM:SSZ) read back "iso" (as written) or
    # "us" (4/28/2016 6:00, the docs' value table) [I]
    custom_datetime_read_format: str = "iso"
    # a dropdown ("list") value reads back as its choice name ("string") or as the docs' value
    # table shows it, {"id": N, "name": "…"} ("object") [I]
    custom_list_read_format: str = "string"
    # a multi-select value reads back as a list of names ("strings", what clients send) or of
    # {"id", "name"} objects ("objects") [I]
    custom_multiselect_read_format: str = "strings"
    # custom-field definitions name choices/for_company ("current", DOCS), or also
    # options/for_organisation ("both"), or only those old names ("legacy"; ZAP reads them) [I]
    custom_field_keys: str = "current"
    create_status: int = 200  # POST /v2/leads|contacts success status [T]
    # number custom fields read back as strings like "123.45" (the DOCS table) | "as_sent" [C/I]
    custom_number_format: str = "string"
    # --- lead conversion ([I]) ---------------------------------------------------------------
    # merge into the oldest person contact with the same first+last name and (same email or
    # same phone): Sell's default duplicate rule [C]; or the same email ("email"), same email
    # else same name ("any"), same name ("name"), or "never". An account's own rule (seed or
    # PATCH /_sim/accounts/{id}) wins over this option, as each Sell account can change it.
    conversion_merge: str = "name_and_email_or_phone"
    # a lead without last_name converts to an organization only, individual_id null [C-ish];
    # "person": also a person whose last name is the organization's name (old sellsim)
    conversion_org_lead: str = "organization"
    # converting a lead again: "422" incorrect_value | "duplicate" (a second conversion, as
    # reported; works after the lead was removed too) [I]
    conversion_repeat: str = "422"
    conversion_copy_custom_fields: bool = False  # copy custom fields that exist for contacts
    conversion_lead: str = "removed"  # "removed" (404, gone from lists) | "kept"
    conversion_status: int = 200  # POST /v2/lead_conversions success status [I]
    conversion_create_deal: bool = True  # create_deal when the body omits it ("default true?") [I]
    # --- Sync API ----------------------------------------------------------------------------
    sync_page_size: int = 50  # items per queue page [I]
    sync_empty_pages: int = 1  # empty 200 pages served before the data of a session [I]
    sync_include_users: bool = True  # the queue also carries the token's user [I]
    # the queue also carries the account's deals, tasks and notes (every type the token can
    # see [C]); a client that does not ack them gets them back every session
    sync_other_types: bool = True
    sync_device_limit: int = 100  # active devices per account [C]
    extra: dict[str, Any] = field(default_factory=dict)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply ``changes``; raise ValueError naming any unknown option or wrong type."""
        names = {f.name: f for f in dataclasses.fields(self) if f.name != "extra"}
        for key, value in changes.items():
            if key not in names:
                raise ValueError(f"unknown option {key!r}")
            current = getattr(self, key)
            if key in _SPECIAL:
                value = _SPECIAL[key](value)
            elif isinstance(current, bool):
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


def _lag(value: Any) -> int | str:
    if value == "random":
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
        raise ValueError("option 'create_updated_lag' must be \"random\" or seconds (0..3600)")
    return int(value)


def _repeat(value: Any) -> str:
    if value in (422, "422"):  # `-o conversion_repeat=422` parses as a number
        return "422"
    if value == "duplicate":
        return value
    raise ValueError("option 'conversion_repeat' must be one of ['422', 'duplicate']")


_SPECIAL = {"create_updated_lag": _lag, "conversion_repeat": _repeat}
MERGE_RULES = frozenset({"name_and_email_or_phone", "any", "email", "name", "never"})

_CHOICES = {
    "rate_window": {"sliding", "fixed", "hourly_lockout"},
    "rate_limit_body": {"text", "json", "empty"},
    "field_pointer_prefix": {"", "/data"},
    "email_filter": {"ci", "cs"},
    "name_filter": {"ci", "cs"},
    "conversion_merge": MERGE_RULES,
    "conversion_org_lead": {"organization", "person"},
    "unknown_filter": {"ignore", "reject"},
    "custom_date_read_format": {"us", "iso", "datetime"},
    "custom_datetime_read_format": {"iso", "us"},
    "custom_list_read_format": {"string", "object"},
    "custom_multiselect_read_format": {"strings", "objects"},
    "custom_field_keys": {"current", "both", "legacy"},
    "custom_number_format": {"string", "as_sent"},
    "conversion_lead": {"removed", "kept"},
}


@dataclass(frozen=True)
class Declared:
    """An option's evidence mark and its test values (two for a numeric option; every
    choice of an [I] or [T] option, as the real service may give any of them)."""

    mark: str  # "C", "T" or "I" (the reference's legend)
    values: tuple[Any, ...]


_C, _T, _I = "C", "T", "I"

DECLARED: dict[str, Declared] = {
    "require_user_agent": Declared(_T, (True, False)),
    "reject_lowercase_bearer": Declared(_T, (True, False)),
    "reject_lowercase_method": Declared(_C, (True, False)),
    # DOCS give 36,000/h; a per-second cap is not documented (the reference, §15.3)
    "rate_per_second": Declared(_I, (10, 100_000)),
    "rate_per_hour": Declared(_C, (36_000, 10**9)),
    "rate_window": Declared(_I, ("sliding", "fixed", "hourly_lockout")),
    "rate_count_rejected": Declared(_I, (True, False)),
    "rate_count_all": Declared(_I, (True, False)),
    "rate_limit_headers": Declared(_C, (False, True)),  # none documented [C]
    "rate_limit_body": Declared(_I, ("json", "text", "empty")),  # code [T], body shape [I]
    "reject_readonly_attributes": Declared(_I, (True, False)),
    "field_pointer_prefix": Declared(_C, ("", "/data")),  # both seen
    "create_updated_lag": Declared(_C, ("random", 0, 2)),  # seen 0-2 s
    "email_filter": Declared(_I, ("cs", "ci")),
    "name_filter": Declared(_I, ("cs", "ci")),
    "unknown_filter": Declared(_T, ("ignore", "reject")),  # reference §15.7
    "noop_write_bumps": Declared(_I, (True, False)),
    "custom_date_read_format": Declared(_I, ("us", "iso", "datetime")),
    "custom_datetime_read_format": Declared(_I, ("iso", "us")),
    "custom_list_read_format": Declared(_I, ("string", "object")),
    "custom_multiselect_read_format": Declared(_I, ("strings", "objects")),
    "custom_field_keys": Declared(_I, ("current", "both", "legacy")),
    "create_status": Declared(_T, (200, 201)),
    "custom_number_format": Declared(_I, ("string", "as_sent")),  # strings [C], as sent [I]
    # Sell's default rule [C]; each account can change it [C]
    "conversion_merge": Declared(_C, tuple(sorted(MERGE_RULES))),
    "conversion_org_lead": Declared(_T, ("organization", "person")),
    "conversion_repeat": Declared(_T, ("422", "duplicate")),  # reference §15.4
    "conversion_copy_custom_fields": Declared(_I, (False, True)),
    "conversion_lead": Declared(_I, ("removed", "kept")),
    "conversion_status": Declared(_I, (200, 201)),
    "conversion_create_deal": Declared(_T, (True, False)),
    "sync_page_size": Declared(_I, (50, 2)),
    "sync_empty_pages": Declared(_I, (0, 2)),
    "sync_include_users": Declared(_I, (True, False)),
    "sync_other_types": Declared(_C, (True, False)),
    "sync_device_limit": Declared(_C, (100, 2)),
}


def option_names() -> set[str]:
    """Every option ``Options.update`` accepts."""
    return {f.name for f in dataclasses.fields(Options) if f.name != "extra"}


def open_answers() -> list[tuple[str, Any]]:
    """``(option, value)`` for every test value of every [I] or [T] option, in declaration
    order: one world each in the sync's matrix test."""
    return [
        (name, value) for name, d in DECLARED.items() if d.mark in (_I, _T) for value in d.values
    ]


def make_options(changes: dict[str, Any] | None = None) -> Options:
    opts = Options()
    if changes:
        opts.update(changes)
    return opts
