"""Pure decisions about what a write or a query may contain.

Owns the attribute schemas of Lead and Contact, the custom-field value rules (type and exact
choice names), the lead/contact create rules, and the parsing of list query parameters. Every
function takes plain data and returns errors or parsed values; none touches state.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from .envelope import ApiError, invalid_param

STR = "string"
INT = "integer"
BOOL = "boolean"
ADDRESS = "address"
TAGS = "tags"
CUSTOM = "custom_fields"

_TEXT = (
    "title description industry website email phone mobile fax twitter facebook linkedin skype"
).split()

WRITABLE: dict[str, dict[str, str]] = {
    "lead": {
        "owner_id": INT,
        "first_name": STR,
        "last_name": STR,
        "organization_name": STR,
        "status": STR,
        "source_id": INT,
        "unqualified_reason_id": INT,
        **{k: STR for k in _TEXT},
        "address": ADDRESS,
        "tags": TAGS,
        "custom_fields": CUSTOM,
    },
    "contact": {
        "owner_id": INT,
        "is_organization": BOOL,
        "name": STR,
        "first_name": STR,
        "last_name": STR,
        "contact_id": INT,
        "parent_organization_id": INT,
        "customer_status": STR,
        **{k: STR for k in _TEXT},
        "address": ADDRESS,
        "billing_address": ADDRESS,
        "shipping_address": ADDRESS,
        "tags": TAGS,
        "custom_fields": CUSTOM,
    },
}
READ_ONLY = {"id", "creator_id", "created_at", "updated_at"}
# Computed by Sell: prospect status follows the contact's deals (only customer_status can be
# set by hand, docs/sell-api.md), so a write is treated like one to a read-only attribute.
COMPUTED = {"lead": set(), "contact": {"prospect_status"}}
ADDRESS_KEYS = {"line1", "city", "postal_code", "state", "country"}
CUSTOMER_STATUSES = {"none", "current", "past"}
PROSPECT_STATUSES = {"none", "current", "lost"}

FIELD_TYPES = {
    "address", "bool", "boolean", "date", "datetime", "email", "list",
    "multi_select_list", "number", "phone", "string", "text", "url",
}  # fmt: skip
FILTERABLE_TYPES = {"string", "number", "list", "multi_select_list"}

_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def pointer(prefix: str, *parts: str) -> str:
    return prefix + "".join("/" + p for p in parts)


def _unknown(resource: str, ptr: str, why: str = "") -> ApiError:
    details = (
        why or f"The attribute '{ptr}' is not a known attribute for the '{resource}' resource."
    )
    return ApiError(422, "unknown", "unknown attribute", details, resource, ptr)


def _incorrect(resource: str, ptr: str, details: str) -> ApiError:
    return ApiError(422, "incorrect_value", "attribute value is incorrect", details, resource, ptr)


def _invalid_type(resource: str, ptr: str, expected: str) -> ApiError:
    return ApiError(
        422, "invalid_type", "attribute has an invalid type", f"expected {expected}", resource, ptr
    )


def _missing(resource: str, ptr: str, details: str) -> ApiError:
    return ApiError(422, "missing", "attribute is missing", details, resource, ptr)


def custom_field_applies(definition: dict[str, Any], resource: str, is_org: bool) -> bool:
    if resource != "contact":
        return True
    return bool(definition.get("for_company") if is_org else definition.get("for_contact"))


def check_custom_value(definition: dict[str, Any], value: Any) -> str | None:
    """Why ``value`` is not acceptable for the field, or None. ``None`` (clear) is always fine."""
    if value is None:
        return None
    ftype = definition["type"]
    names = [c["name"] for c in definition.get("choices") or []]
    if ftype in {"string", "text", "email", "phone", "url"}:
        return None if isinstance(value, str) else "value must be a string"
    if ftype == "number":
        if isinstance(value, bool):
            return "value must be a number"
        if isinstance(value, int):
            return None
        if isinstance(value, float):
            return None if math.isfinite(value) else "value must be a finite number"
        if isinstance(value, str) and _NUMBER.match(value):
            return None
        return "value must be a number, e.g. 123.45"
    if ftype in {"bool", "boolean"}:
        return None if isinstance(value, bool) else "value must be true or false"
    if ftype == "date":
        if not isinstance(value, str) or not _DATE.match(value):
            return "value must be a date formatted YYYY-MM-DD"
        try:
            date.fromisoformat(value)
        except ValueError:
            return "value is not a valid date"
        return None
    if ftype == "datetime":
        if not isinstance(value, str) or not _DATETIME.match(value):
            return "value must be a datetime formatted YYYY-MM-DDTHH:MM:SSZ"
        try:
            datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            return "value is not a valid datetime"
        return None
    if ftype == "list":
        if not isinstance(value, str):
            return "value must be the name of one choice"
        if value not in names:
            return f"value {value!r} is not included in the list {names}"
        return None
    if ftype == "multi_select_list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return "value must be a list of choice names"
        bad = [v for v in value if v not in names]
        if bad:
            return f"values {bad} are not included in the list {names}"
        return None
    if ftype == "address":
        if not isinstance(value, dict) or set(value) - ADDRESS_KEYS:
            return f"value must be an address object with keys {sorted(ADDRESS_KEYS)}"
        return None
    return f"unsupported field type {ftype!r}"


def _check_standard(resource: str, key: str, kind: str, value: Any, ptr: str) -> ApiError | None:
    if value is None:
        return None
    if kind == STR and not isinstance(value, str):
        return _invalid_type(resource, ptr, "a string")
    if kind == INT and (isinstance(value, bool) or not isinstance(value, int)):
        return _invalid_type(resource, ptr, "an integer")
    if kind == BOOL and not isinstance(value, bool):
        return _invalid_type(resource, ptr, "a boolean")
    if kind == TAGS and (not isinstance(value, list) or not all(isinstance(t, str) for t in value)):
        return _invalid_type(resource, ptr, "an array of strings")
    if kind == ADDRESS:
        if not isinstance(value, dict):
            return _invalid_type(resource, ptr, "an address object")
        extra = sorted(set(value) - ADDRESS_KEYS)
        if extra:
            return _unknown(resource, ptr + "/" + extra[0])
        for k, v in value.items():
            if v is not None and not isinstance(v, str):
                return _invalid_type(resource, ptr + "/" + k, "a string")
    if kind == CUSTOM and not isinstance(value, dict):
        return _invalid_type(resource, ptr, "an object keyed by custom field name")
    return None


@dataclass
class WriteContext:
    resource: str  # "lead" | "contact"
    definitions: list[dict[str, Any]]
    statuses: list[str] = field(default_factory=list)  # lead statuses of the account
    existing: dict[str, Any] | None = None  # the stored record on update
    prefix: str = ""
    reject_readonly: bool = True
    users: set[int] | None = None  # ids of the account's users (owner_id must be one)


def check_write(attrs: Any, ctx: WriteContext) -> list[ApiError]:
    """Every problem with a create (``ctx.existing is None``) or partial update body."""
    r = ctx.resource
    if not isinstance(attrs, dict):
        return [_invalid_type(r, pointer(ctx.prefix), "an object")]
    errors: list[ApiError] = []
    schema = WRITABLE[r]
    for key, value in attrs.items():
        ptr = pointer(ctx.prefix, key)
        if key in READ_ONLY or key in COMPUTED[r]:
            if ctx.reject_readonly:
                errors.append(_unknown(r, ptr, f"The attribute '{ptr}' is read-only."))
            continue
        if key not in schema:
            errors.append(_unknown(r, ptr))
            continue
        err = _check_standard(r, key, schema[key], value, ptr)
        if err:
            errors.append(err)

    owner = attrs.get("owner_id")
    if ctx.users is not None and isinstance(owner, int) and not isinstance(owner, bool):
        if owner not in ctx.users:
            errors.append(
                _incorrect(r, pointer(ctx.prefix, "owner_id"), f"user {owner} does not exist")
            )

    creating = ctx.existing is None
    merged = dict(ctx.existing or {})
    merged.update({k: v for k, v in attrs.items() if k != "custom_fields"})

    if r == "lead":
        if "status" in attrs and attrs["status"] is not None and ctx.statuses:
            if attrs["status"] not in ctx.statuses:
                errors.append(
                    _incorrect(
                        r,
                        pointer(ctx.prefix, "status"),
                        f"value is not included in the list {ctx.statuses}",
                    )
                )
        if not (merged.get("last_name") or merged.get("organization_name")):
            errors.append(
                _missing(
                    r,
                    pointer(ctx.prefix, "last_name"),
                    "A lead needs a last_name or an organization_name.",
                )
            )
    else:
        is_org = bool(merged.get("is_organization"))
        if not creating and "is_organization" in attrs:
            if bool(attrs["is_organization"]) != bool((ctx.existing or {}).get("is_organization")):
                errors.append(
                    _incorrect(
                        r,
                        pointer(ctx.prefix, "is_organization"),
                        "is_organization can be set only when the contact is created.",
                    )
                )
        if is_org and not merged.get("name"):
            errors.append(_missing(r, pointer(ctx.prefix, "name"), "An organization needs a name."))
        if not is_org and not merged.get("last_name"):
            errors.append(
                _missing(r, pointer(ctx.prefix, "last_name"), "A person needs a last_name.")
            )
        for key, allowed in (("customer_status", CUSTOMER_STATUSES),):
            if attrs.get(key) is not None and attrs[key] not in allowed:
                errors.append(
                    _incorrect(
                        r,
                        pointer(ctx.prefix, key),
                        f"value is not included in the list {sorted(allowed)}",
                    )
                )

    custom = attrs.get("custom_fields")
    if isinstance(custom, dict):
        is_org = bool(merged.get("is_organization"))
        by_name = {d["name"]: d for d in ctx.definitions if custom_field_applies(d, r, is_org)}
        for name, value in custom.items():
            ptr = pointer(ctx.prefix, "custom_fields", name)
            definition = by_name.get(name)
            if definition is None:
                errors.append(
                    _unknown(r, ptr, f"The custom field '{name}' does not exist for this '{r}'.")
                )
                continue
            why = check_custom_value(definition, value)
            if why:
                errors.append(_incorrect(r, ptr, why))
    return errors


def numbers_as_strings(attrs: Any, definitions: list[dict[str, Any]]) -> Any:
    """``attrs`` with JSON-number values of number custom fields turned into strings, the form
    Sell reads them back in (``"123.45"``)."""
    custom = attrs.get("custom_fields") if isinstance(attrs, dict) else None
    if not isinstance(custom, dict):
        return attrs
    numbers = {d["name"] for d in definitions if d["type"] == "number"}
    fixed = {
        k: (str(x) if k in numbers and isinstance(x, int | float) and not isinstance(x, bool)
            else x)
        for k, x in custom.items()
    }  # fmt: skip
    return dict(attrs, custom_fields=fixed)


def apply_write(record: dict[str, Any], attrs: dict[str, Any]) -> bool:
    """Apply a validated partial update in place; return whether anything changed.

    Tags and multi-select arrays are replaced whole; ``custom_fields`` merges per key;
    ``null`` clears a custom field (it is then absent from reads).
    """
    changed = False
    for key, value in attrs.items():
        if key == "custom_fields":
            cf = record.setdefault("custom_fields", {})
            for name, v in value.items():
                if v is None:
                    if name in cf:
                        del cf[name]
                        changed = True
                elif cf.get(name) != v:
                    cf[name] = list(v) if isinstance(v, list) else v
                    changed = True
        elif key == "address" or key.endswith("_address"):
            new = None if value is None else {k: value.get(k) for k in sorted(ADDRESS_KEYS)}
            if record.get(key) != new:
                record[key] = new
                changed = True
        elif record.get(key) != value:
            record[key] = list(value) if isinstance(value, list) else value
            changed = True
    return changed


# --- list queries ----------------------------------------------------------------------------

SORTABLE = {
    "lead": {"id", "created_at", "updated_at", "first_name", "last_name",
             "organization_name", "email", "status", "owner_id"},
    "contact": {"id", "created_at", "updated_at", "first_name", "last_name", "name",
                "email", "owner_id"},
}  # fmt: skip
DEFAULT_SORT = {"lead": ("updated_at", False), "contact": ("last_name", False)}
FILTERS = {
    "lead": {"ids", "creator_id", "owner_id", "source_id", "first_name", "last_name",
             "organization_name", "status", "email", "phone", "mobile",
             "address[city]", "address[postal_code]", "address[country]", "address[state]"},
    "contact": {"ids", "creator_id", "owner_id", "contact_id", "first_name", "last_name",
                "name", "email", "is_organization", "phone", "mobile",
                "address[city]", "address[postal_code]", "address[country]", "address[state]"},
}  # fmt: skip
_CF_PARAM = re.compile(r"^custom_fields\[(.+)\]$")


@dataclass
class ListQuery:
    page: int = 1
    per_page: int = 25
    sort_field: str = "id"
    sort_desc: bool = False
    filters: dict[str, str] = field(default_factory=dict)
    custom: dict[str, str] = field(default_factory=dict)
    sort_custom: str | None = None  # sort_by=custom_fields:<name>[:asc|desc]


def parse_int_param(name: str, raw: str, lo: int, hi: int | None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise invalid_param(name, f"must be an integer, given: {raw}") from None
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise invalid_param(name, f"must be {bound}, given: {value}")
    return value


def parse_list_query(resource: str, params: list[tuple[str, str]]) -> ListQuery:
    """Parse a ``GET /v2/leads|contacts`` query; raise ApiError 400 on the first bad parameter."""
    q = ListQuery()
    q.sort_field, q.sort_desc = DEFAULT_SORT[resource]
    seen: set[str] = set()
    for name, raw in params:
        if name in seen:
            raise invalid_param(name, "given more than once")
        seen.add(name)
        if name == "page":
            q.page = parse_int_param(name, raw, 1, None)
        elif name == "per_page":
            q.per_page = parse_int_param(name, raw, 1, 100)
        elif name == "sort_by":
            fname, direction = raw, ""
            if raw.endswith((":asc", ":desc")):
                fname, _, direction = raw.rpartition(":")
            if fname.startswith("custom_fields:") and len(fname) > len("custom_fields:"):
                q.sort_custom = fname[len("custom_fields:") :]  # checked against definitions
            elif fname not in SORTABLE[resource]:
                raise invalid_param(name, f"unsupported sort order, given: {raw}")
            q.sort_field, q.sort_desc = fname, direction == "desc"
        elif name in FILTERS[resource]:
            if name in {"ids", "creator_id", "owner_id", "source_id", "contact_id"}:
                for part in raw.split(","):
                    if not part.strip().isdigit():
                        raise invalid_param(name, f"must be integers, given: {raw}")
            if name == "is_organization" and raw not in {"true", "false"}:
                raise invalid_param(name, f"must be true or false, given: {raw}")
            q.filters[name] = raw
        elif m := _CF_PARAM.match(name):
            q.custom[m.group(1)] = raw
        else:
            raise invalid_param(name, "unknown parameter")
    return q


def check_custom_filters(
    custom: dict[str, str], definitions: list[dict[str, Any]], reject: bool
) -> set[str]:
    """The custom-field filters Sell cannot apply (unknown field, a type that cannot be
    filtered, Filterable off): with ``reject`` the first one raises 400, else they are
    returned so that the caller drops them."""
    by_name = {d["name"]: d for d in definitions}
    bad: set[str] = set()
    for name in custom:
        param = f"custom_fields[{name}]"
        d = by_name.get(name)
        if d is None:
            why = f"no custom field named {name!r}"
        elif d["type"] not in FILTERABLE_TYPES:
            why = f"fields of type {d['type']} cannot be filtered"
        elif not d.get("filterable", False):
            why = f"custom field {name!r} is not filterable"
        else:
            continue
        if reject:
            raise invalid_param(param, why)
        bad.add(name)
    return bad


def sort_value(ftype: str, value: Any) -> Any:
    """A custom-field value as a sort key (numbers by value, lists by their first choice)."""
    if value is None:
        return None
    if ftype == "number":
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    if isinstance(value, list):
        return ",".join(value).lower() if value else None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dict):
        return None
    return str(value).lower() if ftype not in {"date", "datetime"} else str(value)


def format_date(value: str, style: str) -> str:
    """A stored ``YYYY-MM-DD`` as Sell may read it back: ``us`` (``4/27/2016``, the docs'
    example), ``iso`` (as written) or ``datetime`` (midnight UTC)."""
    if style == "iso":
        return value
    d = date.fromisoformat(value)
    if style == "us":
        return f"{d.month}/{d.day}/{d.year}"
    return f"{value}T00:00:00Z"


def format_datetime(value: str, style: str) -> str:
    """A stored ``YYYY-MM-DDTHH:MM:SSZ`` as Sell may read it back: ``iso`` (as written) or
    ``us`` (``4/28/2016 6:00``, the docs' value table: no seconds, no zone)."""
    if style == "iso":
        return value
    t = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    return f"{t.month}/{t.day}/{t.year} {t.hour}:{t.minute:02d}"


@dataclass(frozen=True)
class ReadFormats:
    """How custom-field values are shown on read (the ``custom_*_read_format`` options)."""

    date_style: str = "us"
    datetime_style: str = "iso"
    list_style: str = "string"
    multi_style: str = "strings"

    @property
    def as_written(self) -> bool:
        styles = (self.date_style, self.datetime_style, self.list_style, self.multi_style)
        return styles == ("iso", "iso", "string", "strings")


def _choice(value: Any, ids: dict[Any, Any]) -> Any:
    """A choice name as the docs' value table shows it: ``{"id": N, "name": "…"}``."""
    if not isinstance(value, str):  # forced through the UI: shown as stored
        return value
    return {"id": ids.get(value), "name": value}


def _shown(value: Any, definition: dict[str, Any], formats: ReadFormats) -> Any:
    ftype = definition["type"]
    try:
        if ftype == "date" and formats.date_style != "iso":
            return format_date(value, formats.date_style)
        if ftype == "datetime" and formats.datetime_style != "iso":
            return format_datetime(value, formats.datetime_style)
    except (TypeError, ValueError):  # forced through the UI: shown as stored
        return value
    if ftype in ("list", "multi_select_list"):
        objects = (
            formats.list_style == "object" if ftype == "list" else formats.multi_style == "objects"
        )
        if objects:
            ids = {
                c.get("name"): c.get("id")
                for c in definition.get("choices") or []
                if isinstance(c, dict)
            }
            if ftype == "list":
                return _choice(value, ids)
            if isinstance(value, list):
                return [_choice(v, ids) for v in value]
    return value


def read_view(record: dict[str, Any], definitions: list[dict[str, Any]],
              formats: ReadFormats) -> dict[str, Any]:  # fmt: skip
    """``record`` as the API answers it: custom-field values in the read formats (a copy
    only when something differs; the stored form stays what was written)."""
    cf = record.get("custom_fields")
    if formats.as_written or not cf:
        return record
    shown = dict(cf)
    changed = False
    for d in definitions:
        name = d["name"]
        if name in cf and cf[name] is not None:
            value = _shown(cf[name], d, formats)
            if value is not cf[name]:
                shown[name] = value
                changed = True
    if not changed:
        return record
    return {**record, "custom_fields": shown}
