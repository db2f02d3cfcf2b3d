"""On PostgreSQL, events reach the subscribers of every daemon (LISTEN/NOTIFY; docs/operations.md).

Two daemon processes on one database: a control subscriber of daemon B sees a
``users.update`` made through daemon A, and each daemon's subscribers see every event once
(a daemon's own event, which PostgreSQL echoes back to it, is not published twice; an event
from elsewhere is not sent on again). Delivery on B reacts to a change made on A. A dropped
LISTEN connection is reconnected. The payload rules (PostgreSQL's 8000-byte limit) are
checked without a server. The PostgreSQL tests skip, saying why, when no server can start.
"""

from __future__ import annotations

import json
import time

import pytest

from kuloo_daemon.control.protocol import Event
from kuloo_daemon.store import events

START = "2026-02-01T00:00:00Z"  # the manual clock: after the sample articles' publication
WAIT = 20.0  # seconds a test waits for what must happen (it normally takes well under one)


@pytest.fixture
def pair(daemon_factory, pg_server, pg_database, shared_files):
    shared = shared_files("events-test-signing-key-0123456789")
    # A manual clock: delivery runs only when something is due or something changed
    # (no wall-clock recheck), so what a daemon does follows from the events it saw.
    extra = (
        f'[store]\nurl = "{pg_server.url(pg_database)}"\nlease_seconds = 5\n'
        f'[clock]\nmode = "manual"\nstart = "{START}"\n'
        f'[credentials]\ndirectory = "{shared}/creds"\n[articles]\nroot = "{shared}/articles"\n'
        '[delivery]\ntransport = "maildir"\nmaildir = "mail"\n'
    )  # beside each daemon's kuloo.toml
    return [daemon_factory(sub=name, extra_config=extra) for name in ("a", "b")]


def start(*daemons):
    for d in daemons:
        d.start()
    for d in daemons:
        d.wait_for("READY=1", timeout=60)


def make_channel(client) -> int:
    return client.call(
        "channels.create",
        {
            "name": "Gardens",
            "plan": "pro",
            "sender": "News <news@kuloo.test>",
            "postal_address": "1 Allotment Road",
            "sequential_tags": ["welcome", "onboarding"],
        },
    )["id"]


def events_until(client, wanted, seconds: float = WAIT) -> list[Event]:
    """The events ``client`` (subscribed) receives until one satisfies ``wanted``, that one included."""
    got = list(client.events)
    client.events.clear()
    deadline = time.monotonic() + seconds
    while not any(wanted(e) for e in got):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(
                f"not seen within {seconds:g} s; got {[(e.event, e.data) for e in got]}"
            )
        client.sock.settimeout(min(left, 1.0))
        try:
            message = client.read_message()
        except TimeoutError:
            continue
        if isinstance(message, Event):
            got.append(message)
    return got


def frequency_is(user_id: int, frequency: str):
    return lambda e: (
        e.event == "user.updated" and e.data["id"] == user_id and e.data["frequency"] == frequency
    )


def updates_of(got: list[Event], user_id: int) -> list[str]:
    return [
        e.data["frequency"] for e in got if e.event == "user.updated" and e.data["id"] == user_id
    ]


def test_a_change_through_one_daemon_reaches_the_others_subscribers_once(pair):
    a, b = pair
    start(a, b)
    with a.client() as ca, b.client() as cb:
        channel = make_channel(ca)
        # The add's own event may still be on its way to B when B subscribes: "disabled" tells it apart.
        user = ca.call(
            "users.add", {"channel": channel, "email": "ann@example.net", "frequency": "disabled"}
        )["id"]
        ca.call("subscribe")
        cb.call("subscribe")
        seen_a, seen_b = [], []
        ca.call("users.update", {"id": user, "frequency": "monthly"})
        seen_b += events_until(cb, frequency_is(user, "monthly"))  # A's change, on B
        # Then one from B, then one from A: each arrives after any echo of the earlier ones
        # (PostgreSQL delivers notifications in commit order), so a duplicate would show.
        cb.call("users.update", {"id": user, "frequency": "daily"})
        seen_a += events_until(ca, frequency_is(user, "daily"))
        ca.call("users.update", {"id": user, "frequency": "weekly"})
        seen_a += events_until(ca, frequency_is(user, "weekly"))
        seen_b += events_until(cb, frequency_is(user, "weekly"))
        assert updates_of(seen_a, user) == ["monthly", "daily", "weekly"]
        assert updates_of(seen_b, user) in (
            ["monthly", "daily", "weekly"],
            ["disabled", "monthly", "daily", "weekly"],
        )
        # Each daemon's status still shows both daemons (the events need no more than that).
        assert len(ca.call("status")["daemons"]) == 2
    for d in (a, b):  # the events connection ends with the daemon, cleanly
        assert d.stop() == 0, d.log()[-3000:]


