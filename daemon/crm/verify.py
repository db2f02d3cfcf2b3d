"""The channel connection check: is the token valid, are the six custom fields right?

Owns the rules of the seed's setup step ("Case and spaces are important and will be
verified when the API key is entered"): on both Leads and Contacts, the custom fields of
the field table in ``kuloo_daemon.vocabulary`` (docs/sync-rules.md: Promo, Subscription,
Source, Last active, KulooId, Sync error), with names, types and choices matched exactly.
``check_custom_fields`` is a pure function that lists *every* problem in plain words
(prefixed "Leads:" / "Contacts:"), suggesting the intended name when a field or choice
differs only in case or spaces. ``verify_connection``
is the thin I/O shell: ``GET /v2/users/self`` then both definition lists; it never raises
for an expected failure (bad token, no network, Sell down) but answers ``ok=False`` with a
readable problem. A ``Promo`` check is skipped while the channel has no sequential tags
(nothing to compare with; every choice would be "extra").

Imports trio, this package, ``kuloo_daemon.vocabulary`` and the standard library;
persists nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from ..vocabulary import CUSTOM_FIELDS
from . import errors as E
from .client import SellClient
from .records import CustomFieldDef

CASE_HINT = "(case and spaces matter)"


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    choices: tuple[str, ...] | None = None  # None: not a choice field


def expected_fields(sequential_tags: Iterable[str]) -> list[FieldSpec]:
    """The custom fields Sell must have, from the vocabulary's field table."""
    tags = list(sequential_tags)
    return [FieldSpec(f.name, f.sell_type, f.choices_for(tags)) for f in CUSTOM_FIELDS]


TYPE_WORDS = {
    "string": "string",
    "text": "multi-line text",
    "date": "date",
    "datetime": "date and time",
    "list": "dropdown",
    "multi_select_list": "multi select",
    "number": "number",
    "bool": "checkbox",
    "email": "email",
    "phone": "phone",
    "url": "URL",
    "address": "address",
}


def type_word(kind: str) -> str:
    return TYPE_WORDS.get(kind, kind or "untyped")


def _a(word: str) -> str:
    return f"an {word}" if word[:1].lower() in "aeiou" else f"a {word}"


_WS = re.compile(r"\s+")


def loose(name: str) -> str:
    """What a name looks like when case and spaces are ignored."""
    return _WS.sub("", name).casefold()


