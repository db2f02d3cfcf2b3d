"""check_custom_fields: every broken setup lists all of its problems at once, in plain words."""

from __future__ import annotations

import socket
from dataclasses import asdict

import pytest

from kuloo_daemon.crm import errors as E
from kuloo_daemon.crm.budget import RateBudget
from kuloo_daemon.crm.client import SellClient
from kuloo_daemon.crm.verify import (
    TOKEN_REJECTED,
    _a,
    _failure,
    _quoted_list,
    _user_summary,
    check_custom_fields,
    type_word,
    verify_connection,
)
from kuloo_daemon.secrets import Secret

from .helpers import TAGS, defs, edited, field_dicts


def check(lead_dicts=None, contact_dicts=None, tags=TAGS):
    return check_custom_fields(defs(lead_dicts), defs(contact_dicts, "contact"), tags)


def test_correct_setup_has_no_problem():
    assert check() == []
    # tag order and duplicates in the channel's list do not matter
    assert check(tags=["upsell", "welcome", "onboarding", "welcome"]) == []


def test_wrong_case_on_contacts_suggests_the_name():
    problems = check(contact_dicts=edited("Promo", name="promo"))
    assert problems == [
        'Contacts: field "promo" not found — did you mean "Promo"? (case and spaces matter)'
    ]


def test_extra_space_is_caught():
    problems = check(lead_dicts=edited("Last active", name="Last  active"))
    assert problems == [
        'Leads: field "Last  active" not found — did you mean "Last active"? (case and spaces matter)'
    ]
    problems = check(lead_dicts=edited("KulooId", name="KulooId "))
    assert problems == [
        'Leads: field "KulooId " not found — did you mean "KulooId"? (case and spaces matter)'
    ]


def test_missing_field_says_how_to_create_it():
    problems = check(lead_dicts=edited("Subscription", remove=True))
    assert problems == [
        'Leads: field "Subscription" not found — create it as a dropdown field with the '
        "choices daily, weekly, monthly, unsubscribed"
    ]


def test_wrong_type():
    problems = check(lead_dicts=edited("Last active", type="string"))
    assert problems == ['Leads: "Last active" is a string field; it must be a date']
    problems = check(lead_dicts=edited("Promo", type="list"))
    assert problems == ['Leads: "Promo" is a dropdown field; it must be a multi select']


def test_missing_choice():
    d = edited(
        "Subscription",
        choices=[
            {"id": 1, "name": "daily"},
            {"id": 2, "name": "weekly"},
            {"id": 4, "name": "unsubscribed"},
        ],
    )
    assert check(lead_dicts=d) == ['Leads: "Subscription" lacks the choice "monthly"']


def test_choice_in_wrong_case_is_suggested_not_called_extra():
    d = edited("Source", choices=[{"name": "Admin"}, {"name": "signup"}, {"name": "sync"}])
    assert check(lead_dicts=d) == [
        'Leads: "Source" lacks the choice "admin" — did you mean "Admin"? (case and spaces matter)'
    ]


def test_extra_choice_in_promo():
    d = edited("Promo", choices=[{"name": t} for t in [*TAGS, "spring"]])
    assert check(lead_dicts=d) == [
        'Leads: "Promo" has the extra choice "spring", which is not one of the channel\'s '
        "default sequential tags"
    ]


def test_contact_side_only_lists_every_problem():
    contact = [d for d in field_dicts() if d["name"] not in ("Sync error",)]
    contact = [
        {**d, "name": "subscription"}
        if d["name"] == "Subscription"
        else {**d, "type": "text"}
        if d["name"] == "KulooId"
        else {**d, "choices": [{"name": "welcome"}]}
        if d["name"] == "Promo"
        else d
        for d in contact
    ]
    problems = check(contact_dicts=contact)
    assert problems == [
        'Contacts: "Promo" lacks the choice "onboarding"',
        'Contacts: "Promo" lacks the choice "upsell"',
        'Contacts: field "subscription" not found — did you mean "Subscription"? (case and spaces matter)',
        'Contacts: "KulooId" is a multi-line text field; it must be a string',
        'Contacts: field "Sync error" not found — create it as a string field',
    ]
    assert all(p.startswith("Contacts:") for p in problems)


def test_many_problems_on_both_sides_at_once():
    lead = edited("Promo", name="PROMO", type="list")
    contact = edited("Source", choices=[{"name": "admin"}, {"name": "web"}])
    problems = check(lead_dicts=lead, contact_dicts=contact, tags=["welcome"])
    assert problems == [
        'Leads: field "PROMO" not found — did you mean "Promo"? (case and spaces matter)',
        'Leads: "PROMO" is a dropdown field; it must be a multi select',
        'Leads: "PROMO" has the extra choice "onboarding", which is not one of the channel\'s default sequential tags',
        'Leads: "PROMO" has the extra choice "upsell", which is not one of the channel\'s default sequential tags',
        'Contacts: "Promo" has the extra choice "onboarding", which is not one of the channel\'s default sequential tags',
        'Contacts: "Promo" has the extra choice "upsell", which is not one of the channel\'s default sequential tags',
        'Contacts: "Source" lacks the choice "signup"',
        'Contacts: "Source" lacks the choice "sync"',
        'Contacts: "Source" has the extra choice "web"; its choices must be exactly admin, signup, sync',
    ]


