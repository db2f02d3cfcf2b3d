"""Round trips and the channel's rate (issue 25 item 14).

A relay that takes a while over each message (as one 50 ms away does) is slower than the
channel's pace on one connection: the batch opens more (``MAX_CONNECTIONS``), every message
still goes out once with its outcome recorded once, and the channel's
``messages_per_second`` holds over all the connections together. Real aiosmtpd servers on
loopback, with and without PIPELINING; speed itself is measured only in
``bench/bench_delivery.py``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest
from plugins.ports import smtp_controller

from kuloo_daemon.delivery.service import MAX_CONNECTIONS
from kuloo_daemon.vocabulary import OutboxState

from .conftest import Sink

RATE = 20.0  # messages/s: turns 50 ms apart
USERS = 24
WELCOME = "Welcome to Kuloo Gardens"


@dataclass
class SlowRelay(Sink):
    """Takes ``delay`` seconds before its answer to each message: one connection cannot
    send faster than 1/delay, below the channel's pace; two could go faster than it."""

    delay: float = 0.07
    pipelining: bool = False
    sessions: int = 0  # EHLOs seen
    max_sessions: int | None = None  # EHLO answered 421 beyond this many sessions
    mail_at: list[float] = field(default_factory=list)  # when each MAIL FROM arrived
    senders: dict[str, int] = field(default_factory=dict)  # recipient -> session that took it
    vanish: set[str] = field(default_factory=set)  # taken, then the connection drops unanswered
    mail_reply: str | None = None
    refuse_after: int | None = None  # every MAIL beyond this many is answered ``mail_reply``

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        self.sessions += 1
        session.number = self.sessions
        if self.max_sessions is not None and self.sessions > self.max_sessions:
            return ["421 4.7.0 too many connections from you"]
        session.host_name = hostname
        return responses[:1] + ["250-PIPELINING"] + responses[1:] if self.pipelining else responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        with self.lock:
            self.mail_at.append(time.monotonic())
            mails = len(self.mail_at)
        if self.mail_reply and self.refuse_after is not None and mails > self.refuse_after:
            return self.mail_reply
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        await asyncio.sleep(self.delay)
        (rcpt,) = envelope.rcpt_tos
        if rcpt in self.vanish:
            self.vanish.discard(rcpt)
            self.senders[rcpt] = session.number
            server.transport.abort()  # the message was taken; the answer never comes
            return "250 OK"
        self.senders[rcpt] = session.number
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelining"])
def slow_relay(request):
    relay = SlowRelay(pipelining=request.param)
    controller, relay.port = smtp_controller(relay, enable_SMTPUTF8=False)
    yield relay
    controller.stop()


async def due(env, users: int = USERS) -> int:
    ch = await env.channel()
    await env.delivery.import_articles(ch, "sample")
    for i in range(users):
        await env.user(ch, f"u{i}@example.com", tags=["welcome"], frequency="disabled")
    return ch


def addresses(users: int = USERS) -> list[str]:
    return [f"u{i}@example.com" for i in range(users)]


def received(relay: SlowRelay) -> list[str]:
    return sorted(r for _f, rcpts in relay.envelopes for r in rcpts)


def settings(relay: SlowRelay, **delivery) -> dict:
    return {
        "smtp": {"port": relay.port},
        "delivery": {"messages_per_second": RATE, "batch_size": 50, **delivery},
    }


