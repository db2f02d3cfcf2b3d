"""Text from Sell, cleaned where Sell's JSON becomes records (``crm.records``).

A Sell user can type anything into a lead: a line break in a first name turned it into a
second email header (``Eve\\r\\nBcc: x@evil.example``). Removed from every text Sell
sends (names, organization, free text, custom-field text): Unicode ``Cc`` (C0, DEL, C1),
the line and paragraph separators U+2028/2029 and the bidi controls U+202A–202E and
U+2066–2069. A tab in a name becomes a space. Two things are never cleaned: a KulooId
(it identifies a user: a changed one must read as changed) and an email address (the
caller asks ``is_clean`` and refuses one that is not; a rewritten address would mail
someone else). Pure: imports ``values`` only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .values import KULOO_ID

REMOVED = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean_text(value: str, *, name: bool = False) -> str:
    """``value`` without the characters Sell text may not carry (a tab in a name: a space)."""
    if name:
        value = value.replace("\t", " ")
    return REMOVED.sub("", value)


def is_clean(value: str) -> bool:
    """Whether ``clean_text`` would leave ``value`` as it is."""
    return REMOVED.search(value) is None


def clean_custom_fields(fields: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Custom fields with their text cleaned (a text, or the choices of a multi-select),
    and the names of those that changed; the KulooId is kept as Sell sent it."""
    out: dict[str, Any] = {}
    changed: list[str] = []
    for key, value in fields.items():
        new = value
        if key == KULOO_ID:
            pass
        elif isinstance(value, str):
            new = clean_text(value)
        elif isinstance(value, list):
            new = [clean_text(v) if isinstance(v, str) else v for v in value]
        if new != value:
            changed.append(key)
        out[key] = new
    return out, tuple(changed)