def test_nothing_defined_lists_all_twelve():
    problems = check_custom_fields([], [], TAGS)
    assert len(problems) == 12
    assert problems[0] == (
        'Leads: field "Promo" not found — create it as a multi select field with the choices '
        "welcome, onboarding, upsell"
    )


def test_aliases_options_and_for_organisation_and_person_scope():
    contact = [
        {**d, "options": d.pop("choices")} if d["name"] == "Promo" else d for d in field_dicts()
    ]
    contact = [
        {**d, "for_organisation": True, "for_contact": False} if d["name"] == "KulooId" else d
        for d in contact
    ]
    problems = check(contact_dicts=contact)
    assert problems == [
        'Contacts: "KulooId" applies to companies only; it must also apply to people'
    ]


def test_duplicates_and_no_tags_yet():
    lead = [*field_dicts(), {"id": 9, "name": "Source", "type": "list", "choices": []}]
    assert check(lead_dicts=lead) == ['Leads: 2 fields are named "Source"; keep only one']
    # no sequential tags yet: Promo's choices are not compared
    assert check(tags=[]) == []


# ----------------------------------------------------------------------------- at the edges
# (formerly test_crm_verify_bounds.py)
# verify.py beyond the happy path: each failure of Sell becomes the right verdict and
# text, choice fields without choices, duplicate and look-alike choices, "a"/"an".
#
# Written to kill the mutants `make mutate` found surviving in crm/verify.py; each test
# names the planted bugs it was checked against.


def choices(*names):
    return [{"id": i + 1, "name": n} for i, n in enumerate(names)]


def test_a_or_an():
    """Planted bugs: ``upper()`` / ``[:2]`` / another vowel set (never "an")."""
    assert _a("email") == "an email"
    assert _a("Address") == "an Address"
    assert _a("dropdown") == "a dropdown"
    assert _a("untyped") == "an untyped"


def test_type_words_and_lists():
    """Planted bugs: an unknown Sell type shown as None or "untyped", an empty type not
    shown as "untyped", an empty list of choices shown as nothing."""
    assert type_word("list") == "dropdown"
    assert type_word("geolocation") == "geolocation"
    assert type_word("") == "untyped"
    assert _quoted_list([]) == "(none)"
    assert _quoted_list(["a", "b"]) == "a, b"


def test_a_choice_field_typed_as_text_reports_only_its_type():
    """Planted bugs: ``d.type in (...)`` / ``and d.choices`` / ``or`` in the early return
    (a text field would also get one "lacks the choice" line per choice)."""
    problems = check(lead_dicts=edited("Subscription", type="email", choices=None))
    assert problems == ['Leads: "Subscription" is an email field; it must be a dropdown']


@pytest.mark.parametrize(
    ("name", "kind"), [("Subscription", "list"), ("Promo", "multi_select_list")]
)
def test_a_list_without_choices_lacks_every_choice(name, kind):
    """Planted bugs: the list types misspelt in the early return, ``or not d.choices``
    (a dropdown with no choices at all would look fine)."""
    problems = check(lead_dicts=edited(name, choices=[]))
    wanted = ["daily", "weekly", "monthly", "unsubscribed"] if name == "Subscription" else TAGS
    assert problems == [f'Leads: "{name}" lacks the choice "{w}"' for w in wanted]


def test_duplicate_choices_are_reported_and_the_rest_still_checked():
    """Planted bugs: ``break`` after a duplicate (the extra choice after it goes unseen),
    the duplicate not remembered (``seen.add(None)``)."""
    problems = check(
        lead_dicts=edited(
            "Subscription",
            choices=choices("daily", "daily", "weekly", "monthly", "unsubscribed", "yearly"),
        )
    )
    assert problems == [
        'Leads: "Subscription" has the choice "daily" twice',
        'Leads: "Subscription" has the extra choice "yearly"; its choices must be exactly '
        "daily, weekly, monthly, unsubscribed",
    ]


def test_several_look_alike_choices_are_all_offered():
    """Planted bug: another joiner than " or " between the suggestions."""
    problems = check(
        lead_dicts=edited(
            "Subscription", choices=choices("Daily", "DAILY", "weekly", "monthly", "unsubscribed")
        )
    )
    assert problems == [
        'Leads: "Subscription" lacks the choice "daily" — did you mean "Daily" or "DAILY"? '
        "(case and spaces matter)"
    ]


