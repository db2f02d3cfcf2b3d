"""Canonical field values: what each side of a link says, in one comparable form.

The three-way merge compares three readings of every mapped field (docs/sync-rules.md): the
Kuloo user's, the Sell record's and the last synced one. This module turns both sides
into the same plain, JSON-able form, so that "changed" means "different meaning", never
"different spelling": a Promo list is a sorted set, an email its ``vocabulary.email_key``,
a date is ``YYYY-MM-DD`` however Sell reads it back (``4/27/2016``), a dropdown choice is
its name however Sell reads it back (a string or ``{"id": N, "name": "…"}``; a multi-select
a list of either), blank is ``None``.

It also goes the other way: ``sell_payload`` builds the body of a partial PUT (only the
given fields, a multi-select whole) and ``kuloo_attrs`` the user attributes a Sell value
stands for (through ``vocabulary.to_kuloo``). Pure: imports ``vocabulary`` only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..vocabulary import CUSTOM_FIELDS, FIELD_BY_NAME, FIELDS, email_key, parse_sell_date, to_kuloo

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
KULOO_ID = "KulooId"
SYNC_ERROR = "Sync error"
PROMO = "Promo"
SUBSCRIPTION = "Subscription"
LAST_ACTIVE = "Last active"
EMAIL = "email"


def _name(value: Any) -> Any:
    """A choice read back as ``{"id": N, "name": "…"}`` is its name."""
    if isinstance(value, Mapping):
        return value.get("name", value.get("value"))
    return value


def canonical(name: str, value: Any) -> Any:
    """One field's value in the merge's comparable form (JSON-able)."""
    if value is None or value == "" or value == [] or value == ():
        return None
    if name == PROMO:
        if isinstance(value, str | Mapping):
            value = [value]
        names = (_name(v) for v in value)
        return sorted({str(v) for v in names if v is not None and str(v) != ""}) or None
    value = _name(value)
    if value is None or value == "":
        return None
    if name == EMAIL:
        return email_key(value) or None
    if name == LAST_ACTIVE:
        try:
            return parse_sell_date(str(value)).isoformat()
        except ValueError:
            return str(value)  # unreadable: differs from any date, so it is put back
    if isinstance(value, str):
        return value.strip() or None
    return str(value)


_TO_SELL = tuple((f.name, f.to_sell_fn) for f in FIELDS)  # to_sell without its lookup per field


def kuloo_values(user: Mapping[str, Any]) -> dict[str, Any]:
    """Every mapped field as the Kuloo user says it (``to_sell``, made canonical)."""
    return {name: canonical(name, to_sell_fn(user)) for name, to_sell_fn in _TO_SELL}


def sell_raw(record: Any, name: str) -> Any:
    """A field's value on a Sell record (a ``Lead``/``Contact`` or a plain mapping)."""
    field = FIELD_BY_NAME[name]
    if field.custom:
        custom = (
            record.get("custom_fields") if isinstance(record, Mapping) else record.custom_fields
        )
        return (custom or {}).get(name)
    return record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)


_CUSTOM = tuple((f.name, f.custom) for f in FIELDS)


def sell_values(record: Any) -> dict[str, Any]:
    """Every mapped field as the Sell record says it (``sell_raw`` of each, made canonical)."""
    if isinstance(record, Mapping):
        custom = record.get("custom_fields") or {}
        return {
            name: canonical(name, custom.get(name) if is_custom else record.get(name))
            for name, is_custom in _CUSTOM
        }
    custom = record.custom_fields or {}
    return {
        name: canonical(name, custom.get(name) if is_custom else getattr(record, name, None))
        for name, is_custom in _CUSTOM
    }


def kuloo_attrs(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The user attributes that Sell values (canonical, by field name) stand for.

    Raises ``ValueError`` for a value that is not one of the field's Kuloo values.
    """
    attrs: dict[str, Any] = {}
    for name, value in changes.items():
        attrs.update(to_kuloo(name, value))
    if "email" in attrs:
        attrs["email"] = email_key(attrs["email"])
    return attrs


def sell_payload(fields: Mapping[str, Any], promo_order: Iterable[str] = ()) -> dict[str, Any]:
    """The body of a partial write: only ``fields`` (canonical values by field name).

    Custom fields go under ``custom_fields`` (``None`` clears one); Promo is written whole,
    in the user's order where it has one.
    """
    custom: dict[str, Any] = {}
    out: dict[str, Any] = {}
    custom_names = {f.name for f in CUSTOM_FIELDS}
    for name, value in fields.items():
        if name == PROMO:
            order = [t for t in dict.fromkeys(promo_order) if value and t in value]
            value = order + [t for t in (value or []) if t not in order] if value else None
        if name in custom_names:
            custom[name] = value
        else:
            out[name] = value
    if custom:
        out["custom_fields"] = custom
    return out
