"""rules/importing.py: what a new Sell record becomes, and the checks a Sell change passes.

Table tests of the pure decisions the sync store applies (``store/sync/batch.py``): each
row a record (email, canonical values) and a channel (tags, plan, links made), and the
user it becomes or the Sync error (code and text) it gets instead.
"""

from __future__ import annotations

import pytest

from kuloo_daemon.rules import texts
from kuloo_daemon.rules.importing import (
    DEFAULT_FREQUENCY,
    IMPORTED,
    Refusal,
    new_user,
    over_cap,
    sell_changes,
)
from kuloo_daemon.vocabulary import Plan

TAGS = ("welcome", "onboarding")
BASE = {
    "email": "Ann@Example.com",
    "source": "sync",
    "add_to_crm": False,
    "promo_tags": [],
    "first_name": "",
    "last_name": "",
}


def user(**changes):
    return {**BASE, **changes}


def value_error(words: str) -> tuple[str, str]:
    return (texts.E_VALUE, words)


@pytest.mark.parametrize(
    ("email", "values", "expected"),
    [
        # the address as spelled in Sell, trimmed; blank Subscription: digests disabled
        (" Ann@Example.com ", {}, user(frequency="disabled", unsubscribed=False)),
        ("Ann@Example.com", {"Subscription": "daily"}, user(frequency="daily", unsubscribed=False)),
        # only "unsubscribed": the default frequency waits for the day they subscribe again
        (
            "Ann@Example.com",
            {"Subscription": "unsubscribed"},
            user(frequency="weekly", unsubscribed=True),
        ),
        (
            "Ann@Example.com",
            {
                "Promo": ["onboarding", "welcome"],
                "first_name": "Ann",
                "last_name": "Lee",
                "Subscription": "monthly",
            },
            user(
                promo_tags=["onboarding", "welcome"],
                first_name="Ann",
                last_name="Lee",
                frequency="monthly",
                unsubscribed=False,
            ),
        ),
        # what a new user does NOT take from Sell: its KulooId, Source, Sync error, Last active
        (
            "Ann@Example.com",
            {
                "KulooId": "k-1",
                "Source": "admin",
                "Sync error": "x",
                "Last active": "2024-01-02",
                "Subscription": "weekly",
            },
            user(frequency="weekly", unsubscribed=False),
        ),
        # refused: the address, a value Kuloo does not know, a tag that is not the channel's
        ("Ann@", {}, value_error("is not an email address")),
        ("", {}, value_error("an email address is required")),
        (None, {}, value_error("an email address is required")),
        ("Ann@Example.com", {"Subscription": "hourly"}, value_error("'hourly'")),
        ("Ann@Example.com", {"Subscription": "disabled"}, value_error("blank Subscription")),
        (
            "Ann@Example.com",
            {"Promo": ["welcome", "vip"]},
            value_error("Promo value 'vip' is not one Kuloo knows; allowed: welcome, onboarding"),
        ),
        # the address is checked first, then the values, then the tags
        (
            "nope",
            {"Subscription": "hourly", "Promo": ["vip"]},
            value_error("is not an email address"),
        ),
        ("Ann@Example.com", {"Subscription": "hourly", "Promo": ["vip"]}, value_error("'hourly'")),
    ],
)
def test_what_a_new_sell_record_becomes(email, values, expected):
    """Planted bugs: the address not checked, the tag check dropped (or against every tag),
    the default frequency changed or applied over Sell's, the checks reordered."""
    got = new_user(email, values, sequential_tags=TAGS, plan=Plan.PRO, linked=0)
    if isinstance(expected, tuple):
        assert isinstance(got, Refusal), got
        assert (
            got.code == expected[0]
            and expected[1] in got.text
            and got.text.startswith("Not synced: ")
        )
    else:
        assert got == expected


@pytest.mark.parametrize(
    ("plan", "linked", "room"),
    [
        (Plan.FREE, 0, True),
        (Plan.FREE, 9, True),
        (Plan.FREE, 10, False),
        (Plan.FREE, 11, False),
        (Plan.STARTER, 499, True),
        (Plan.STARTER, 500, False),
        ("pro", 4_999, True),
        ("pro", 5_000, False),
        (Plan.ENTERPRISE, 10**7, True),
    ],
)
def test_a_new_link_needs_room_under_the_plans_cap(plan, linked, room):
    """Planted bugs: the cap compared with ``<=`` (one link too many), the cap of another plan."""
    refused = over_cap(plan, linked)
    assert (refused is None) is room
    got = new_user("ann@example.com", {}, sequential_tags=TAGS, plan=plan, linked=linked)
    if room:
        assert refused is None and not isinstance(got, Refusal)
    else:
        assert refused == got == Refusal(texts.E_CAP, texts.plan_cap(Plan(plan)))


def test_the_cap_is_checked_before_the_record():
    """A record past the cap gets the cap's error, whatever else is wrong with it."""
    got = new_user("nope", {"Promo": ["vip"]}, sequential_tags=TAGS, plan=Plan.FREE, linked=10)
    assert got == Refusal(texts.E_CAP, texts.plan_cap(Plan.FREE))


def test_the_imported_fields_and_the_default_frequency():
    assert IMPORTED == ("Promo", "Subscription", "first_name", "last_name")
    assert DEFAULT_FREQUENCY == "weekly"


@pytest.mark.parametrize(
    ("to_kuloo", "email", "expected"),
    [
        ({"first_name": "Ann"}, "ann@example.com", {"first_name": "Ann"}),
        ({"Promo": ["welcome"]}, None, {"promo_tags": ["welcome"]}),
        (
            {"Subscription": "unsubscribed"},
            None,
            {"unsubscribed": True},
        ),  # no default frequency here
        # a changed address: the one spelled in Sell (trimmed, its case kept), checked
        (
            {"email": "ann.lee@example.com"},
            " Ann.Lee@Example.com ",
            {"email": "Ann.Lee@Example.com"},
        ),
        ({"email": "ann@"}, "Ann@", value_error("is not an email address")),
        ({"email": None}, None, value_error("an email address is required")),  # cleared in Sell
        ({"Promo": ["vip"]}, None, value_error("Promo value 'vip'")),
        ({"Subscription": "hourly"}, None, value_error("'hourly'")),
        # the values and tags are checked before the address
        ({"Subscription": "hourly", "email": "ann@"}, "ann@", value_error("'hourly'")),
        ({"Promo": ["vip"], "email": "ann@"}, "ann@", value_error("'vip'")),
    ],
)
def test_a_linked_users_changes_from_sell_pass_the_same_checks(to_kuloo, email, expected):
    """Planted bugs: the address taken lower-cased from the merge, not checked, the tag check
    dropped."""
    got = sell_changes(to_kuloo, email, sequential_tags=TAGS)
    if isinstance(expected, tuple):
        assert isinstance(got, Refusal) and got.code == expected[0] and expected[1] in got.text, got
    else:
        assert got == expected
