"""Canonical values at their edges: blanks, Promo lists, emails, dates, Sell records as
``crm`` reads them, and the partial-write body (issue 14: mutation survivors).

Each test names the bugs planted against it, each of which made it fail.
"""

from __future__ import annotations

from datetime import UTC

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kuloo_daemon.crm.records import Contact, Lead
from kuloo_daemon.rules.values import (
    FIELD_NAMES,
    canonical,
    kuloo_attrs,
    kuloo_values,
    sell_payload,
    sell_raw,
    sell_values,
)
from kuloo_daemon.vocabulary import email_key, to_sell


@pytest.mark.parametrize("name", ["first_name", "Promo", "Last active", "email", "Subscription"])
@pytest.mark.parametrize("blank", [None, "", [], ()])
def test_every_blank_is_none_for_every_field(name, blank):
    """Planted bugs: ``and`` for ``or`` between the blank tests, the empty-string literal
    changed (a blank Promo became ``[""]``, a blank date ``""``, an empty tuple ``"()"``)."""
    assert canonical(name, blank) is None


def test_promo_is_a_sorted_set_without_blanks():
    """Planted bugs: ``None`` kept as ``"None"`` (``or`` for ``and``), ``""`` kept."""
    assert canonical("Promo", ["b", None, "", "a", "b"]) == ["a", "b"]
    assert canonical("Promo", [None, ""]) is None
    assert canonical("Promo", "solo") == ["solo"]


@pytest.mark.parametrize(
    "value, expected",
    [
        (" Bob@Example.COM ", "bob@example.com"),
        ("   ", None),
        (42, None),
        (None, None),
        ("STRASSE@Example.com", "strasse@example.com"),
        ("Straße@Example.com", "straße@example.com"),
    ],
)
def test_emails_are_trimmed_and_lower_cased(value, expected):
    """The merge's email is the one key (``vocabulary.email_key``): lower(), never casefold().
    Planted bugs: upper-cased, casefold(), the type test inverted, blank kept as ``""``, the
    value not passed on."""
    assert (email_key(value) or None) == expected
    assert canonical("email", value) == expected


def test_dates_and_other_values():
    """Planted bugs: an unreadable date or a non-string value replaced by ``"None"``."""
    assert canonical("Last active", "4/27/2016") == "2016-04-27"
    assert canonical("Last active", "soon") == "soon"  # differs from any date: put back
    assert canonical("first_name", 5) == "5"
    assert canonical("first_name", "  Ann ") == "Ann"


def test_choices_read_back_as_objects_are_their_names():
    """Sell may read a dropdown back as ``{"id": N, "name": "…"}`` and a multi-select as a
    list of those (sellsim's ``custom_list_read_format``/``custom_multiselect_read_format``):
    the value is the name either way, so the merge sees no change. Planted bugs: the object
    kept whole (a change every run: an endless echo); the id taken; a lone object in Promo."""
    assert canonical("Subscription", {"id": 9, "name": "weekly"}) == "weekly"
    assert canonical("Source", {"id": 4, "name": "signup"}) == "signup"
    assert canonical("Promo", [{"id": 2, "name": "upsell"}, {"id": 1, "name": "welcome"}]) == [
        "upsell",
        "welcome",
    ]
    assert canonical("Promo", [{"id": 1, "name": "b"}, "a", {"id": 1, "name": None}]) == ["a", "b"]
    assert canonical("Promo", {"id": 1, "name": "solo"}) == ["solo"]
    assert canonical("Subscription", {"id": 9, "name": None}) is None
    record = {
        "id": 1,
        "custom_fields": {
            "Subscription": {"id": 9, "name": "unsubscribed"},
            "Promo": [{"id": 1, "name": "welcome"}],
        },
    }
    values = sell_values(Lead.from_data(record))
    assert (values["Subscription"], values["Promo"]) == ("unsubscribed", ["welcome"])
    assert kuloo_attrs({"Subscription": values["Subscription"], "Promo": values["Promo"]}) == {
        "unsubscribed": True,
        "promo_tags": ["welcome"],
    }