def test_delivery_on_one_daemon_reacts_to_a_change_made_on_the_other(pair, pg_server, pg_database):
    a, b = pair
    start(a)
    with a.client() as ca:
        channel = make_channel(ca)
        assert ca.call("articles.import", {"channel": channel, "path": "sequence"})["imported"] == 3
    start(b)
    with b.client() as cb:
        assert (
            cb.call("delivery.run", {})["queued"] == 0
        )  # B's first pass is over: nothing to send yet
        b_id = cb.call("status")["daemon"]["id"]
    # Only B may run this channel's delivery now (A's passes skip a channel leased
    # elsewhere), and B's manual clock makes it pass only when told something changed.
    pg_server.sql(
        "INSERT INTO lease (channel_id, kind, lease_owner, lease_until) "
        f"VALUES ({channel}, 'delivery', '{b_id}', now() + interval '1 hour') ON CONFLICT (channel_id, kind) "
        f"DO UPDATE SET lease_owner = '{b_id}', lease_until = now() + interval '1 hour'",
        pg_database,
    )
    with a.client() as ca:  # a subscriber due the welcome email at once, added on A
        ca.call(
            "users.add", {"channel": channel, "email": "ben@example.net", "promo_tags": ["welcome"]}
        )
    deadline = time.monotonic() + WAIT
    state = ""
    while time.monotonic() < deadline and state != "sent":
        time.sleep(0.2)
        state = pg_server.sql("SELECT string_agg(state, ',') FROM outbox_message", pg_database)
    assert state == "sent", (state, b.log()[-2000:])
    b_mail = list((b.root / "mail" / "new").glob("*"))
    assert len(b_mail) == 1 and "Welcome to Kuloo Gardens" in b_mail[0].read_text()
    assert not list((a.root / "mail").glob("new/*"))


def listeners(pg_server, pg_database) -> set[str]:
    out = pg_server.sql(
        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'kuloo-events %' "
        f"AND datname = '{pg_database}'"
    )
    return set(out.split())


def test_a_dropped_events_connection_is_made_again(pair, pg_server, pg_database):
    a, b = pair
    start(a, b)
    before = listeners(pg_server, pg_database)
    assert len(before) == 2
    pg_server.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE application_name LIKE 'kuloo-events %' AND datname = '{pg_database}'"
    )
    deadline = time.monotonic() + WAIT
    after = set()
    while time.monotonic() < deadline and not (len(after) == 2 and not after & before):
        time.sleep(0.1)
        after = listeners(pg_server, pg_database)
    assert len(after) == 2 and not after & before, (before, after)
    with a.client() as ca, b.client() as cb:
        channel = make_channel(ca)
        user = ca.call("users.add", {"channel": channel, "email": "cy@example.net"})["id"]
        cb.call("subscribe")
        ca.call("users.update", {"id": user, "frequency": "monthly"})
        events_until(cb, frequency_is(user, "monthly"))
    assert "the events connection dropped; reconnecting" in b.log()


def test_payloads_stay_under_postgresqls_limit():
    """users.changed too large for one NOTIFY is split (no id lost); anything else is trimmed."""
    ids = list(range(1, 5001))
    payloads = events.encode("d1", 7, "users.changed", {"channel": 3, "ids": ids})
    assert len(payloads) > 1 and all(len(p.encode()) < events.PAYLOAD_LIMIT for p in payloads)
    notes = [events.decode(p) for p in payloads]
    assert [n.n for n in notes] == list(range(7, 7 + len(notes)))
    assert [i for n in notes for i in n.data["ids"]] == ids
    assert {n.data["channel"] for n in notes} == {3} and {n.event for n in notes} == {
        "users.changed"
    }
    big = {
        "id": 9,
        "channel": 3,
        "name": "x" * 50,
        "problems": ["p" * 100] * 100,
        "note": "y" * 9000,
    }
    (one,) = events.encode("d1", 1, "channel.updated", big)
    note = events.decode(one)
    assert note.trimmed and note.data == {"id": 9, "channel": 3, "name": "x" * 50, "trimmed": True}
    small = {"id": 1, "channel": 2, "email": "zoë@example.net"}
    (one,) = events.encode("d1", 1, "user.updated", small)
    assert events.decode(one).data == small and not events.decode(one).trimmed
    assert events.decode("not json") is None and events.decode(json.dumps({"o": "x"})) is None
