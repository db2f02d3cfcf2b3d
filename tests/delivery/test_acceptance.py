"""Issue 11's acceptance, in process: real SMTP (aiosmtpd), real SQLite, the manual clock.

Each test drives business time with ``clock.advance`` and runs delivery passes like the
scheduler would; every message the SMTP server accepted is checked for well-formedness.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest

from kuloo_daemon.delivery import schedule
from kuloo_daemon.delivery.message import sender_domain
from kuloo_daemon.store import delivery as store
from kuloo_daemon.tokens import Purpose, Signer
from kuloo_daemon.vocabulary import OutboxState

from .conftest import SIGNING_KEY


@pytest.fixture
def delivery_backend(backend):
    """Every test here runs on SQLite and on PostgreSQL (planning, the outbox claim, sending)."""
    return backend


DAY = 86400
WELCOME = "Welcome to Kuloo Gardens"
PLANNING = "Plan your beds in one afternoon"
TOOLS = "Five tools worth buying"
FROST, SEEDS, COMPOST = "Frost is coming", "The seed swap is on Saturday", "Compost in winter"


def check_well_formed(msg, kuloo_id: str | None = None) -> None:
    """Parses with policy default, both parts, RFC 8058 headers with a genuine token."""
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("plain",)) is not None and msg.get_body(("html",)) is not None
    for header in ("From", "To", "Subject", "Date", "Message-ID", "List-Id"):
        assert msg[header], header
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    urls = re.findall(r"<([^>]+)>", str(msg["List-Unsubscribe"]))
    https = [u for u in urls if u.startswith("https://")]
    assert len(https) == 1 and urlsplit(https[0]).netloc == "links.kuloo.test"
    token = urlsplit(https[0]).path.removeprefix("/u/")
    claim = Signer([SIGNING_KEY.encode()]).verify(
        token, datetime(2030, 1, 1, tzinfo=UTC), Purpose.UNSUBSCRIBE
    )
    if kuloo_id:
        assert claim.kuloo_id == kuloo_id
    html = msg.get_body(("html",)).get_content()
    assert https[0] in html  # the footer links to the same page
    assert (
        "1 Allotment Road" in html and "1 Allotment Road" in msg.get_body(("plain",)).get_content()
    )
    assert "@@KULOO" not in html and "@@KULOO" not in msg.get_body(("plain",)).get_content()


def check_all(sink) -> None:
    ids = [m["Message-ID"] for m in sink.messages]
    assert len(ids) == len(set(ids)), "a message arrived twice"
    for msg in sink.messages:
        check_well_formed(msg)


async def test_sequence_over_two_tags_in_publication_order_with_delays(env_factory, smtp_sink):
    async with env_factory() as env:
        ch = await env.channel()
        report = await env.delivery.import_articles(ch, "sample")
        assert (report["imported"], report["withdrawn"]) == (
            5,
            0,
        )  # the clip's page is not served here
        assert [p["file"] for p in report["problems"]] == [
            "sample/newsletter/2026-01-12-compost.md"
        ]
        await env.user(ch, "ann@example.com", tags=["welcome", "onboarding"], first_name="Ann")
        await env.delivery.run(None)
        assert smtp_sink.subjects("ann@example.com") == [WELCOME]
        await env.advance(DAY - 60)
        assert smtp_sink.subjects("ann@example.com") == [WELCOME]
        await env.advance(60)  # its 1-day delay after the welcome
        assert smtp_sink.subjects("ann@example.com") == [WELCOME, PLANNING]
        await env.advance(2 * DAY - 60)
        assert len(smtp_sink.to("ann@example.com")) == 2
        await env.advance(60)  # its 2-day delay after the planning article
        assert smtp_sink.subjects("ann@example.com") == [WELCOME, PLANNING, TOOLS]
        await env.advance(30 * DAY)
        assert smtp_sink.subjects("ann@example.com")[:3] == [WELCOME, PLANNING, TOOLS]
        assert [
            s for s in smtp_sink.subjects("ann@example.com") if s in (WELCOME, PLANNING, TOOLS)
        ] == [WELCOME, PLANNING, TOOLS]  # never again
        assert "Hi Ann," in smtp_sink.to("ann@example.com")[0].get_body(("plain",)).get_content()
        check_all(smtp_sink)


async def test_a_tag_removed_and_added_back_continues_and_reset_restarts(env_factory, smtp_sink):
    async with env_factory() as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        bob = await env.user(ch, "bob@example.com", tags=["welcome"], frequency="disabled")
        await env.delivery.run(None)
        assert smtp_sink.subjects("bob@example.com") == [WELCOME]
        await env.update_user(bob, promo_tags=[])
        await env.advance(5 * DAY)
        assert smtp_sink.subjects("bob@example.com") == [WELCOME]  # no tag, no sequence
        await env.update_user(bob, promo_tags=["welcome"])
        await env.delivery.run(None)
        # Continues with the next one (its delay has long passed); the welcome is not resent.
        assert smtp_sink.subjects("bob@example.com") == [WELCOME, TOOLS]
        progress = await env.delivery.progress(bob)
        assert [s["title"] for s in progress["sent"]] == [WELCOME, TOOLS] and progress[
            "next"
        ] is None
        await env.advance(10 * DAY)
        assert smtp_sink.subjects("bob@example.com") == [WELCOME, TOOLS]
        assert await env.delivery.reset_sequence(bob) == 2
        await env.delivery.run(None)
        assert smtp_sink.subjects("bob@example.com") == [WELCOME, TOOLS, WELCOME]
        progress = await env.delivery.progress(bob)
        assert progress["next"]["title"] == TOOLS
        assert progress["next"]["due_at"] == env.clock.now() + timedelta(seconds=2 * DAY)
        check_all(smtp_sink)


async def test_unsubscribed_gets_nothing_queued_mail_included(env_factory, smtp_sink):
    async with env_factory() as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        cy = await env.user(ch, "cy@example.com", tags=["welcome"])
        # Queue without sending (as if the pass stopped right after planning).
        queued, _, _ = await env.store.run(
            store.plan, ch, env.clock.now(), schedule.decide, sender_domain
        )
        assert queued == 1
        await env.update_user(cy, unsubscribed=True)
        counts = await env.advance(30 * DAY)
        assert counts.sent == 0 and smtp_sink.to("cy@example.com") == []
        assert [e.state for e in await env.outbox(ch)] == [OutboxState.CANCELLED]


async def test_disabled_stops_digests_not_the_sequence(env_factory, smtp_sink, pages):
    async with env_factory(page_port=pages.server_port) as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        await env.user(ch, "dee@example.com", tags=["welcome"], frequency="disabled")
        await env.user(ch, "eve@example.com", frequency="weekly")
        await env.delivery.run(None)
        for _ in range(16):
            await env.advance(DAY)
        assert smtp_sink.subjects("dee@example.com") == [WELCOME, TOOLS]
        assert len(smtp_sink.to("eve@example.com")) == 1  # eve's weekly digest
        check_all(smtp_sink)


async def test_a_digest_holds_exactly_the_articles_since_the_last_one(
    env_factory, smtp_sink, pages, short_tmp
):
    async with env_factory(page_port=pages.server_port) as env:
        ch = await env.channel()
        report = await env.delivery.import_articles(ch, "sample")
        assert report["problems"] == [] and report["imported"] == 6
        assert any(p == "/compost.html" for p in pages.hits)
        await env.user(ch, "fay@example.com", frequency="weekly")
        await env.user(ch, "gus@example.com", frequency="daily")
        await env.advance(5 * DAY)  # 2026-01-10 09:00
        late = await env.user(
            ch, "hal@example.com", frequency="weekly"
        )  # joins after frost and seeds
        await env.advance(2 * DAY)  # 01-12 09:00: fay's first weekly digest
        fay = smtp_sink.to("fay@example.com")
        assert len(fay) == 1
        body = fay[0].get_body(("plain",)).get_content()
        assert all(t in body for t in (FROST, SEEDS, COMPOST))
        # gus (daily): the clock jumped 5 days at once (like downtime): one digest with frost
        # and seeds, not a burst of five; then one with compost. Days without news send nothing.
        gus_bodies = [m.get_body(("plain",)).get_content() for m in smtp_sink.to("gus@example.com")]
        assert [[t for t in (FROST, SEEDS, COMPOST) if t in b] for b in gus_bodies] == [
            [FROST, SEEDS],
            [COMPOST],
        ]
        # A new article, published after fay's digest
        new = env.services.config.articles_root / "sample" / "newsletter" / "2026-01-14-bees.md"
        new.write_text(
            "---\ntitle: Bees in January\npublished_at: 2026-01-14T07:00:00Z\n---\nThey sleep.\n"
        )
        report = await env.delivery.import_articles(ch, "sample")
        assert (report["imported"], report["unchanged"]) == (1, 6)
        await env.advance(7 * DAY)  # 01-19 09:00
        fay = smtp_sink.to("fay@example.com")
        assert len(fay) == 2
        second = fay[1].get_body(("plain",)).get_content()
        assert "Bees in January" in second and not any(t in second for t in (FROST, SEEDS, COMPOST))
        hal = [m.get_body(("plain",)).get_content() for m in smtp_sink.to("hal@example.com")]
        assert len(hal) == 1 and COMPOST in hal[0] and "Bees in January" in hal[0]
        assert FROST not in hal[0] and SEEDS not in hal[0]  # no backlog from before joining
        assert late
        check_all(smtp_sink)


async def test_a_refused_recipient_fails_that_message_only(env_factory, smtp_sink):
    smtp_sink.refuse.add("bad@example.com")
    async with env_factory() as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        for name in ("a", "bad", "b", "c"):
            await env.user(ch, f"{name}@example.com", tags=["welcome"])
        counts = await env.delivery.run(None)
        assert (counts.sent, counts.failed) == (3, 1)
        assert sorted(r for _f, rcpts in smtp_sink.envelopes for r in rcpts) == [
            "a@example.com",
            "b@example.com",
            "c@example.com",
        ]
        failed = await env.outbox(ch, "failed")
        assert [e.email for e in failed] == ["bad@example.com"] and "550" in failed[0].last_error
        check_all(smtp_sink)


async def test_a_non_ascii_address_fails_that_message_only_and_the_batch_goes_on(
    env_factory, smtp_sink
):
    async with env_factory() as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        for address in ("a@example.com", "sami.garcía@example.org", "b@example.com"):
            await env.user(ch, address, tags=["welcome"])
        counts = await env.delivery.run(None)
        assert (counts.sent, counts.failed) == (2, 1)
        assert await env.outbox(ch, "sending") == []
        failed = await env.outbox(ch, "failed")
        assert [e.email for e in failed] == ["sami.garcía@example.org"] and "SMTPUTF8" in failed[
            0
        ].last_error
        check_all(smtp_sink)


async def test_a_connection_dropped_mid_batch_loses_nothing_and_duplicates_nothing(
    env_factory, smtp_sink
):
    smtp_sink.drop_at_rcpt.add("b@example.com")
    async with env_factory() as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        for name in ("a", "b", "c", "d"):
            await env.user(ch, f"{name}@example.com", tags=["welcome"])
        await env.delivery.run(None)
        # b's attempt broke the connection before its message was handed over: retried later;
        # c and d went over a new connection in the same batch.
        assert (
            sorted(
                smtp_sink.subjects("a@example.com")
                + smtp_sink.subjects("c@example.com")
                + smtp_sink.subjects("d@example.com")
            )
            == [WELCOME] * 3
        )
        assert smtp_sink.to("b@example.com") == []
        await env.advance(120)  # past the retry delay
        for name in ("a", "b", "c", "d"):
            assert smtp_sink.subjects(f"{name}@example.com") == [WELCOME], name
        assert [e.state for e in await env.outbox(ch)] == [OutboxState.SENT] * 4
        check_all(smtp_sink)


async def test_a_temporary_failure_is_retried_with_backoff_then_left_for_the_admin(
    env_factory, smtp_sink
):
    smtp_sink.tempfail.add("tim@example.com")
    async with env_factory(delivery={"max_attempts": 3, "retry_seconds": 600}) as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        await env.user(ch, "tim@example.com", tags=["welcome"], frequency="disabled")
        await env.delivery.run(None)
        (entry,) = await env.outbox(ch)
        assert (entry.state, entry.attempts) == (
            OutboxState.QUEUED,
            1,
        ) and "451" in entry.last_error
        assert entry.next_attempt_at == env.clock.now() + timedelta(seconds=600)
        await env.advance(599)
        assert (await env.outbox(ch))[0].attempts == 1  # not before its back-off
        await env.advance(1)
        (entry,) = await env.outbox(ch)
        assert entry.attempts == 2 and entry.next_attempt_at == env.clock.now() + timedelta(
            seconds=1200
        )
        await env.advance(1200)
        (entry,) = await env.outbox(ch)
        assert (entry.state, entry.attempts) == (OutboxState.FAILED, 3)  # capped: the admin decides
        await env.advance(10 * DAY)
        assert (await env.outbox(ch))[0].state == OutboxState.FAILED and smtp_sink.messages == []
        smtp_sink.tempfail.clear()
        await env.store.run(store.resolve, entry.id, "resend", env.clock.now())
        await env.delivery.run(None)
        assert smtp_sink.subjects("tim@example.com") == [WELCOME]
        assert (
            str(smtp_sink.messages[0]["Message-ID"]) == entry.message_id
        )  # the same message, at last


async def test_a_channel_is_planned_a_page_of_users_at_a_time_and_every_page_is_planned(
    env_factory, smtp_sink, monkeypatch
):
    """Planted bugs: the service stops after the first page; a page re-plans users of
    another (progress or cancellation crossing pages); the cursor skips a user."""
    monkeypatch.setattr(store, "PLAN_USERS", 2)  # 5 users: pages of 2, 2 and 1
    async with env_factory() as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        emails = [f"p{i}@example.com" for i in range(5)]
        ids = [await env.user(ch, email, tags=["welcome"]) for email in emails]
        await env.update_user(
            await env.user(ch, "gone@example.com", tags=["welcome"]), unsubscribed=True
        )
        await env.delivery.run(None)
        assert all(smtp_sink.subjects(e) == [WELCOME] for e in emails)
        assert smtp_sink.to("gone@example.com") == []
        await env.delivery.run(None)  # nothing is due again for anyone
        assert all(smtp_sink.subjects(e) == [WELCOME] for e in emails)
        first, due, after = await env.store.run(
            store.plan, ch, env.clock.now(), schedule.decide, sender_domain, 0, 2
        )
        assert (first, after) == (0, None)  # nobody is due: the page is empty
        assert (
            due is not None
        )  # yet the next sequence email's time is known (the users' stored times)
        await env.store.run(store.replan, ids)  # as a change would
        first, due, after = await env.store.run(
            store.plan, ch, env.clock.now(), schedule.decide, sender_domain, 0, 2
        )
        assert (
            first == 0 and after is not None
        )  # nothing new to queue; a full page says where to go on
        assert due is not None