async def test_a_slow_relay_gets_more_connections_each_message_once_at_the_channels_rate(
    env_factory, slow_relay
):
    """Planted bugs: each connection paced on its own (ten messages in two thirds of the
    time); a message taken from the queue without being removed (sent twice); no further
    connection (one session)."""
    async with env_factory(**settings(slow_relay)) as env:
        ch = await due(env)
        counts = await env.delivery.run(None)
        assert counts.sent == USERS
        # Every message once, each outcome recorded once.
        assert received(slow_relay) == sorted(addresses())
        ids = [m["Message-ID"] for m in slow_relay.messages]
        assert len(set(ids)) == USERS
        entries = await env.outbox(ch)
        assert [(e.state, e.attempts) for e in entries] == [(OutboxState.SENT, 1)] * USERS
        # More than one connection carried messages, never more than allowed.
        used = set(slow_relay.senders.values())
        assert 2 <= len(used) <= MAX_CONNECTIONS and slow_relay.sessions <= MAX_CONNECTIONS
        # The rate over all of them: any ten transactions in a row span at least ten turns
        # (less a turn's worth of the relay's own scheduling on a loaded machine).
        at = slow_relay.mail_at
        assert len(at) == USERS
        spans = [at[i + 10] - at[i] for i in range(len(at) - 10)]
        assert min(spans) >= (10 - 1) / RATE, spans


async def test_the_rate_holds_across_batches(env_factory, slow_relay):
    """Each batch claims, connects and records in less than a turn: its first message still
    waits for the channel's next turn. Planted bug: the pace forgotten at each batch."""
    rate = 2.0  # turns long beside the relay's own scheduling jitter on a loaded machine
    async with env_factory(**settings(slow_relay, batch_size=2, messages_per_second=rate)) as env:
        await due(env, 6)
        assert (await env.delivery.run(None)).sent == 6
        at = slow_relay.mail_at
        gaps = [b - a for a, b in zip(at, at[1:], strict=False)]
        # a batch forgetting the pace sends its first message a claim and a connection
        # (~0.1 s) after the last one; a late arrival at the relay costs less than 0.2 s
        assert min(gaps) >= 0.6 / rate, gaps
        assert received(slow_relay) == sorted(addresses(6))


async def test_a_connection_lost_mid_message_on_one_connection_loses_and_repeats_nothing(
    env_factory, slow_relay
):
    """One connection breaks after taking a message (maybe sent: ``uncertain``, never sent
    again); another breaks at a recipient (not sent: retried later). Every other message goes
    once, over the connections left and reopened. Planted bugs: the broken connection's
    message pushed back and sent again (u5 twice); a lane's results dropped (outbox left
    ``sending``)."""
    slow_relay.vanish.add("u5@example.com")
    slow_relay.drop_at_rcpt.add("u9@example.com")
    async with env_factory(**settings(slow_relay, retry_seconds=60)) as env:
        ch = await due(env)
        await env.delivery.run(None)
        entries = {e.email: e for e in await env.outbox(ch)}
        assert entries["u5@example.com"].state == OutboxState.UNCERTAIN
        assert entries["u9@example.com"].state == OutboxState.QUEUED
        others = [a for a in addresses() if a not in ("u5@example.com", "u9@example.com")]
        assert [entries[a].state for a in others] == [OutboxState.SENT] * len(others)
        assert received(slow_relay) == sorted(others)  # u5's was taken, never answered
        await env.advance(120)  # past u9's retry
        entries = {e.email: e for e in await env.outbox(ch)}
        assert entries["u9@example.com"].state == OutboxState.SENT
        assert entries["u5@example.com"].state == OutboxState.UNCERTAIN  # never resent
        assert received(slow_relay) == sorted([*others, "u9@example.com"])
        assert len(set(m["Message-ID"] for m in slow_relay.messages)) == USERS - 1


async def test_a_relay_allowing_one_connection_gets_every_message_over_it(env_factory, slow_relay):
    """A further connection refused (421 at EHLO) is not the relay refusing us: the batch
    goes on over the first. Planted bug: that refusal taken as the relay's (batch stopped,
    the relay shown refusing)."""
    slow_relay.max_sessions = 1
    async with env_factory(**settings(slow_relay)) as env:
        ch = await due(env, 8)
        assert (await env.delivery.run(None)).sent == 8
        assert received(slow_relay) == sorted(addresses(8))
        assert set(slow_relay.senders.values()) == {1}
        assert slow_relay.sessions >= 2  # a second was tried
        assert [e.state for e in await env.outbox(ch)] == [OutboxState.SENT] * 8
        assert env.delivery.relay.view()["state"] == "ok"


