"""A relay that refuses the session, and the server's own words (issue 25 items 9, 11, 12).

A refusal of the session — at connect, TLS, login, MAIL FROM, a 421, or "relay access
denied" for every recipient — is the relay's problem: the batch stops, every message stays
queued with no attempt held against it, the daemon backs off and shows the relay's words.
Real aiosmtpd servers on loopback, with STARTTLS and certificates from trustme.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

import pytest
import trustme
from aiosmtpd.controller import Controller

from kuloo_daemon import config as config_mod
from kuloo_daemon.delivery.transport import (
    Outcome,
    SmtpSettings,
    SmtpTransport,
    TransportError,
    server_words,
)
from kuloo_daemon.vocabulary import OutboxState

from .conftest import Sink, free_port, write_config

WELCOME = "Welcome to Kuloo Gardens"


@dataclass
class RelaySink(Sink):
    mail_reply: str | None = None  # answered to every MAIL FROM
    rcpt_reply: str | None = None  # answered to every RCPT
    helo_names: list[str] = field(default_factory=list)
    mails: int = 0
    pipelining: bool = False  # offer PIPELINING (aiosmtpd reads pipelined commands either way)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        self.helo_names.append(hostname)
        session.host_name = hostname
        return responses[:1] + ["250-PIPELINING"] + responses[1:] if self.pipelining else responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        self.mails += 1
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if self.rcpt_reply:
            return self.rcpt_reply.replace("{rcpt}", address)
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelining"])
def relay(request):
    """Every relay test runs against a relay without and with PIPELINING (RFC 2920)."""
    sink = RelaySink(pipelining=request.param)
    sink.port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    yield sink
    controller.stop()


async def twelve_due(env) -> int:
    ch = await env.channel()
    await env.delivery.import_articles(ch, "sample")
    for i in range(12):
        await env.user(ch, f"u{i}@example.com", tags=["welcome"], frequency="disabled")
    return ch


@pytest.mark.parametrize(
    "refusal",
    [
        {"mail_reply": "530 5.7.0 Must issue a STARTTLS command first"},
        {"rcpt_reply": "554 5.7.1 <{rcpt}>: Relay access denied"},
        {"rcpt_reply": "421 4.7.0 closing: too many errors"},
    ],
    ids=["starttls-required-at-mail", "relay-access-denied", "421"],
)
async def test_a_relay_refusing_the_session_loses_no_message(env_factory, relay, refusal):
    for name, reply in refusal.items():
        setattr(relay, name, reply)
    async with env_factory(
        smtp={"port": relay.port}, delivery={"retry_seconds": 30, "max_attempts": 1}
    ) as env:
        ch = await twelve_due(env)
        await env.delivery.run(None)
        entries = await env.outbox(ch)
        # Not one message failed, not one attempt counted (max_attempts = 1 would fail them).
        assert [(e.state, e.attempts) for e in entries] == [(OutboxState.QUEUED, 0)] * 12
        assert relay.mails == 1  # the batch stopped at the first refusal
        view = env.delivery.relay.view()
        expected = next(iter(refusal.values())).split(" <")[0]
        assert view["state"] == "refusing" and expected in view["error"]  # the server's own words
        # Before the back-off ends, no pass opens a session.
        await env.advance(29)
        assert relay.mails == 1
        setattr(relay, next(iter(refusal)), None)  # the relay is fixed
        await env.advance(1)
        assert [e.state for e in await env.outbox(ch)] == [OutboxState.SENT] * 12
        assert (
            sorted(s for i in range(12) for s in relay.subjects(f"u{i}@example.com"))
            == [WELCOME] * 12
        )
        assert env.delivery.relay.view()["state"] == "ok"


async def test_the_back_off_of_a_refusing_relay_doubles_and_is_capped(env_factory, relay):
    relay.mail_reply = "421 4.3.2 Service shutting down"
    async with env_factory(smtp={"port": relay.port}, delivery={"retry_seconds": 600}) as env:
        await twelve_due(env)
        waits = []
        for _ in range(5):
            await env.delivery.run(None)
            waits.append((env.delivery.relay.retry_at - env.clock.now()).total_seconds())
            await env.clock.advance(waits[-1])
        assert waits == [600, 1200, 2400, 3600, 3600]


async def test_one_refused_recipient_keeps_the_servers_words_and_the_batch_goes_on(
    env_factory, relay
):
    relay.refuse.add("u3@example.com")
    relay.tempfail.add("u4@example.com")
    async with env_factory(smtp={"port": relay.port}) as env:
        ch = await twelve_due(env)
        await env.delivery.run(None)
        by_email = {e.email: e for e in await env.outbox(ch)}
        assert by_email["u3@example.com"].state == OutboxState.FAILED
        assert (
            by_email["u3@example.com"].last_error == "recipient refused: 550 5.1.1 no such mailbox"
        )
        assert by_email["u4@example.com"].state == OutboxState.QUEUED
        assert (
            by_email["u4@example.com"].last_error == "recipient refused: 451 4.3.0 try again later"
        )
        assert sum(e.state == OutboxState.SENT for e in by_email.values()) == 10
        assert env.delivery.relay.view()["state"] == "ok"


def test_server_words_are_one_clean_line():
    assert (
        server_words(550, b"5.1.1 <a@b>: gone\r\n5.1.1 really\x1b[31m")
        == "550 5.1.1 <a@b>: gone 5.1.1 really [31m"
    )
    long = server_words(554, "x" * 500)
    assert len(long) <= 204 and long.endswith("…")


async def test_resend_gives_a_failed_message_fresh_attempts(env_factory, relay):
    from kuloo_daemon.store import delivery as store

    relay.tempfail.add("u0@example.com")
    async with env_factory(
        smtp={"port": relay.port}, delivery={"max_attempts": 2, "retry_seconds": 10}
    ) as env:
        ch = await twelve_due(env)
        await env.delivery.run(None)
        await env.advance(10)
        (failed,) = await env.outbox(ch, "failed")
        assert failed.attempts == 2
        assert await env.store.run(store.resend_failed, ch, env.clock.now()) == 1
        (entry,) = [e for e in await env.outbox(ch) if e.id == failed.id]
        assert (entry.state, entry.attempts) == (OutboxState.QUEUED, 0)
        await env.delivery.run(None)  # still greylisted: one try of two, not the last one
        (entry,) = [e for e in await env.outbox(ch) if e.id == failed.id]
        assert (entry.state, entry.attempts) == (OutboxState.QUEUED, 1)
        relay.tempfail.clear()
        await env.advance(10)
        assert relay.subjects("u0@example.com") == [WELCOME]


# ---------------------------------------------------------------- TLS, CA file, EHLO name


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def tls_relay(ca, name: str):
    sink = RelaySink()
    sink.port = free_port()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port, tls_context=context)
    controller.start()
    return sink, controller


def message(to: str) -> bytes:
    return f"From: a@b.test\r\nTo: {to}\r\nSubject: hi\r\nMessage-ID: <1@b.test>\r\n\r\nbody\r\n".encode()


def test_a_ca_file_for_the_relay_only_and_the_ehlo_name(ca, tmp_path):
    sink, controller = tls_relay(ca, "127.0.0.1")
    try:
        bundle = tmp_path / "relay-ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        t = SmtpTransport(
            SmtpSettings(
                "127.0.0.1",
                sink.port,
                "starttls",
                timeout=5,
                ca_file=str(bundle),
                helo_name="mail.gardens.test",
            )
        )
        t.open()
        assert t.send(message("x@example.com"), "a@b.test", "x@example.com").outcome == Outcome.SENT
        t.close()
        assert sink.helo_names == [
            "mail.gardens.test",
            "mail.gardens.test",
        ]  # before and after STARTTLS
        # Without the bundle the system store does not know this CA: refused, saying why.
        t = SmtpTransport(SmtpSettings("127.0.0.1", sink.port, "starttls", timeout=5))
        with pytest.raises(
            TransportError, match="certificate was refused: unable to get local issuer"
        ):
            t.open()
    finally:
        controller.stop()


def test_a_certificate_for_another_name_is_refused_with_the_reason(ca, tmp_path):
    sink, controller = tls_relay(ca, "relay.elsewhere.test")
    try:
        bundle = tmp_path / "relay-ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        t = SmtpTransport(
            SmtpSettings("127.0.0.1", sink.port, "starttls", timeout=5, ca_file=str(bundle))
        )
        with pytest.raises(TransportError, match="certificate was refused: .*mismatch"):
            t.open()
    finally:
        controller.stop()


def test_a_relay_that_does_not_offer_starttls_is_refused_saying_so(relay):
    t = SmtpTransport(SmtpSettings("127.0.0.1", relay.port, "starttls", timeout=5))
    with pytest.raises(TransportError, match="does not offer STARTTLS"):
        t.open()


def test_ca_file_and_helo_name_are_checked(tmp_path):
    with pytest.raises(config_mod.ConfigError) as bad:
        write_config(
            tmp_path, 25, smtp={"ca_file": str(tmp_path / "missing.pem"), "helo_name": "bad name!"}
        )
    text = str(bad.value)
    assert "smtp.ca_file: no such file" in text and "smtp.helo_name: must be a host name" in text
    (tmp_path / "ca.pem").write_text("x")
    ok = write_config(
        tmp_path, 25, smtp={"ca_file": str(tmp_path / "ca.pem"), "helo_name": "[127.0.0.1]"}
    )
    assert ok["smtp.helo_name"] == "[127.0.0.1]"


def test_with_pipelining_mail_rcpt_and_data_leave_in_one_write(relay):
    """Issue 25 item 14: two round trips a message instead of four where the relay offers
    PIPELINING; one command at a time where it does not."""
    t = SmtpTransport(SmtpSettings("127.0.0.1", relay.port, "none", timeout=5))
    t.open()
    writes: list[bytes] = []
    assert t.conn is not None
    real = t.conn.send
    t.conn.send = lambda data: (
        writes.append(data if isinstance(data, bytes) else data.encode()),
        real(data),
    )[1]
    try:
        data = b"From: a@b.test\r\nTo: x@example.com\r\nSubject: s\r\n\r\nbody\r\n"
        assert t.send(data, "a@b.test", "x@example.com").outcome == Outcome.SENT
        relay.refuse.add("gone@example.com")
        refused = t.send(data, "a@b.test", "gone@example.com")
        assert (refused.outcome, refused.permanent) == (Outcome.NOT_SENT, True)
        assert refused.detail == "recipient refused: 550 5.1.1 no such mailbox"
        assert t.send(data, "a@b.test", "x@example.com").outcome == Outcome.SENT  # goes on
    finally:
        t.close()
    first = writes[0]
    if relay.pipelining:
        assert first.startswith(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.com>\r\nDATA\r\n")
    else:
        assert first.startswith(b"mail FROM:<a@b.test>") and b"RCPT" not in first.upper()[4:]
    assert relay.subjects("x@example.com") == ["s", "s"]
