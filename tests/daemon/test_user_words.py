"""The users' words in vocabulary: addresses (valid, normalised, compared) and actors."""

import pytest

from kuloo_daemon.vocabulary import (
    EDITABLE_USER_FIELDS,
    Actor,
    InvalidEmail,
    email_key,
    valid_email,
)


@pytest.mark.parametrize(
    "text, kept",
    [
        ("ada@example.com", "ada@example.com"),
        ("  Ada.Lovelace@Example.COM \n", "Ada.Lovelace@Example.COM"),
        ("a+tag@mail.example.co.uk", "a+tag@mail.example.co.uk"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("jörg@bücher.example", "jörg@bücher.example"),
        ("x@a-b.io", "x@a-b.io"),
        ("a" * 64 + "@example.com", "a" * 64 + "@example.com"),
    ],
)
def test_addresses_are_trimmed_and_keep_their_spelling(text, kept):
    assert valid_email(text) == kept


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "ada",
        "ada@",
        "@example.com",
        "ada@example",
        "ada@@example.com",
        "ada@exa mple.com",
        "ada lovelace@example.com",
        "<ada@example.com>",
        "Ada <ada@example.com>",
        "ada@example..com",
        "ada@.example.com",
        "ada@example.com.",
        ".ada@example.com",
        "ada.@example.com",
        "a..b@example.com",
        "ada@-example.com",
        "ada@example-.com",
        "ada@ex\x00ample.com",
        "ada\t@example.com",
        "ada@[127.0.0.1]",
        '"ada"@example.com',
        "a" * 65 + "@example.com",
        "a@" + "b" * 250 + ".com",
        "ada@exam/ple.com",
    ],
)
def test_what_is_not_an_address_is_refused(text):
    with pytest.raises(InvalidEmail):
        valid_email(text)


def test_keys_compare_case_insensitively_and_ignore_padding():
    assert email_key(" Ada@Example.COM ") == email_key("ada@example.com") == "ada@example.com"
    assert email_key("ada@example.com") != email_key("ada.l@example.com")
    # lower(), never casefold(): "ß" stays "ß" (casefold makes it "ss")
    assert (
        email_key("Straße@Example.com") == "straße@example.com" != email_key("STRASSE@example.com")
    )
    assert email_key(None) == email_key("  ") == email_key(42) == ""


def test_actors_and_editable_fields():
    assert [a.value for a in Actor] == ["admin", "app", "sync", "link", "bounce", "complaint"]
    assert "source" not in EDITABLE_USER_FIELDS and "kuloo_id" not in EDITABLE_USER_FIELDS
    assert set(EDITABLE_USER_FIELDS) == {
        "email",
        "first_name",
        "last_name",
        "frequency",
        "unsubscribed",
        "add_to_crm",
        "promo_tags",
    }