async def test_a_relay_refusing_the_session_mid_batch_stops_every_connection(
    env_factory, slow_relay
):
    """After six messages the relay answers 421 to MAIL on every connection: what was sent
    is recorded, the rest stay queued with no attempt held against them, the relay is shown
    refusing and no connection starts another message. Planted bug: a connection that met
    the refusal goes on with the next message."""
    slow_relay.mail_reply, slow_relay.refuse_after = "421 4.3.2 shutting down", 6
    async with env_factory(**settings(slow_relay, retry_seconds=30, max_attempts=1)) as env:
        ch = await due(env)
        await env.delivery.run(None)
        entries = await env.outbox(ch)
        sent = [e for e in entries if e.state == OutboxState.SENT]
        assert len(sent) == 6 and sorted(e.email for e in sent) == received(slow_relay)
        rest = [(e.state, e.attempts) for e in entries if e.state != OutboxState.SENT]
        assert rest == [(OutboxState.QUEUED, 0)] * (USERS - 6)
        # At most one refused MAIL per connection: each stops at once, or at its next turn.
        assert len(slow_relay.mail_at) - 6 <= MAX_CONNECTIONS
        view = env.delivery.relay.view()
        assert view["state"] == "refusing" and "421 4.3.2 shutting down" in view["error"]


async def test_a_pass_stopped_mid_batch_records_every_connections_outcomes_once(
    env_factory, slow_relay
):
    """A stop while two connections send: what each handed over is recorded ``sent``, the
    rest go back to the queue, nothing stays ``sending``, and the stop reaches the caller as
    trio's own ``Cancelled``. Planted bugs: the lanes' exception group let out as it is (the
    caller sees an ``ExceptionGroup``); the stop not passed to the threads (they send the
    whole batch); the results not recorded on the way out."""
    import trio

    async with env_factory(**settings(slow_relay)) as env:
        ch = await due(env)
        seen: list[BaseException] = []
        token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:

            def stop_at_the_fifth(_msg) -> None:  # in the relay's thread
                if len(slow_relay.messages) == 5:
                    trio.from_thread.run_sync(scope.cancel, trio_token=token)

            slow_relay.on_data = stop_at_the_fifth
            try:
                await env.delivery.run(None)
            except BaseException as exc:
                seen.append(exc)
                raise
        assert scope.cancelled_caught and [type(e) for e in seen] == [trio.Cancelled]
        entries = await env.outbox(ch)
        sent = sorted(e.email for e in entries if e.state == OutboxState.SENT)
        assert sent == received(slow_relay) and 0 < len(sent) < USERS
        assert {e.state for e in entries} == {OutboxState.SENT, OutboxState.QUEUED}
        assert all(e.attempts == 0 for e in entries if e.state == OutboxState.QUEUED)
        assert len(set(slow_relay.senders.values())) >= 2


async def test_a_stop_ends_the_wait_for_a_slow_channels_next_turn(env_factory, slow_relay):
    """At 0.05 messages/s a turn is 20 s away: a stop after the first message ends the
    connection's wait at once, not when its turn comes. Planted bug: the turn waited out
    with a plain sleep."""
    import trio

    async with env_factory(**settings(slow_relay, messages_per_second=0.05)) as env:
        ch = await due(env, 3)
        started = trio.current_time()
        with trio.move_on_after(2) as scope:  # the first message goes at once, then a wait
            await env.delivery.run(None)
        assert scope.cancelled_caught
        assert trio.current_time() - started < 10  # far less than the 20 s turn
        states = sorted(e.state for e in await env.outbox(ch))
        assert states == [OutboxState.QUEUED, OutboxState.QUEUED, OutboxState.SENT]
