"""A hostile name typed into Sell, end to end: sellsim over loopback → the sync → delivery's
SMTP transport → aiosmtpd on loopback (issue 20, item 1).

The names of the report (``Eve\\r\\nBcc: x@evil.example``; a ``Content-Type`` and a blank line
to swap the body for the attacker's HTML) are cleaned as Sell's records are read, so the
received message has exactly the headers the builder wrote. With the cleaning taken away,
the header check alone still stops them: the message is failed with the reason, never sent.
The cleaned value is Sell's value for the merge, so nothing is written back (no ping-pong).
"""

from __future__ import annotations

import functools

import pytest
import trio

from kuloo_daemon.control import delivery_methods
from kuloo_daemon.control.context import Context
from kuloo_daemon.control.protocol import ProtocolError
from kuloo_daemon.crm import records
from kuloo_daemon.rules import texts
from kuloo_daemon.secrets import Secret
from kuloo_daemon.store import channels as channel_store
from kuloo_daemon.store import users as user_store
from kuloo_daemon.store.sync import errors as sync_errors
from kuloo_daemon.sync import connection, engine
from sellsim.seeds import DEMO_TOKEN

TAGS = ["welcome", "onboarding", "upsell"]
LOCKED = "<h1>Your account is locked</h1>"
HOSTILE = [  # (first_name, last_name) as a Sell user typed them
    ("Eve\r\nBcc: x@evil.example", "Lee"),
    (f"X\r\nContent-Type: text/html\r\n\r\n{LOCKED}", "Y"),
    ("Ann", "Lee\r\nBcc: x@evil.example"),
    ("Bo\tB\u202e\u2028", "Fox\x85"),
]
CLEANED = [
    "EveBcc: x@evil.example Lee",
    f"XContent-Type: text/html{LOCKED} Y",
    "Ann LeeBcc: x@evil.example",
    "Bo B Fox",
]
HEADERS = [
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
]  # what message.build_bytes writes, in order


def sell_section(sellsim) -> dict:
    sellsim.set_options(rate_per_second=5000, rate_per_hour=10**9)
    return {"base_url": sellsim.base_url, "requests_per_second": 2000}


async def synced_channel(env) -> int:
    services = env.services
    created = await services.store.run(
        channel_store.create,
        {
            "name": "Kuloo Gardens",
            "plan": "pro",
            "sequential_tags": TAGS,
            "sender": "Kuloo Gardens <news@gardens.test>",
            "postal_address": "1 Allotment Road\nLeeds",
        },
        Secret(DEMO_TOKEN),
        services.clock.now(),
    )
    await connection.check_channel(services, created.check)
    await env.delivery.import_articles(created.channel.id, "sample")
    return created.channel.id


async def sim(call, *args, **kwargs):
    """One call to sellsim's test API (blocking HTTP) from a worker thread."""
    return await trio.to_thread.run_sync(functools.partial(call, *args, **kwargs))


async def leads(sellsim, names) -> list[str]:
    emails = []
    for n, (first, last) in enumerate(names):
        emails.append(f"victim{n}@example.com")
        await sim(
            sellsim.create_record,
            "lead",
            {
                "first_name": first,
                "last_name": last,
                "email": emails[-1],
                "custom_fields": {"Promo": ["welcome"]},
            },
        )
    return emails


async def test_hostile_sell_names_reach_smtp_with_exactly_the_builders_headers(
    env_factory, smtp_sink, sellsim
):
    async with env_factory(sell=sell_section(sellsim)) as env:
        ch = await synced_channel(env)
        emails = await leads(sellsim, HOSTILE)
        run = await engine.run_channel(env.services, ch)
        assert run.status.value == "ok" and run.counts["users_created"] == len(HOSTILE), run
        counts = await env.delivery.run(None)
        assert (counts.sent, counts.failed) == (len(HOSTILE), 0)
        for address, name in zip(emails, CLEANED, strict=True):
            user = await env.store.run(user_store.get_by_email, ch, address)
            log = await env.store.run(user_store.audit, user.id, 10)
            assert "control characters removed from Sell's" in log[-1].note, log[-1].note
            (msg,) = smtp_sink.to(address)
            assert list(msg.keys()) == HEADERS
            assert msg["To"].addresses[0].display_name == name
            assert msg["To"].addresses[0].addr_spec == address
            assert msg.get_content_type() == "multipart/alternative"
            assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
            assert LOCKED not in msg.get_body(("html",)).get_content()  # escaped where it shows
            assert msg["Date"] is not None and str(msg["List-Unsubscribe"]).startswith("<https://")
        assert sorted(r for _f, rcpts in smtp_sink.envelopes for r in rcpts) == sorted(emails)


