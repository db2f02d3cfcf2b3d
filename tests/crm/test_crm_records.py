"""The pure comparisons of crm/records.py: what Sell sends back against what was asked for."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from kuloo_daemon.crm.records import (
    Lead,
    choice_name,
    matches_filters,
    parse_custom_date,
    parse_custom_datetime,
    same_custom_value,
)
from kuloo_daemon.vocabulary import email_key


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2016-04-27", date(2016, 4, 27)),
        ("4/27/2016", date(2016, 4, 27)),
        ("04/07/2016", date(2016, 4, 7)),
        ("2016-04-27T00:00:00Z", date(2016, 4, 27)),
        ("2016-04-27T23:30:00+00:00", date(2016, 4, 27)),
        ("27/4/2016", None),
        ("2016-02-30", None),
        ("", None),
        ("soon", None),
        (None, None),
        (20160427, None),
    ],
)
def test_parse_custom_date_reads_every_form_sell_may_send(text, expected):
    assert parse_custom_date(text) == expected


def test_same_custom_value_compares_by_type():
    assert same_custom_value("date", "2016-04-07", "4/7/2016")
    assert same_custom_value("date", "2016-04-07", "2016-04-07T00:00:00Z")
    assert not same_custom_value("date", "2016-04-07", "4/8/2016")
    assert "2016-04-07" != "4/7/2016"  # why a string comparison would see a change
    assert same_custom_value("number", 12, "12") and same_custom_value("number", "12.50", "12.5")
    assert not same_custom_value("number", "12", "12.01")
    assert same_custom_value("datetime", "2024-01-01T10:00:00Z", "2024-01-01T10:00:00+00:00")
    assert same_custom_value("multi_select_list", ["a", "b"], ["b", "a"])
    assert not same_custom_value("multi_select_list", ["a"], ["a", "b"])
    assert same_custom_value("list", None, "") and same_custom_value("multi_select_list", [], None)
    assert not same_custom_value("list", "Weekly", "weekly")  # choices are exact
    assert same_custom_value("boolean", True, True) and not same_custom_value("bool", True, False)


@pytest.mark.parametrize(
    ("asked", "answered", "same"),
    [
        ("  Mixed.Case@Example.COM ", "mixed.case@example.com", True),
        ("Straße@Example.com", "straße@example.com", True),
        (
            "straße@example.com",
            "STRASSE@example.com",
            False,
        ),  # "ß".casefold() == "ss"; lower() keeps ß
        ("", None, True),
    ],
)
def test_the_email_recheck_compares_by_the_one_email_key(asked, answered, same):
    """The client's re-check of an ``?email=`` answer and the sync's key are one function:
    an answer is the asked address exactly when their ``email_key`` is equal. Planted bugs:
    casefold() in the re-check (or in the key), the trim dropped."""
    lead = Lead.from_data({"id": 5, "email": answered})
    assert matches_filters(lead, {"email": asked}) is same
    assert (email_key(asked) == email_key(answered)) is same


def test_matches_filters_rechecks_what_sell_may_apply_loosely():
    lead = Lead.from_data(
        {
            "id": 5,
            "email": "Ann@X.test",
            "custom_fields": {"KulooId": "k1", "Promo": ["welcome", "upsell"], "Score": "12"},
        }
    )
    assert matches_filters(lead, {"email": "ann@x.test", "ids": [5, 6]})
    assert not matches_filters(lead, {"email": "bob@x.test"})
    assert not matches_filters(lead, {"ids": "6,7"})
    assert matches_filters(lead, {"custom_fields": {"KulooId": "k1", "Promo": "upsell"}})
    assert not matches_filters(lead, {"custom_fields": {"KulooId": "k2"}})
    assert not matches_filters(lead, {"custom_fields": {"Promo": "onboarding"}})
    assert not matches_filters(lead, {"custom_fields": {"Sync error": "x"}})
    assert matches_filters(lead, {"custom_fields": {"Score": 12}})
    assert matches_filters(lead, {"custom_fields": {"Score": "12.0"}}, {"Score": "number"})
    assert matches_filters(lead, {"first_name": "trusted: not re-checked"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2016-04-28T06:00:00Z", datetime(2016, 4, 28, 6, 0, tzinfo=UTC)),
        ("2016-04-28T08:00:00+02:00", datetime(2016, 4, 28, 6, 0, tzinfo=UTC)),
        ("4/28/2016 6:00", datetime(2016, 4, 28, 6, 0, tzinfo=UTC)),  # the docs' value table
        ("04/28/2016 16:05", datetime(2016, 4, 28, 16, 5, tzinfo=UTC)),
        ("4/28/2016 6:00:30", datetime(2016, 4, 28, 6, 0, 30, tzinfo=UTC)),
        ("28/4/2016 6:00", None),
        ("4/28/2016 25:00", None),
        ("4/28/2016", None),
        ("soon", None),
        ("", None),
        (None, None),
        (1461823200, None),
    ],
)
def test_parse_custom_datetime_reads_both_forms_sell_may_send(text, expected):
    """``custom_datetime_read_format``: as written, or ``4/28/2016 6:00``. No mapped field is
    a datetime; the comparison still reads both. Planted bugs: month and day swapped; the
    minutes dropped; an invalid hour raising instead of None."""
    assert parse_custom_datetime(text) == expected


def test_datetimes_compare_as_datetimes_however_spelled():
    assert same_custom_value("datetime", "2016-04-28T06:00:00Z", "4/28/2016 6:00")
    assert not same_custom_value("datetime", "2016-04-28T06:00:00Z", "4/28/2016 7:00")


def test_choices_read_back_as_objects_are_their_names():
    """``custom_list_read_format=object`` / ``custom_multiselect_read_format=objects``: a
    dropdown is its name, a multi-select a set of names, whichever form Sell reads back.
    Planted bugs: the object compared whole (never equal to the name written); ``id`` taken
    for the name; a multi-select's objects left as objects."""
    assert choice_name({"id": 3, "name": "weekly"}) == "weekly"
    assert choice_name("weekly") == "weekly"
    assert same_custom_value("list", "weekly", {"id": 3, "name": "weekly"})
    assert not same_custom_value("list", "daily", {"id": 3, "name": "weekly"})
    assert same_custom_value(
        "multi_select_list", ["a", "b"], [{"id": 2, "name": "b"}, {"id": 1, "name": "a"}]
    )
    assert not same_custom_value("multi_select_list", ["a"], [{"id": 2, "name": "b"}])
    assert same_custom_value("multi_select_list", [], None)
    lead = Lead.from_data(
        {
            "id": 5,
            "custom_fields": {
                "Promo": [{"id": 1, "name": "welcome"}],
                "Subscription": {"id": 3, "name": "weekly"},
            },
        }
    )
    assert matches_filters(lead, {"custom_fields": {"Promo": "welcome", "Subscription": "weekly"}})
    assert not matches_filters(lead, {"custom_fields": {"Promo": "upsell"}})
    assert not matches_filters(lead, {"custom_fields": {"Subscription": "daily"}})
