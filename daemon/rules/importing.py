"""Where a Sell record becomes a Kuloo user: the checks it passes first, as pure decisions.

``linking.decide`` says which user a record belongs to; when it says ``import`` (a record
with an email no user has, and no KulooId), ``new_user`` says what the new user is — or
why the record is not synced, as a ``Refusal`` (the Sync error's code and text), checked
in this order:

- the channel's plan has no room for one more link (``over_cap``)  → ``plan_cap``
- the email is not an address (``vocabulary.valid_email``)         → ``bad_value``
- a Promo or Subscription value Kuloo does not know               → ``bad_value``
- a Promo tag that is not one of the channel's sequential tags     → ``bad_value``

The new user takes the address as spelled in Sell (trimmed; compared by
``vocabulary.email_key``), Sell's names, Promo and Subscription (``IMPORTED``), source
``sync``, and is not marked "add to CRM" (it is in the CRM already). A record that says
only ``unsubscribed`` gets the ``DEFAULT_FREQUENCY`` for the day they subscribe again.

A record of a user erased in Kuloo is not imported while the tombstone stands
(``erased``, docs/sync-rules.md): it matches a tombstone by the KulooId it carries or by
its email's keyed hash (``email_hash``), and gets the ``erased`` Sync error instead.

A record linked to an existing user (``link``) needs room under the cap too
(``over_cap``), and the changes Sell makes to a linked user pass the same value, tag and
address checks (``sell_changes``) before they are applied.

Pure: imports ``vocabulary`` and the other rules only.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..vocabulary import Frequency, InvalidEmail, Plan, Source, email_key, valid_email
from . import caps, texts
from .values import PROMO, SUBSCRIPTION, kuloo_attrs

IMPORTED = (PROMO, SUBSCRIPTION, "first_name", "last_name")  # the fields a new user takes from Sell
DEFAULT_FREQUENCY = Frequency.WEEKLY.value


@dataclass(frozen=True)
class Refusal:
    """Why a record is not synced: its Sync error's code (``texts.E_*``) and text."""

    code: str
    text: str


@dataclass(frozen=True)
class Tombstone:
    """What an erasure leaves (``ErasedUser``): no personal data, only keys to match."""

    kuloo_id: str
    email_hash: str
    erased_at: datetime


def email_hash(key: bytes, email: str | None) -> str | None:
    """The keyed hash a tombstone keeps of an address: HMAC-SHA256 of its ``email_key``
    under the ``erasure-key`` credential, hex (None for a blank address)."""
    normal = email_key(email)
    if not normal:
        return None
    return hmac.new(key, normal.encode("utf-8"), hashlib.sha256).hexdigest()


def erased(
    kuloo_id: str | None, hashed: str | None, tombstones: Sequence[Tombstone]
) -> Refusal | None:
    """Why a record with no user is not imported: it carries the KulooId of an erased user,
    or an address whose hash (``email_hash``) a tombstone keeps. None: not erased."""
    for stone in tombstones:
        if (kuloo_id and stone.kuloo_id == kuloo_id) or (hashed and stone.email_hash == hashed):
            return Refusal(texts.E_ERASED, texts.erased(stone.erased_at.date().isoformat()))
    return None


def over_cap(plan: Plan | str, linked: int) -> Refusal | None:
    """A refusal when the plan's cap leaves no room for one more link (``linked`` made)."""
    cap = caps.cap_of(plan)
    if cap is None or linked < cap:
        return None
    return Refusal(texts.E_CAP, texts.plan_cap(Plan(plan)))


def _bad_value(exc: Exception) -> Refusal:
    return Refusal(texts.E_VALUE, texts.one_line(f"Not synced: {exc}"))


def _attrs(values: Mapping[str, Any], sequential_tags: Sequence[str]) -> dict[str, Any] | Refusal:
    """The user attributes Sell's ``values`` stand for, every Promo tag one of the channel's."""
    try:
        attrs = kuloo_attrs(values)
    except ValueError as exc:
        return _bad_value(exc)
    bad = [t for t in attrs.get("promo_tags", []) if t not in sequential_tags]
    if bad:
        return Refusal(texts.E_VALUE, texts.bad_value(PROMO, bad[0], tuple(sequential_tags)))
    return attrs


def new_user(
    email: str | None,
    values: Mapping[str, Any],
    *,
    sequential_tags: Sequence[str],
    plan: Plan | str,
    linked: int,
) -> dict[str, Any] | Refusal:
    """The attributes of the user a Sell record becomes, or why it does not become one.

    ``email`` as spelled in Sell, ``values`` its canonical field values (``values``),
    ``linked`` the links the channel has now (its plan's cap counts them).
    """
    refused = over_cap(plan, linked)
    if refused is not None:
        return refused
    try:
        address = valid_email(email or "")
    except InvalidEmail as exc:
        return _bad_value(exc)
    attrs = _attrs({n: values.get(n) for n in IMPORTED}, sequential_tags)
    if isinstance(attrs, Refusal):
        return attrs
    user = {"email": address, "source": Source.SYNC.value, "add_to_crm": False, **attrs}
    user.setdefault("frequency", DEFAULT_FREQUENCY)
    return user


def sell_changes(
    to_kuloo: Mapping[str, Any], email: str | None, *, sequential_tags: Sequence[str]
) -> dict[str, Any] | Refusal:
    """The user attributes a linked user takes from Sell (the merge's ``to_kuloo`` fields),
    or why they are not applied. A changed address is the one spelled in Sell (``email``),
    checked; whether another user has it is the store's to say."""
    attrs = _attrs(to_kuloo, sequential_tags)
    if isinstance(attrs, Refusal):
        return attrs
    if "email" in attrs:
        try:
            attrs["email"] = valid_email(email or "")
        except InvalidEmail as exc:
            return _bad_value(exc)
    return attrs