async def test_without_the_cleaning_the_header_check_fails_the_message(
    env_factory, smtp_sink, sellsim, monkeypatch
):
    """Item 1 (b) on its own: a user whose name holds CR/LF (synced before this fix, say)."""
    monkeypatch.setattr(records, "clean_text", lambda value, name=False: value)
    async with env_factory(sell=sell_section(sellsim)) as env:
        ch = await synced_channel(env)
        emails = await leads(sellsim, HOSTILE[:3])
        await engine.run_channel(env.services, ch)
        user = await env.store.run(user_store.get_by_email, ch, emails[0])
        assert user.first_name == HOSTILE[0][0]  # the cleaning is really off
        counts = await env.delivery.run(None)
        assert (counts.sent, counts.failed) == (0, 3)
        failed = await env.outbox(ch, "failed")
        assert sorted(m.email for m in failed) == sorted(emails)
        assert all("the To header would hold a control character" in m.last_error for m in failed)
        assert smtp_sink.messages == []
        # The admin's preview of that user's email says why, as a refused request.
        article = (await delivery_methods.articles_list(env.services, {"channel": ch}))["articles"][
            0
        ]
        with pytest.raises(ProtocolError, match="To header") as refused:
            context = Context(env.services, env.delivery, "", lambda: 1)
            await delivery_methods.articles_preview(context, {"id": article["id"], "user": user.id})
        assert refused.value.code == "invalid_params"


async def test_a_cleaned_name_is_never_written_back_to_sell(env_factory, smtp_sink, sellsim):
    """No ping-pong: the merge sees the cleaned value as Sell's, for a new user and for a
    linked one whose name a Sell user then edits."""
    async with env_factory(sell=sell_section(sellsim)) as env:
        ch = await synced_channel(env)
        emails = await leads(sellsim, [HOSTILE[0], ("Cy", "Doe")])
        await engine.run_channel(env.services, ch)
        lead = next(r for r in await sim(sellsim.records, "lead") if r["last_name"] == "Doe")
        await sim(
            sellsim.edit_record,
            "lead",
            lead["id"],
            {"first_name": f"Cy\r\nContent-Type: text/html\r\n\r\n{LOCKED}"},
        )
        run = await engine.run_channel(env.services, ch)
        assert run.counts["users_updated"] == 1 and run.counts["sell_updated"] == 0, run
        cy = await env.store.run(user_store.get_by_email, ch, emails[1])
        assert cy.first_name == f"CyContent-Type: text/html{LOCKED}"
        log = await env.store.run(user_store.audit, cy.id, 10)
        (entry,) = [e for e in log if e.field == "first_name"]
        assert entry.note.startswith("changed in Sell") and entry.note.endswith(
            "; control characters removed from Sell's first_name"
        ), entry.note
        await sim(sellsim.reset_counters)
        run = await engine.run_channel(env.services, ch)
        assert run.counts["sell_updated"] == 0 and run.counts.get("users_updated", 0) == 0, run
        counters = await sim(sellsim.counters)
        writes = ("PUT", "PATCH", "DELETE", "POST /v2/leads", "POST /v2/contacts")
        assert counters["total"] > 0, counters
        assert not [r for r in counters["routes"] if r.startswith(writes)], counters
        stored = {r["email"]: r["first_name"] for r in await sim(sellsim.records, "lead")}
        assert stored[emails[0]] == HOSTILE[0][0]  # Sell keeps what its user typed
        assert stored[emails[1]].startswith("Cy\r\n")


async def test_an_email_with_control_characters_is_a_sync_error_never_rewritten(
    env_factory, smtp_sink, sellsim
):
    """A new record's, and a linked user's whose Sell user edits it (a trailing NEL, which a
    plain trim would have quietly taken off)."""
    async with env_factory(sell=sell_section(sellsim)) as env:
        ch = await synced_channel(env)
        (linked,) = await leads(sellsim, [("Cy", "Doe")])
        await engine.run_channel(env.services, ch)
        bad = "mallory@example.com\r\nBcc: x@evil.example"
        await sim(sellsim.create_record, "lead", {"last_name": "M", "email": bad}, force=True)
        cy = next(r for r in await sim(sellsim.records, "lead") if r["email"] == linked)
        await sim(
            sellsim.edit_record,
            "lead",
            cy["id"],
            {"email": linked + "\x85", "first_name": "Cyd"},
            force=True,
        )
        run = await engine.run_channel(env.services, ch)
        assert run.counts.get("users_created", 0) == 0 and run.counts["errors"] == 2, run
        errors, _next = await env.store.run(sync_errors.errors, ch, None, 10)
        user = await env.store.run(user_store.get_by_email, ch, linked)
        assert {(e.code, e.error, e.user_id) for e in errors} == {
            (texts.E_VALUE, texts.email_control_characters(), u) for u in (None, user.id)
        }
        assert (user.email, user.first_name) == (linked, "Cy")  # nothing taken from that record
        stored = {r["last_name"]: r for r in await sim(sellsim.records, "lead")}
        assert stored["M"]["email"] == bad  # never rewritten
        assert stored["Doe"]["email"] == linked + "\x85"
        for record in stored.values():
            assert record["custom_fields"]["Sync error"] == texts.email_control_characters()
