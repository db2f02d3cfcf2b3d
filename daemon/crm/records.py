"""Typed records read from Sell's envelopes: Lead, Contact, CustomFieldDef, LeadConversion.

Owns the lenient parsing of Sell's JSON into small frozen dataclasses: missing keys become
None/empty, ids given as strings become ints, ``choices``/``options`` and
``for_company``/``for_organisation`` are aliases, ``boolean`` is ``bool``. Every record
keeps the server's dict in ``raw``. What cannot be read safely raises ``RecordFormatError``
instead of being guessed: a Lead, Contact or conversion without an integer ``id``, or a
``custom_fields``/``tags`` that is neither null nor the right JSON type (reading it as
"empty" would look like the fields were cleared in Sell). Text is cleaned here, as it is
read (``rules.cleaning``: control characters out of names, organization and custom-field
text; the KulooId and the email never rewritten), so every later step — the merge
included — sees the cleaned value as Sell's; ``cleaned`` names the fields it changed (and
an email it would have changed, for the sync to refuse). Pure: imports the standard
library, ``rules`` and ``vocabulary``.

Also owns how the client compares what Sell sends back with what it asked for, because Sell
does not echo values the way they were written: emails by ``vocabulary.email_key``, the
sync's own key (whether ``?email=`` is case-sensitive is unknown), ``same_custom_value``
(a date written ``2016-04-27`` may read back as ``4/27/2016`` or a datetime, a datetime as
``4/28/2016 6:00``; numbers come back as strings; a dropdown choice as
``{"id": N, "name": "…"}`` and a multi-select as a list of those: ``choice_name``) and
``matches_filters`` (a filter Sell cannot apply may be ignored, returning every record:
candidates are re-checked here).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from ..rules.cleaning import clean_custom_fields, clean_text, is_clean
from ..vocabulary import email_key


class RecordFormatError(ValueError):
    """A record Sell sent that cannot be read without guessing."""


def as_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def as_str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def parse_ts(value: Any) -> datetime | None:
    """Sell timestamps: ``2019-09-04T08:28:59Z`` (second precision, UTC); tolerate others."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _record_id(data: Any, what: str) -> int:
    if not isinstance(data, dict):
        raise RecordFormatError(f"a {what} that is not a JSON object")
    rid = as_int(data.get("id"))
    if rid is None:
        raise RecordFormatError(f"a {what} without an integer id")
    return rid