def test_kuloo_attrs_normalise_the_email():
    """Planted bugs: the email test misspelt or inverted (no normalising, or a KeyError
    for a change without an email), the result stored under another key, a blank email
    becoming ``"XXXX"``."""
    assert kuloo_attrs({"email": " Bob@X.test "}) == {"email": "bob@x.test"}
    assert kuloo_attrs({"email": None}) == {"email": ""}
    assert kuloo_attrs({"first_name": "Ann"}) == {"first_name": "Ann"}


def test_sell_records_as_crm_reads_them():
    """Planted bugs: a ``Lead``/``Contact`` read as a mapping (``record.get``) or with the
    wrong attribute name; custom fields taken from the mapping branch."""
    data = {
        "id": 7,
        "first_name": "Ann",
        "last_name": "Lee",
        "email": "ANN@x.test",
        "custom_fields": {"Promo": ["b", "a"], "Subscription": "weekly", "KulooId": "k-7"},
    }
    for record in (Lead.from_data(data), Contact.from_data(data), data):
        assert sell_raw(record, "first_name") == "Ann"
        assert sell_raw(record, "Promo") == ["b", "a"]
        values = sell_values(record)
        assert (values["email"], values["Promo"], values["KulooId"], values["Sync error"]) == (
            "ann@x.test",
            ["a", "b"],
            "k-7",
            None,
        )


def test_payload_keeps_promo_s_own_order_and_clears_a_blank_one():
    """Planted bugs: a blank Promo written as ``[]`` instead of cleared (``or True``);
    Promo's own tags dropped when the user has no order (``value and []``)."""
    assert sell_payload({"Promo": ["b", "a"]}) == {"custom_fields": {"Promo": ["b", "a"]}}
    assert sell_payload({"Promo": None}) == {"custom_fields": {"Promo": None}}
    assert sell_payload({"Promo": ["c", "a"]}, promo_order=["a", "z"]) == {
        "custom_fields": {"Promo": ["a", "c"]}
    }


_TEXT = st.one_of(
    st.none(),
    st.sampled_from(["", " ", "Ann", " x@Y.test ", "weekly", "sync", "2026-04-27", "4/27/2016"]),
)


@settings(max_examples=200, deadline=None)
@given(
    standard=st.fixed_dictionaries({n: _TEXT for n in ("email", "first_name", "last_name")}),
    custom=st.one_of(
        st.none(),
        st.dictionaries(
            st.sampled_from(
                ["Promo", "Subscription", "Source", "Last active", "KulooId", "Sync error", "Other"]
            ),
            st.one_of(_TEXT, st.lists(_TEXT, max_size=3)),
            max_size=7,
        ),
    ),
)
def test_sell_values_is_sell_raw_of_every_field_made_canonical(standard, custom):
    """``sell_values`` reads each field without ``sell_raw``'s lookups: the same values, for a
    mapping and for the records ``crm`` makes. Planted bugs: a standard field read from the
    custom fields; a record without custom fields failing."""
    data = {"id": 1, **standard, "custom_fields": custom}
    for record in (data, Lead.from_data(data), Contact.from_data(data)):
        assert sell_values(record) == {n: canonical(n, sell_raw(record, n)) for n in FIELD_NAMES}


@settings(max_examples=200, deadline=None)
@given(
    user=st.fixed_dictionaries(
        {
            "kuloo_id": _TEXT.map(lambda v: v or ""),
            "email": _TEXT.map(lambda v: v or ""),
            "first_name": _TEXT.map(lambda v: v or ""),
            "last_name": _TEXT.map(lambda v: v or ""),
            "source": st.sampled_from(["", "admin", "signup", "sync"]),
            "frequency": st.sampled_from(["daily", "weekly", "monthly", "disabled"]),
            "unsubscribed": st.booleans(),
            "promo_tags": st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
            "last_active": st.one_of(st.none(), st.datetimes(timezones=st.just(UTC))),
            "sync_error": _TEXT.map(lambda v: v or ""),
        }
    )
)
def test_kuloo_values_is_to_sell_of_every_field_made_canonical(user):
    """``kuloo_values`` calls each field's ``to_sell`` directly: the same values as through
    ``vocabulary.to_sell``. Planted bug: one field's function paired with another's name."""
    assert kuloo_values(user) == {n: canonical(n, to_sell(n, user)) for n in FIELD_NAMES}
