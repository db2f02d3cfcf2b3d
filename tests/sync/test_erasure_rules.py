"""rules/importing.py's erasure decisions (docs/sync-rules.md): the keyed hash of an
address, and whether a Sell record with no user is an erased user's (table tests)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kuloo_daemon.rules import texts
from kuloo_daemon.rules.importing import Tombstone, email_hash, erased

KEY = b"erasure-key"
AT = datetime(2026, 3, 4, 22, 30, tzinfo=UTC)
STONES = [Tombstone("k-erased", email_hash(KEY, "erin@example.com") or "", AT)]
TEXT = "erased in Kuloo on 2026-03-04: delete it in Sell, or add the user again in Kuloo"


def test_the_hash_is_keyed_and_compares_addresses_as_email_key():
    h = email_hash(KEY, " Erin@Example.COM ")
    assert h == email_hash(KEY, "erin@example.com") and len(h or "") == 64
    assert h != email_hash(b"another key", "erin@example.com")
    assert h != email_hash(KEY, "erin2@example.com")
    assert email_hash(KEY, "") is None and email_hash(KEY, None) is None


@pytest.mark.parametrize(
    ("kuloo_id", "email", "is_erased"),
    [
        ("k-erased", None, True),  # the KulooId the lead still carries
        ("k-erased", "someone@example.com", True),
        (None, "erin@example.com", True),  # a record without KulooId: by the email's hash
        (None, "ERIN@example.com ", True),
        ("k-other", "erin@example.com", True),
        (None, "erin2@example.com", False),
        ("k-other", "someone@example.com", False),
        (None, None, False),
    ],
)
def test_a_record_matching_a_tombstone_is_refused(kuloo_id, email, is_erased):
    refused = erased(kuloo_id, email_hash(KEY, email), STONES)
    if not is_erased:
        assert refused is None
        return
    assert refused is not None and (refused.code, refused.text) == (texts.E_ERASED, TEXT)


def test_no_tombstones_no_refusal():
    assert erased("k-erased", email_hash(KEY, "erin@example.com"), []) is None
