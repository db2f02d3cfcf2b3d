"""Transports: Maildir for the demo and dry runs; SMTP login with the credential, never logged."""

from __future__ import annotations

import email
import email.policy
import mailbox

import pytest
from aiosmtpd.smtp import AuthResult
from plugins.ports import free_port, smtp_controller

from kuloo_daemon.delivery.transport import Outcome, SmtpSettings, SmtpTransport, TransportError
from kuloo_daemon.secrets import Secret

from .conftest import Sink


async def test_maildir_transport_writes_parseable_messages(env_factory, short_tmp):
    async with env_factory(
        delivery={"transport": "maildir", "maildir": f"{short_tmp}/mail"}
    ) as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        await env.user(ch, "ann@example.com", tags=["welcome"])
        counts = await env.delivery.run(None)
        assert counts.sent == 1
    box = mailbox.Maildir(f"{short_tmp}/mail", create=False)
    (key,) = box.keys()
    msg = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
    assert msg["Subject"] == "Welcome to Kuloo Gardens" and msg["To"] == "ann@example.com"
    assert msg.get_body(("plain",)) is not None and msg.get_body(("html",)) is not None


class Authenticator:
    def __init__(self):
        self.seen = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        self.seen.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"s3cret-pass-word")


@pytest.fixture
def auth_sink():
    sink, auth = Sink(), Authenticator()
    controller, port = smtp_controller(sink, authenticator=auth, auth_require_tls=False)
    yield sink, auth, port
    controller.stop()


def message(to: str) -> bytes:
    return (
        f"From: a@b.test\r\nTo: {to}\r\nSubject: hi\r\nMessage-ID: <1@b.test>\r\n\r\n"
        ".leading dot\r\nbody\r\n"
    ).encode()


def test_smtp_login_with_the_credential(auth_sink):
    sink, auth, port = auth_sink
    t = SmtpTransport(
        SmtpSettings("127.0.0.1", port, "none", "kuloo", Secret("s3cret-pass-word"), 5)
    )
    t.open()
    assert t.send(message("x@example.com"), "a@b.test", "x@example.com").outcome == Outcome.SENT
    t.close()
    assert [password for _login, password in auth.seen] == [b"s3cret-pass-word"]
    assert sink.messages[0].get_content().startswith(".leading dot")  # dot-stuffing round trip
    bad = SmtpTransport(
        SmtpSettings("127.0.0.1", port, "none", "kuloo", Secret("wrong-password"), 5)
    )
    with pytest.raises(TransportError) as refused:
        bad.open()
    assert "wrong-password" not in str(refused.value)
    assert "wrong-password" not in repr(bad.settings)


def test_an_unreachable_relay_is_a_transport_error():
    t = SmtpTransport(SmtpSettings("127.0.0.1", free_port(), "none", timeout=2))
    with pytest.raises(TransportError, match="cannot reach"):
        t.open()
