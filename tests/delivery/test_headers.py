"""Every header of every email passes one check (rules/headers.py): a value with CR, LF or
another control character is refused at the builder, whatever cleaned it or not before."""

from __future__ import annotations

import email
import email.policy
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from kuloo_daemon.delivery.message import Envelope, Recipient, build_bytes, frame
from kuloo_daemon.delivery.render import Piece, render_email
from kuloo_daemon.links.server import confirmation_email
from kuloo_daemon.rules.headers import HeaderError, header_value
from kuloo_daemon.tokens import Signer

SIGNER = Signer([b"header-test-key-0123456789"])
ENVELOPE = Envelope(
    3, "Kuloo Gardens", "Kuloo Gardens <news@gardens.test>", "https://links.kuloo.test"
)
NOW = datetime(2026, 1, 5, 9, tzinfo=UTC)
RENDERED = render_email(
    [Piece(1, 1, "Plan your beds", "markdown", "Hello **there**.")],
    channel="Kuloo Gardens",
    postal_address="1 Road\nTown",
)
INJECTIONS = [
    "Eve\r\nBcc: x@evil.example",
    "X\r\nContent-Type: text/html\r\n\r\n<h1>Your account is locked</h1>",
    "Eve\nBcc: x@evil.example",
    "Eve\rBcc: x@evil.example",
    "A\x00B",
    "A\tB",
    "A\x7fB",
    "A\x85B",
    "Évé\r\nBcc: x@evil.example",  # non-ASCII: still refused
]


def build(
    recipient: Recipient,
    envelope: Envelope = ENVELOPE,
    rendered=RENDERED,
    msg_id="<k.1@gardens.test>",
):
    return build_bytes(rendered, envelope, recipient, SIGNER, msg_id=msg_id, date=NOW)


@pytest.mark.parametrize("bad", INJECTIONS)
def test_the_builder_refuses_a_control_character_in_the_recipients_name(bad):
    for recipient in (
        Recipient("K-1", "eve@example.com", first_name=bad),
        Recipient("K-1", "eve@example.com", last_name=bad),
    ):
        with pytest.raises(HeaderError, match="the To header would hold a control character"):
            build(recipient)


@pytest.mark.parametrize("bad", INJECTIONS[:3])
def test_every_other_header_value_is_checked_too(bad):
    ok = Recipient("K-1", "eve@example.com", "Eve")
    with pytest.raises(HeaderError, match="To header"):
        build(Recipient("K-1", "eve@example.com" + bad))
    with pytest.raises(HeaderError, match="From header"):
        frame(RENDERED, replace(ENVELOPE, sender="News " + bad + " <news@gardens.test>"))
    with pytest.raises(HeaderError, match="Subject header"):
        frame(replace(RENDERED, subject="Plan " + bad), ENVELOPE)
    with pytest.raises(HeaderError, match="List-Id header"):
        frame(RENDERED, replace(ENVELOPE, channel_name="Kuloo " + bad))
    with pytest.raises(HeaderError, match="Message-ID header"):
        build(ok, msg_id="<k.1@gardens.test>" + bad)
    with pytest.raises(HeaderError, match="List-Unsubscribe header"):
        build(ok, replace(ENVELOPE, mailto="u@gardens.test" + bad))


def test_a_clean_message_has_exactly_the_builders_headers():
    data = build(Recipient("K-1", "eve@example.com", "Évé", "Lee\u202eX"))  # no control character
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert list(msg.keys()) == [
        "From",
        "Subject",
        "List-Id",
        "MIME-Version",
        "Content-Type",
        "Feedback-ID",
        "To",
        "Date",
        "Message-ID",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ]
    assert msg["To"].addresses[0].display_name == "Évé Lee\u202eX"
    assert header_value("Subject", "Plan your beds") == "Plan your beds"


@pytest.mark.parametrize("bad", INJECTIONS[:2])
def test_the_signup_confirmation_passes_the_same_check(bad):
    channel = SimpleNamespace(id=1, name="Kuloo Gardens", sender="Kuloo <news@gardens.test>")
    url = "https://links.kuloo.test/c/x"
    msg = confirmation_email(channel, "eve@example.com", url, NOW)
    assert msg["To"] == "eve@example.com"  # never the requester's text
    with pytest.raises(HeaderError, match="To header"):
        confirmation_email(channel, "eve@example.com" + bad, url, NOW)
    with pytest.raises(HeaderError, match="Subject header"):
        confirmation_email(
            SimpleNamespace(id=1, name="Kuloo" + bad, sender="N <n@gardens.test>"),
            "eve@example.com",
            url,
            NOW,
        )
    with pytest.raises(HeaderError, match="From header"):  # its default sender names the channel
        confirmation_email(
            SimpleNamespace(id=1, name="Kuloo" + bad, sender=""), "eve@example.com", url, NOW
        )
