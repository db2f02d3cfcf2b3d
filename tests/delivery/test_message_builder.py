"""One builder (rules/mail.py) for every kind of email: sequence, digest, signup confirmation
(docs/delivery.md, "The message")."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from kuloo_daemon.delivery.message import Envelope, Recipient, build_bytes
from kuloo_daemon.delivery.render import Piece, render_email
from kuloo_daemon.links.server import confirmation_bytes
from kuloo_daemon.rules import mail
from kuloo_daemon.tokens import Signer

SIGNER = Signer([b"builder-test-key-0123456789"])
ENVELOPE = Envelope(
    3, "Kuloo Gardens", "Kuloo Gardens <news@gardens.test>", "https://links.kuloo.test"
)
NOW = datetime(2026, 1, 5, 9, tzinfo=UTC)
RECIPIENT = Recipient("K-1", "eve@example.com", "Eve", "Lee")
PIECES = [
    Piece(1, 1, "Plan your beds", "markdown", "Hello **there**."),
    Piece(2, 1, "Frost is coming", "markdown", "Cover the beds."),
]


def rendered(subject: str | None = None, n: int = 1):
    r = render_email(PIECES[:n], channel=ENVELOPE.channel_name, postal_address="1 Road\nTown")
    return replace(r, subject=subject) if subject else r


def each_kind(envelope: Envelope = ENVELOPE, subject: str | None = None) -> dict[str, bytes]:
    channel = SimpleNamespace(
        id=envelope.channel_id, name=envelope.channel_name, sender=envelope.sender
    )
    url = "https://links.kuloo.test/c/x"
    return {
        "sequence": build_bytes(
            rendered(subject),
            envelope,
            RECIPIENT,
            SIGNER,
            msg_id="<k.1@gardens.test>",
            date=NOW,
            kind="sequence",
        ),
        "digest": build_bytes(
            rendered(subject, 2),
            envelope,
            RECIPIENT,
            SIGNER,
            msg_id="<k.2@gardens.test>",
            date=NOW,
            kind="digest",
        ),
        "confirmation": confirmation_bytes(channel, "eve@example.com", url, NOW),
    }


@pytest.mark.parametrize("kind", ["sequence", "digest", "confirmation"])
def test_every_kind_has_the_same_frame(kind):
    data = each_kind()[kind]
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF only
    data.decode("ascii")  # 7-bit
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg["Date"].datetime == NOW
    assert re.fullmatch(r"<[^@<>]+@gardens\.test>", msg["Message-ID"])
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["Feedback-ID"] == f"3:{kind}:kuloo"
    list_mail = kind != "confirmation"
    assert ("List-Unsubscribe" in msg) is list_mail
    assert ("List-Unsubscribe-Post" in msg) is list_mail
    assert ("List-Id" in msg) is list_mail
    assert (msg["Auto-Submitted"] == "auto-generated") is (kind == "confirmation")
    if list_mail:
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg["List-Unsubscribe"].startswith("<https://links.kuloo.test/u/")
    else:
        assert "https://links.kuloo.test/c/x" in msg.get_body(("html",)).get_content()


def test_a_non_ascii_channel_name_encodes_only_the_list_ids_label():
    envelope = replace(ENVELOPE, channel_name="Jardins de l’Été", sender="Été <news@jardín.test>")
    for kind, data in each_kind(envelope).items():
        msg = email.message_from_bytes(data, policy=email.policy.default)
        assert msg["From"].addresses[0].domain == "xn--jardn-2sa.test"  # punycode
        if kind == "confirmation":  # the outbox makes the others' at the same domain
            assert msg["Message-ID"].endswith("@xn--jardn-2sa.test>")
        if kind == "confirmation":
            continue
        raw = re.search(rb"^List-Id: ([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", data, re.M).group(1)
        assert raw.endswith(b" <jardins-de-l-t.3.xn--jardn-2sa.test>")  # the <id>: plain ASCII
        assert raw.startswith(b"=?utf-8?")  # the label: encoded
        assert str(msg["List-Id"]) == "Jardins de l’Été <jardins-de-l-t.3.xn--jardn-2sa.test>"


def test_a_long_non_ascii_subject_is_folded_into_short_encoded_words():
    subject = "Récolte d’hiver : les légumes qui résistent au gel — et 2 autres de Jardin " * 2
    for kind, data in each_kind(subject=subject).items():
        head = data.split(b"\r\n\r\n", 1)[0]
        raw = re.search(rb"^Subject: ([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", head, re.M).group(1)
        words = re.findall(rb"=\?[^?]+\?[qQbB]\?[^?]*\?=", raw)
        if kind != "confirmation":  # its subject is its own
            assert len(words) > 2
            assert max(len(w) for w in words) <= 75  # RFC 2047
        assert all(len(line) <= 78 for line in (b"Subject: " + raw).split(b"\r\n"))
    msg = email.message_from_bytes(
        each_kind(subject=subject)["sequence"], policy=email.policy.default
    )
    assert msg["Subject"] == subject


def test_ascii_names_with_specials_are_quoted():
    envelope = replace(
        ENVELOPE, channel_name="Gardens, Inc.", sender='"Gardens, Inc." <news@gardens.test>'
    )
    recipient = Recipient("K-1", "eve@example.com", "Eve", "O'Neil, Jr.")
    data = build_bytes(
        rendered(), envelope, recipient, SIGNER, msg_id="<k.1@gardens.test>", date=NOW
    )
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert [a.addr_spec for a in msg["To"].addresses] == ["eve@example.com"]
    assert msg["To"].addresses[0].display_name == "Eve O'Neil, Jr."
    assert msg["From"].addresses[0].display_name == "Gardens, Inc."
    assert msg["List-Id"] == '"Gardens, Inc." <gardens-inc.3.gardens.test>'


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        mail.head(kind="newsletter", channel_id=1, sender="a@b.test", subject="x")
