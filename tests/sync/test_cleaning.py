"""Sell text cleaned as it is read (rules/cleaning.py, crm/records.py): each character class
that goes, tab to space in a name, what is never touched (a KulooId, an email)."""

from __future__ import annotations

import pytest

from kuloo_daemon.crm.records import Contact, Lead
from kuloo_daemon.rules.cleaning import clean_custom_fields, clean_text, is_clean


@pytest.mark.parametrize(
    ("raw", "name", "expected"),
    [
        ("Eve\r\nBcc: x@evil.example", True, "EveBcc: x@evil.example"),  # CR, LF (C0)
        ("A\x00B\x07C\x1bD\x1fE", False, "ABCDE"),  # the rest of C0
        ("A\x7fB", False, "AB"),  # DEL
        ("A\x80B\x85C\x9fD", False, "ABCD"),  # C1, NEL among them
        ("A\u2028B\u2029C", False, "ABC"),  # line and paragraph separators
        ("A\u202aB\u202bC\u202cD\u202dE\u202eF", False, "ABCDEF"),  # bidi embeddings, overrides
        ("A\u2066B\u2067C\u2068D\u2069E", False, "ABCDE"),  # bidi isolates
        ("Ann\tLee", True, "Ann Lee"),  # a tab in a name: a space
        ("a\tb", False, "ab"),  # in free text: a control character like the others
        ("Zoë O'Brien 山田 \u200d\u00a0", True, "Zoë O'Brien 山田 \u200d\u00a0"),  # kept
        ("", True, ""),
    ],
)
def test_clean_text_removes_each_class_and_keeps_everything_else(raw, name, expected):
    assert clean_text(raw, name=name) == expected
    assert is_clean(raw) == (raw == expected and "\t" not in raw)


def test_custom_fields_are_cleaned_except_the_kulooid():
    fields = {
        "KulooId": "K-1\r\nX",
        "Source": "sync\u202e",
        "Promo": ["wel\ncome", "upsell"],
        "Last active": "2026-01-05",
        "Score": 12,
        "Blank": None,
    }
    out, changed = clean_custom_fields(fields)
    assert out == {
        "KulooId": "K-1\r\nX",
        "Source": "sync",
        "Promo": ["welcome", "upsell"],
        "Last active": "2026-01-05",
        "Score": 12,
        "Blank": None,
    }
    assert changed == ("Source", "Promo")
    clean = {"KulooId": "K-1", "Source": "x"}
    assert clean_custom_fields(clean) == (clean, ())


def test_a_lead_is_cleaned_as_it_is_parsed_and_says_what_was_cleaned():
    lead = Lead.from_data(
        {
            "id": 7,
            "first_name": "Eve\r\nBcc: x@evil.example",
            "last_name": "Lee\tJr",
            "organization_name": "Acme\u2066 Ltd",
            "email": "eve@example.com",
            "custom_fields": {"KulooId": "K\x07", "Source": "a\x85b"},
        }
    )
    assert (lead.first_name, lead.last_name, lead.organization_name) == (
        "EveBcc: x@evil.example",
        "Lee Jr",
        "Acme Ltd",
    )
    assert lead.custom_fields == {"KulooId": "K\x07", "Source": "ab"}  # the KulooId as Sell sent it
    assert lead.cleaned == ("first_name", "last_name", "organization_name", "Source")
    assert lead.raw["first_name"] == "Eve\r\nBcc: x@evil.example"  # what Sell sent, kept aside


def test_an_email_is_never_rewritten_only_named():
    lead = Lead.from_data(
        {"id": 8, "last_name": "A", "email": "eve@example.com\r\nBcc: x@evil.example"}
    )
    assert lead.email == "eve@example.com\r\nBcc: x@evil.example" and lead.cleaned == ("email",)
    contact = Contact.from_data({"id": 9, "name": "Bo\tB", "email": "bo@example.com\u202e"})
    assert contact.name == "Bo B" and contact.email == "bo@example.com\u202e"
    assert contact.cleaned == ("name", "email")
    assert Lead.from_data({"id": 10, "first_name": "Ann", "email": "ann@example.com"}).cleaned == ()
