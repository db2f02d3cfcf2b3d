"""Bounces through the control socket and kuloo-ctl (issue 26 items 4, 6, 7): the daemon as a
subprocess on the manual clock; the bounce itself is taken by ``store.bounces.take`` on the
daemon's own SQLite file, as its bounce mailbox reader does."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import trio
from plugins.bounced import bounce, take_bounces

from kuloo_daemon.control.client import ControlError
from kuloo_daemon.control.protocol import Event
from kuloo_daemon.rules.bounces import Bounce, Kind

START = "2026-01-05T09:00:00Z"
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
MANUAL = f'[clock]\nmode = "manual"\nstart = "{START}"\n[sync]\nscheduled = false\n'
REASON = "550 5.1.1 <gone@example.org>: Recipient address rejected: [bold]User unknown"


def token(kuloo_id: str, outbox_id: int = 1):
    return bounce(Kind.HARD, kuloo_id, outbox_id=outbox_id).token


async def take(daemon, *bounced: Bounce, sent: int = 0) -> None:
    """Take ``bounced`` on the daemon's database (and ``sent`` emails sent now, for the
    deliverability figures)."""
    database = daemon.root / "state" / "kuloo.sqlite3"
    await trio.to_thread.run_sync(lambda: take_bounces(database, bounced, NOW, sent=sent))


def ctl(daemon, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.control.ctl", "--socket", daemon.socket_path, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def next_event(client, name):
    while True:
        message = client.read_message()
        if isinstance(message, Event) and message.event == name:
            return message.data


@pytest.fixture
def manual(daemon_factory):
    d = daemon_factory(MANUAL).start()
    d.wait_for("READY=1")
    return d


def _users(daemon) -> tuple[int, dict, dict]:
    with daemon.client() as c:
        channel = c.call("channels.create", {"name": "Acme"})["id"]
        gone = c.call("users.add", {"channel": channel, "email": "gone@example.org"})
        kept = c.call("users.add", {"channel": channel, "email": "kept@example.org"})
    return channel, gone, kept


async def test_a_bounced_user_is_shown_listed_and_cleared_over_the_socket(manual):
    channel, gone, kept = _users(manual)
    assert gone["bounce"] is None
    await take(manual, Bounce(Kind.HARD, "5.1.1", REASON, token(gone["kuloo_id"])))
    with manual.client() as watcher, manual.client() as c:
        watcher.call("subscribe")
        got = c.call("users.get", {"id": gone["id"]})
        assert got["bounce"] == {"status": "5.1.1", "reason": REASON, "at": START}
        assert c.call("users.get", {"id": kept["id"]})["bounce"] is None

        page = c.call("users.list", {"channel": channel, "bounced": True})
        assert [u["id"] for u in page["users"]] == [gone["id"]] and page["total"] == 1
        assert page["users"][0]["bounce"]["status"] == "5.1.1"  # the TUI marks the row
        others = c.call("users.list", {"channel": channel, "bounced": False})
        assert [u["id"] for u in others["users"]] == [kept["id"]]
        everyone = c.call("users.list", {"channel": channel})
        assert everyone["total"] == 2

        with pytest.raises(ControlError) as bad:
            c.call("users.list", {"channel": channel, "bounced": "yes"})
        assert bad.value.code == "invalid_params" and "'bounced'" in bad.value.message
        with pytest.raises(ControlError) as bad:
            c.call("users.update", {"id": gone["id"], "clear_bounce": "true"})
        assert bad.value.code == "invalid_params" and "'clear_bounce'" in bad.value.message
        with pytest.raises(ControlError) as bad:
            c.call("users.update", {"id": gone["id"], "bounce": None})
        assert bad.value.code == "invalid_params" and "'bounce'" in bad.value.message
        assert c.call("users.get", {"id": gone["id"]})["bounce"] is not None  # nothing done

        # cleared together with another change, in one call; the event carries the document
        cleared = c.call(
            "users.update", {"id": gone["id"], "clear_bounce": True, "first_name": "Gwen"}
        )
        assert cleared["bounce"] is None and cleared["first_name"] == "Gwen"
        assert next_event(watcher, "user.updated") == cleared
        assert c.call("users.list", {"channel": channel, "bounced": True})["total"] == 0
        entries = c.call("users.audit", {"id": gone["id"]})["entries"]
        bounce_entries = [e for e in entries if e["field"] == "bounce"]
        text = f"5.1.1 {REASON}"
        assert [(e["actor"], e["old"], e["new"]) for e in bounce_entries] == [
            ("admin", text, None),  # newest first
            ("bounce", None, text),
        ]

        # clear_bounce on a user not bounced: no error, no change, no audit entry
        again = c.call("users.update", {"id": gone["id"], "clear_bounce": True})
        assert again == cleared
        assert len(c.call("users.audit", {"id": gone["id"]})["entries"]) == len(entries)
        # from the app too (its actor is kept)
        await take(manual, Bounce(Kind.HARD, "5.1.1", REASON, token(kept["kuloo_id"])))
        alone = c.call("users.update", {"id": kept["id"], "clear_bounce": True, "actor": "app"})
        assert alone["bounce"] is None
        assert next_event(watcher, "user.updated") == alone  # a clearing alone is a change
        (latest, *_) = c.call("users.audit", {"id": kept["id"]})["entries"]
        assert (latest["actor"], latest["field"], latest["new"]) == ("app", "bounce", None)


async def test_channels_get_carries_the_deliverability_figures(manual):
    channel, gone, kept = _users(manual)
    with manual.client() as c:
        figures = c.call("channels.get", {"id": channel})["deliverability"]
    assert figures == {
        "sent_30d": 0,
        "bounced_30d": 0,
        "complaints_30d": 0,
        "bounce_rate": 0.0,
        "complaint_rate": 0.0,
    }
    await take(
        manual,
        Bounce(Kind.HARD, "5.1.1", REASON, token(gone["kuloo_id"])),
        Bounce(Kind.COMPLAINT, "", "abuse report", token(kept["kuloo_id"])),
        sent=40,
    )
    with manual.client() as c:
        figures = c.call("channels.get", {"id": channel})["deliverability"]
        by_name = c.call("channels.get", {"name": "Acme"})["deliverability"]
        # 30 days of business time: 31 days on, the same figures are out of the window
        c.call("clock.advance", {"seconds": 31 * 86400})
        later = c.call("channels.get", {"id": channel})["deliverability"]
    assert (
        figures
        == by_name
        == {
            "sent_30d": 40,
            "bounced_30d": 1,
            "complaints_30d": 1,
            "bounce_rate": 0.025,
            "complaint_rate": 0.025,
        }
    )
    assert later["sent_30d"] == later["bounced_30d"] == later["complaints_30d"] == 0


async def test_kuloo_ctl_lists_the_bounced_users_and_shows_the_bounce(manual):
    channel, gone, kept = _users(manual)
    await take(manual, Bounce(Kind.HARD, "5.1.1", REASON, token(gone["kuloo_id"])))
    r = ctl(manual, "users", "list", "--bounced")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[-1] == "BOUNCED"
    assert len(lines) == 2 and "gone@example.org" in lines[1] and "kept@" not in r.stdout
    assert lines[1].split()[-1] == "5.1.1"
    assert "1 of 1 user(s)" in r.stderr
    r = ctl(manual, "users", "list", "--no-bounced")
    assert r.returncode == 0 and "kept@example.org" in r.stdout and "gone@" not in r.stdout
    r = ctl(manual, "users", "list", "--bounced", "--json")
    assert [u["email"] for u in json.loads(r.stdout)["users"]] == ["gone@example.org"]
    r = ctl(manual, "users", "show", "gone@example.org")
    assert r.returncode == 0, r.stderr
    (line,) = [x for x in r.stdout.splitlines() if x.startswith("bounced")]
    assert line.split(None, 1)[1] == f"5.1.1 {REASON} ({START})"
    r = ctl(manual, "users", "show", "kept@example.org")
    assert [x.split() for x in r.stdout.splitlines() if x.startswith("bounced")] == [
        ["bounced", "no"]
    ]


async def test_kuloo_ctl_clears_a_bounce(manual):
    channel, gone, kept = _users(manual)
    await take(manual, Bounce(Kind.HARD, "5.1.1", REASON, token(gone["kuloo_id"])))
    r = ctl(manual, "users", "clear-bounce", "gone@example.org")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (
        f"user {gone['id']} (gone@example.org): bounce cleared (5.1.1 {REASON} ({START})); "
        "mail to the address resumes from now"
    )
    with manual.client() as c:
        assert c.call("users.get", {"id": gone["id"]})["bounce"] is None
        entries = c.call("users.audit", {"id": gone["id"]})["entries"]
    assert (entries[0]["actor"], entries[0]["field"]) == ("admin", "bounce")
    r = ctl(manual, "users", "clear-bounce", str(kept["id"]))
    assert r.returncode == 0 and "has not bounced: nothing to clear" in r.stdout
    r = ctl(manual, "users", "clear-bounce", "nobody@example.org")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1


def test_kuloo_ctl_users_list_help_names_the_bounced_filter(short_tmp):
    r = subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.control.ctl", "users", "list", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "--bounced, --no-bounced" in text and "address bounced" in text