@pytest.mark.parametrize(
    ("exc", "needs_new_token", "unreachable", "text"),
    [
        (E.AuthenticationError("x", status=401), True, False, TOKEN_REJECTED),
        (
            E.ForbiddenError("x", status=403),
            False,
            False,
            "Zendesk Sell refused to let this API token read the fields (403) — create the token "
            "as a user who may read leads, contacts and their custom fields.",
        ),
        (
            E.NetworkError("x"),
            False,
            True,
            "Could not read the fields in Zendesk Sell: it could not be reached. "
            "Nothing is wrong with the setup yet — verify again later.",
        ),
        (
            E.ServerError("x", status=502),
            False,
            True,
            "Could not read the fields in Zendesk Sell: it answered with a server error (502). "
            "Nothing is wrong with the setup yet — verify again later.",
        ),
        (
            E.RateLimitedError("x", status=429),
            False,
            True,
            "Could not read the fields in Zendesk Sell: it kept answering 429 (too many requests). "
            "Nothing is wrong with the setup yet — verify again later.",
        ),
        (
            E.NotFoundError("gone", status=404),
            False,
            False,
            "Zendesk Sell answered unexpectedly when asked to read the fields: gone [HTTP 404]",
        ),
    ],
)
def test_each_failure_becomes_its_verdict(exc, needs_new_token, unreachable, text):
    """Planted bugs: ``ok`` True/None on a failure, the flags swapped or None, the
    problem text dropped or the wrong detail for the error class."""
    v = _failure(exc, "read the fields")
    assert asdict(v) == {
        "ok": False,
        "problems": [text],
        "account_user": None,
        "needs_new_token": needs_new_token,
        "unreachable": unreachable,
    }


def test_user_summary_keeps_only_who_the_token_belongs_to():
    """Planted bugs: a key dropped or renamed; other attributes passed on."""
    user = {
        "id": 7,
        "name": "Ann",
        "email": "a@x.test",
        "role": "admin",
        "status": "active",
        "phone": "555",
        "timezone": "UTC",
    }
    assert _user_summary(user) == {
        "id": 7,
        "name": "Ann",
        "email": "a@x.test",
        "role": "admin",
        "status": "active",
    }
    assert _user_summary({"id": 7}) == {"id": 7}


def _client(base_url: str, token: str) -> SellClient:
    return SellClient(
        base_url,
        Secret(token),
        budget=RateBudget(500.0),
        max_attempts=1,
        backoff_base=0.01,
        backoff_cap=0.05,
        timeout=2.0,
    )


async def test_sell_down_while_reading_fields_keeps_the_account_user(sellsim):
    """Planted bug: ``result.account_user = account_user`` deleted; the field read's
    failure reported as a token failure."""
    sellsim.set_faults([{"kind": "500", "path": "/v2/lead/custom_fields", "count": 1}])
    async with _client(sellsim.base_url, sellsim.token) as sell:
        v = await verify_connection(sell, TAGS)
    assert v.ok is False and v.unreachable is True and v.needs_new_token is False
    assert v.account_user["email"] == "admin@kuloo-demo.test"
    assert v.problems == [
        "Could not read the custom fields of Leads and Contacts in Zendesk Sell: it answered "
        "with a server error (500). Nothing is wrong with the setup yet — verify again later."
    ]


async def test_sell_unreachable_when_checking_the_token(short_tmp):
    """Planted bug: the token check's failure not caught (verify raises instead)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    async with _client(f"http://127.0.0.1:{port}", "t" * 40) as sell:
        v = await verify_connection(sell, TAGS)
    assert v.ok is False and v.unreachable is True and v.account_user is None
    assert v.problems == [
        "Could not check the API token in Zendesk Sell: it could not be reached. "
        "Nothing is wrong with the setup yet — verify again later."
    ]


async def test_sell_too_slow_hits_the_deadline(sellsim):
    """Planted bugs: the deadline message or its ``unreachable`` flag changed."""
    sellsim.set_faults([{"kind": "slow", "delay": 1.5, "count": 1}])
    async with _client(sellsim.base_url, sellsim.token) as sell:
        v = await verify_connection(sell, TAGS, deadline_s=0.2)
    assert asdict(v) == {
        "ok": False,
        "account_user": None,
        "needs_new_token": False,
        "unreachable": True,
        "problems": ["Zendesk Sell did not answer within 0.2 s — verify again later."],
    }


async def test_a_broken_setup_is_not_ok_and_names_the_user(sellsim):
    """Planted bug: ``ok`` computed as ``bool(problems)``."""
    async with _client(sellsim.base_url, sellsim.token) as sell:
        v = await verify_connection(sell, ["welcome", "not-a-choice-yet"])
    assert v.ok is False and v.unreachable is False
    assert v.account_user["email"] == "admin@kuloo-demo.test"
    assert any('lacks the choice "not-a-choice-yet"' in p for p in v.problems)