def _quoted_list(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "(none)"


def check_custom_fields(
    lead_defs: Sequence[CustomFieldDef],
    contact_defs: Sequence[CustomFieldDef],
    sequential_tags: Iterable[str],
) -> list[str]:
    """Every problem with the custom-field setup, in plain words; [] when all is right."""
    specs = expected_fields(sequential_tags)
    problems: list[str] = []
    for side, defs in (("Leads", lead_defs), ("Contacts", contact_defs)):
        problems.extend(_check_side(side, list(defs), specs))
    return problems


def _check_side(side: str, defs: list[CustomFieldDef], specs: list[FieldSpec]) -> list[str]:
    out: list[str] = []
    for spec in specs:
        exact = [d for d in defs if d.name == spec.name]
        if len(exact) > 1:
            out.append(f'{side}: {len(exact)} fields are named "{spec.name}"; keep only one')
        if exact:
            out.extend(_check_field(side, exact[0], spec))
            continue
        near = [d for d in defs if loose(d.name) == loose(spec.name)]
        if near:
            for d in near:
                out.append(
                    f'{side}: field "{d.name}" not found — did you mean "{spec.name}"? {CASE_HINT}'
                )
                out.extend(_check_field(side, d, spec))
            continue
        how = f"create it as {_a(type_word(spec.type))} field"
        if spec.choices:
            how += f" with the choices {_quoted_list(spec.choices)}"
        out.append(f'{side}: field "{spec.name}" not found — {how}')
    return out


def _check_field(side: str, d: CustomFieldDef, spec: FieldSpec) -> list[str]:
    out: list[str] = []
    if d.type != spec.type:
        out.append(
            f'{side}: "{d.name}" is {_a(type_word(d.type))} field; '
            f"it must be {_a(type_word(spec.type))}"
        )
    if side == "Contacts" and d.for_contact is False:
        out.append(f'{side}: "{d.name}" applies to companies only; it must also apply to people')
    if spec.choices is None:
        return out
    if spec.name == "Promo" and not spec.choices:
        return out  # no sequential tags yet: nothing to compare with
    if d.type not in ("list", "multi_select_list") and not d.choices:
        return out  # the type problem says it all
    have = list(d.choices)
    matched_loosely: set[str] = set()
    for want in spec.choices:
        if want in have:
            continue
        similar = [c for c in have if loose(c) == loose(want) and c not in spec.choices]
        if similar:
            matched_loosely.update(similar)
            alts = " or ".join(f'"{c}"' for c in similar)
            out.append(
                f'{side}: "{d.name}" lacks the choice "{want}" — did you mean {alts}? {CASE_HINT}'
            )
        else:
            out.append(f'{side}: "{d.name}" lacks the choice "{want}"')
    seen: set[str] = set()
    for c in have:
        if c in seen:
            out.append(f'{side}: "{d.name}" has the choice "{c}" twice')
            continue
        seen.add(c)
        if c in spec.choices or c in matched_loosely:
            continue
        if spec.name == "Promo":
            out.append(
                f'{side}: "{d.name}" has the extra choice "{c}", which is not one of the '
                "channel's default sequential tags"
            )
        else:
            out.append(
                f'{side}: "{d.name}" has the extra choice "{c}"; its choices must be exactly '
                f"{_quoted_list(spec.choices)}"
            )
    return out


# ----------------------------------------------------------------------------- I/O shell


@dataclass
class Verification:
    ok: bool
    problems: list[str] = field(default_factory=list)
    account_user: dict[str, Any] | None = None
    needs_new_token: bool = False
    unreachable: bool = False  # could not check (network, Sell down): try again later


TOKEN_REJECTED = "The API token was rejected by Zendesk Sell (401) — paste a new token."


def _user_summary(user: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "name", "email", "role", "status")
    return {k: user.get(k) for k in keys if k in user}


def _failure(exc: E.SellError, what: str) -> Verification:
    if isinstance(exc, E.AuthenticationError):
        return Verification(False, [TOKEN_REJECTED], needs_new_token=True)
    if isinstance(exc, E.ForbiddenError):
        return Verification(
            False,
            [
                f"Zendesk Sell refused to let this API token {what} (403) — create the token "
                "as a user who may read leads, contacts and their custom fields."
            ],
        )
    if isinstance(exc, E.NetworkError | E.ServerError | E.RateLimitedError):
        detail = {
            E.NetworkError: "it could not be reached",
            E.ServerError: f"it answered with a server error ({exc.status})",
            E.RateLimitedError: "it kept answering 429 (too many requests)",
        }[type(exc)]
        return Verification(
            False,
            [
                f"Could not {what} in Zendesk Sell: {detail}. "
                "Nothing is wrong with the setup yet — verify again later."
            ],
            unreachable=True,
        )
    return Verification(False, [f"Zendesk Sell answered unexpectedly when asked to {what}: {exc}"])


async def verify_connection(
    client: SellClient, sequential_tags: Iterable[str], *, deadline_s: float = 120.0
) -> Verification:
    """Check the token and the custom fields. Never raises for expected failures."""
    tags = list(sequential_tags)
    with trio.move_on_after(deadline_s) as scope:
        try:
            user = await client.users_self()
        except E.SellError as exc:
            return _failure(exc, "check the API token")
        account_user = _user_summary(user)
        try:
            lead_defs = await client.custom_fields("lead")
            contact_defs = await client.custom_fields("contact")
        except E.SellError as exc:
            result = _failure(exc, "read the custom fields of Leads and Contacts")
            result.account_user = account_user
            return result
        problems = check_custom_fields(lead_defs, contact_defs, tags)
        return Verification(not problems, problems, account_user=account_user)
    assert scope.cancelled_caught
    return Verification(
        False,
        [f"Zendesk Sell did not answer within {deadline_s:g} s — verify again later."],
        unreachable=True,
    )
