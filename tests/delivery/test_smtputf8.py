"""SMTPUTF8 (docs/delivery.md, "The message"): a non-ASCII local part goes out with SMTPUTF8
and a UTF-8 To header when this connection's relay offers it; otherwise that message fails,
with the reason. A non-ASCII domain always goes out in punycode."""

from __future__ import annotations

import pytest
from aiosmtpd.controller import Controller

from .conftest import Sink, free_port


@pytest.fixture
def utf8_sink():
    sink = Sink()
    sink.port = free_port()
    seen: list[list[str]] = []

    class Recording(Sink):
        async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
            seen.append(list(mail_options))
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            return "250 OK"

    recording = Recording()
    recording.port = sink.port
    recording.options = seen  # type: ignore[attr-defined]
    controller = Controller(recording, hostname="127.0.0.1", port=sink.port, enable_SMTPUTF8=True)
    controller.start()
    yield recording
    controller.stop()


async def test_a_relay_offering_smtputf8_gets_the_non_ascii_address(env_factory, utf8_sink):
    async with env_factory(smtp={"port": utf8_sink.port}) as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        for address in ("a@example.com", "sami.garcía@example.org", "b@bücher.example"):
            await env.user(ch, address, tags=["welcome"], first_name="Sámi")
        counts = await env.delivery.run(None)
        assert (counts.sent, counts.failed) == (3, 0)
        rcpts = sorted(r for _f, (r,) in utf8_sink.envelopes)
        assert rcpts == ["a@example.com", "b@xn--bcher-kva.example", "sami.garcía@example.org"]
        (utf8,) = [
            m
            for m, (_f, (r,)) in zip(utf8_sink.messages, utf8_sink.envelopes, strict=True)
            if r.startswith("sami")
        ]
        (raw,) = [r for r in utf8_sink.raw if "sami.garcía".encode() in r]
        assert "<sami.garcía@example.org>\r\n".encode() in raw  # the UTF-8 header form
        assert utf8["Subject"] == "Welcome to Kuloo Gardens"
        assert sorted(map(tuple, utf8_sink.options)) == [(), (), ("SMTPUTF8",)]


async def test_without_smtputf8_only_that_message_fails_saying_why(env_factory, smtp_sink):
    async with env_factory() as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        for address in ("sami.garcía@example.org", "b@bücher.example"):
            await env.user(ch, address, tags=["welcome"])
        counts = await env.delivery.run(None)
        assert (counts.sent, counts.failed) == (1, 1)
        (failed,) = await env.outbox(ch, "failed")
        assert "SMTPUTF8, which the relay does not offer" in failed.last_error
        assert [r for _f, (r,) in smtp_sink.envelopes] == ["b@xn--bcher-kva.example"]