def _custom_fields(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordFormatError("custom_fields is not an object")
    return dict(value)


def _tags(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RecordFormatError("tags is not a list")
    return tuple(str(t) for t in value if t is not None)


NAMES = ("first_name", "last_name", "organization_name", "name")  # a tab in these: a space


def _cleaned(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with Sell's text cleaned and ``cleaned`` naming what changed. The email is
    kept as sent: one cleaning would change is named, for the sync to refuse."""
    cleaned: list[str] = []
    for name in NAMES:
        value = fields.get(name)
        if isinstance(value, str) and value != (text := clean_text(value, name=True)):
            fields[name] = text
            cleaned.append(name)
    if isinstance(fields["email"], str) and not is_clean(fields["email"]):
        cleaned.append("email")
    fields["custom_fields"], changed = clean_custom_fields(fields["custom_fields"])
    fields["cleaned"] = (*cleaned, *changed)
    return fields


def _person_fields(data: dict[str, Any], kind: str, **more: Any) -> dict[str, Any]:
    """The attributes Leads and Contacts share, parsed (and cleaned) the same way for both."""
    return _cleaned(
        {
            "id": _record_id(data, kind),
            "first_name": as_str(data.get("first_name")),
            "last_name": as_str(data.get("last_name")),
            "email": as_str(data.get("email")),
            "owner_id": as_int(data.get("owner_id")),
            "tags": _tags(data.get("tags")),
            "custom_fields": _custom_fields(data.get("custom_fields")),
            "created_at": as_str(data.get("created_at")),
            "updated_at": as_str(data.get("updated_at")),
            "raw": dict(data),
            **more,
        }
    )


@dataclass(frozen=True)
class Lead:
    id: int
    first_name: str | None = None
    last_name: str | None = None
    organization_name: str | None = None
    email: str | None = None
    status: str | None = None
    owner_id: int | None = None
    tags: tuple[str, ...] = ()
    custom_fields: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    updated_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    cleaned: tuple[str, ...] = field(default=(), compare=False)  # fields cleaning changed

    kind = "lead"

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Lead:
        organization = as_str(data.get("organization_name"))
        return cls(
            **_person_fields(
                data, "lead", organization_name=organization, status=as_str(data.get("status"))
            )
        )

    @property
    def updated(self) -> datetime | None:
        return parse_ts(self.updated_at)


@dataclass(frozen=True)
class Contact:
    id: int
    first_name: str | None = None
    last_name: str | None = None
    name: str | None = None
    email: str | None = None
    is_organization: bool = False
    contact_id: int | None = None
    owner_id: int | None = None
    tags: tuple[str, ...] = ()
    custom_fields: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    updated_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    cleaned: tuple[str, ...] = field(default=(), compare=False)  # fields cleaning changed

    kind = "contact"

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Contact:
        return cls(
            **_person_fields(
                data,
                "contact",
                name=as_str(data.get("name")),
                is_organization=bool(data.get("is_organization") or False),
                contact_id=as_int(data.get("contact_id")),
            )
        )

    @property
    def updated(self) -> datetime | None:
        return parse_ts(self.updated_at)


TYPE_ALIASES = {"boolean": "bool", "dropdown": "list", "multi_select": "multi_select_list"}


def _choices(data: dict[str, Any]) -> tuple[tuple[str, ...], tuple[int | None, ...]]:
    raw = data.get("choices")
    if raw is None:
        raw = data.get("options")
    if not isinstance(raw, list):
        return (), ()
    names: list[str] = []
    ids: list[int | None] = []
    for item in raw:
        if isinstance(item, dict):
            name = item.get("name", item.get("value"))
            if name is None:
                continue
            names.append(str(name))
            ids.append(as_int(item.get("id")))
        elif item is not None:
            names.append(str(item))
            ids.append(None)
    return tuple(names), tuple(ids)


def _opt_bool(data: dict[str, Any], *keys: str) -> bool | None:
    for key in keys:
        if key in data and data[key] is not None:
            return bool(data[key])
    return None


@dataclass(frozen=True)
class CustomFieldDef:
    id: int | None
    name: str
    type: str
    choices: tuple[str, ...] = ()
    choice_ids: tuple[int | None, ...] = ()
    resource_type: str | None = None
    for_company: bool | None = None
    for_contact: bool | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_data(cls, data: dict[str, Any], resource_type: str | None = None) -> CustomFieldDef:
        kind = (as_str(data.get("type")) or "").strip().lower()
        names, ids = _choices(data)
        return cls(
            id=as_int(data.get("id")),
            name=as_str(data.get("name")) or "",
            type=TYPE_ALIASES.get(kind, kind),
            choices=names,
            choice_ids=ids,
            resource_type=as_str(data.get("resource_type")) or resource_type,
            for_company=_opt_bool(data, "for_company", "for_organisation", "for_organization"),
            for_contact=_opt_bool(data, "for_contact"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class LeadConversion:
    id: int
    lead_id: int | None
    individual_id: int | None = None
    organization_id: int | None = None
    deal_id: int | None = None
    creator_id: int | None = None
    created_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> LeadConversion:
        return cls(
            id=_record_id(data, "lead conversion"),
            lead_id=as_int(data.get("lead_id")),
            individual_id=as_int(data.get("individual_id")),
            organization_id=as_int(data.get("organization_id")),
            deal_id=as_int(data.get("deal_id")),
            creator_id=as_int(data.get("creator_id")),
            created_at=as_str(data.get("created_at")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class SyncItem:
    """One item of a Sync API queue page."""

    type: str
    event_type: str
    ack_key: str | None
    revision: int | None
    data: dict[str, Any]

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> SyncItem:
        meta = _object(item.get("meta"))
        sync = _object(meta.get("sync"))
        data = _object(item.get("data"))
        return cls(
            type=(as_str(meta.get("type")) or "").lower(),
            event_type=(as_str(sync.get("event_type")) or "updated").lower(),
            ack_key=as_str(sync.get("ack_key")),
            revision=as_int(sync.get("revision")),
            data=data,
        )


@dataclass(frozen=True)
class SyncSession:
    id: str
    queues: tuple[str, ...] = ("main",)


RECORD_TYPES: dict[str, type[Lead] | type[Contact]] = {"lead": Lead, "contact": Contact}


def _object(value: Any) -> dict[str, Any]:
    """A JSON object found where one is expected, else an empty one."""
    return value if isinstance(value, dict) else {}


# ----------------------------------------------------------------------------- comparisons


_US_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_US_DATETIME = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4}) (\d{1,2}):(\d{2})(?::(\d{2}))?$")


def choice_name(value: Any) -> Any:
    """A dropdown or multi-select choice as its name: Sell may read one back as the name or
    as the docs' ``{"id": N, "name": "…"}``; anything else is returned unchanged."""
    if isinstance(value, Mapping):
        name = value.get("name", value.get("value"))
        return None if name is None else str(name)
    return value


def choice_names(value: Any) -> Any:
    """A multi-select value as a list of names (each item through ``choice_name``)."""
    if isinstance(value, list):
        return [choice_name(v) for v in value]
    return value


def parse_custom_datetime(value: Any) -> datetime | None:
    """A datetime custom field as Sell may read it back: ISO 8601 (``2016-04-28T06:00:00Z``,
    as written) or the docs' ``4/28/2016 6:00`` (taken as UTC). None if not a datetime."""
    if not isinstance(value, str):
        return None
    m = _US_DATETIME.match(value.strip())
    if m:
        month, day, year, hour, minute = (int(g) for g in m.groups()[:5])
        try:
            return datetime(year, month, day, hour, minute, int(m.group(6) or 0), tzinfo=UTC)
        except ValueError:
            return None
    return parse_ts(value)


def parse_custom_date(value: Any) -> date | None:
    """A date custom field as Sell may read it back: ``2016-04-27``, ``4/27/2016`` (the docs'
    example) or a datetime such as ``2016-04-27T00:00:00Z`` (its date part). None if not a
    date."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    m = _US_DATE.match(text)
    try:
        if m:
            return date(int(m.group(3)), int(m.group(1)), int(m.group(2)))
        if len(text) == 10:
            return date.fromisoformat(text)
    except ValueError:
        return None
    ts = parse_ts(text)
    return ts.date() if ts is not None else None


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def custom_value_key(field_type: str | None, value: Any) -> Any:
    """``value`` of a custom field of ``field_type`` in a comparable form (None = blank)."""
    if value is None or value == "" or value == []:
        return None
    kind = TYPE_ALIASES.get(field_type or "", field_type or "")
    if kind == "multi_select_list" and isinstance(value, list):
        return frozenset(str(v) for v in choice_names(value) if v is not None) or None
    value = choice_name(value)
    if value is None or value == "":
        return None
    parsed: date | datetime | Decimal | None
    if kind == "date":
        parsed = parse_custom_date(value)
        return parsed if parsed is not None else value
    if kind == "datetime":
        parsed = parse_custom_datetime(value)
        return parsed if parsed is not None else value
    if kind == "number":
        parsed = _number(value)
        return parsed if parsed is not None else value
    if kind == "email":
        return email_key(value) or None
    return value


def same_custom_value(field_type: str | None, a: Any, b: Any) -> bool:
    """Whether two values of a custom field mean the same: dates compared as dates, numbers
    as numbers, a choice as its name, multi-select choices as sets of names, blank equal to
    missing."""
    return bool(custom_value_key(field_type, a) == custom_value_key(field_type, b))


def matches_filters(
    record: Lead | Contact, filters: Mapping[str, Any], field_types: Mapping[str, str] | None = None
) -> bool:
    """Whether ``record`` really matches the list filters it was fetched with, for the filters
    Sell may apply loosely or not at all: ``ids``, ``email`` (compared normalised) and
    ``custom_fields`` (a multi-select matches when it contains the value, like Sell's filter).
    Other filters are trusted."""
    types = field_types or {}
    ids = filters.get("ids")
    if ids is not None:
        wanted = {
            as_int(i)
            for i in (
                ids if isinstance(ids, list | tuple | set | frozenset) else str(ids).split(",")
            )
        }
        if record.id not in wanted:
            return False
    if "email" in filters and filters["email"] is not None:
        if email_key(record.email) != email_key(filters["email"]):
            return False
    for name, wanted_value in (filters.get("custom_fields") or {}).items():
        if wanted_value is None:
            continue
        have = choice_name(record.custom_fields.get(name))
        if isinstance(have, list):
            if str(wanted_value) not in [str(h) for h in choice_names(have)]:
                return False
        elif not same_custom_value(types.get(name, "string"), have, wanted_value) and not (
            isinstance(have, str) and have == str(wanted_value)
        ):
            return False
    return True
