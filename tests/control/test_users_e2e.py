"""users.* end to end: the daemon as a subprocess on the manual clock, driven through its socket and kuloo-ctl."""

import json
import os
import subprocess
import sys

import pytest

from kuloo_daemon.control.client import ControlError
from kuloo_daemon.control.protocol import Event

START = "2026-01-05T09:00:00Z"
MANUAL = f'[clock]\nmode = "manual"\nstart = "{START}"\n'
TAGS = ["welcome", "onboarding"]


@pytest.fixture
def manual(daemon_factory):
    d = daemon_factory(MANUAL).start()
    d.wait_for("READY=1")
    return d


def ctl(daemon, *args):
    r = subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.control.ctl", "--socket", daemon.socket_path, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return r.returncode, (json.loads(r.stdout) if r.returncode == 0 else r.stderr)


def next_event(client, name):
    while True:
        message = client.read_message()
        if isinstance(message, Event) and message.event == name:
            return message.data


def test_a_user_from_add_to_audit_in_business_time(manual, daemon_factory):
    with manual.client() as watcher, manual.client() as c:
        watcher.call("subscribe")
        channel = c.call("channels.create", {"name": "Acme", "sequential_tags": TAGS})["id"]
        code, user = ctl(
            manual,
            "users.add",
            json.dumps(
                {
                    "channel": channel,
                    "email": "Ada@Example.com",
                    "first_name": "Ada",
                    "promo_tags": ["welcome"],
                }
            ),
        )
        assert code == 0, user
        assert (user["created_at"], user["updated_at"], user["source"], user["frequency"]) == (
            START,
            START,
            "admin",
            "weekly",
        )
        assert next_event(watcher, "user.updated") == user

        c.call("clock.advance", {"seconds": 3600})
        done = c.call("users.update", {"id": user["id"], "unsubscribed": True, "actor": "app"})
        assert done["unsubscribed"] and done["updated_at"] == "2026-01-05T10:00:00Z"
        assert next_event(watcher, "user.updated")["unsubscribed"] is True
        # an edit that changes nothing publishes nothing and is not audited
        assert c.call("users.update", {"id": user["id"], "unsubscribed": True}) == done

        clicked = c.call("users.activity", {"id": user["id"], "at": "2026-01-05T10:30:00+01:00"})
        assert clicked["last_active"] == "2026-01-05T09:30:00Z"  # the time given, in UTC
        assert next_event(watcher, "user.updated")["last_active"] == "2026-01-05T09:30:00Z"
        active = c.call("users.activity", {"id": user["id"]})
        assert active["last_active"] == "2026-01-05T10:00:00Z"  # now, by the clock
        assert next_event(watcher, "user.updated")["last_active"] == "2026-01-05T10:00:00Z"
        earlier = c.call("users.activity", {"id": user["id"], "at": "2026-01-05T09:45:00Z"})
        assert earlier["last_active"] == "2026-01-05T10:00:00Z"  # never backwards
        with pytest.raises(ControlError) as err:
            c.call("users.activity", {"id": user["id"], "at": "yesterday"})
        assert err.value.code == "invalid_params" and "'at'" in err.value.message

        audit = c.call("users.audit", {"id": user["id"]})["entries"]
        assert [(e["at"], e["actor"], e["field"], e["old"], e["new"]) for e in audit] == [
            ("2026-01-05T10:00:00Z", "app", "unsubscribed", False, True),
            (START, "admin", "", None, "Ada@Example.com"),
        ]
        assert (
            c.call("users.get", {"channel": channel, "email": "ADA@example.com"})["id"]
            == user["id"]
        )

    code, message = ctl(
        manual, "users.add", json.dumps({"channel": channel, "email": "ada@EXAMPLE.com"})
    )
    assert code == 1 and "conflict" in message and "already has the email" in message
    code, message = ctl(
        manual,
        "users.add",
        json.dumps({"channel": channel, "email": "b@example.com", "promo_tags": ["upsell"]}),
    )
    assert code == 1 and "'upsell'" in message
    code, message = ctl(manual, "users.get", json.dumps({"id": 999}))
    assert code == 1 and "no user with id 999" in message
    for method, params, needle in [
        ("users.get", {"channel": channel}, "give 'id', or 'channel' and 'email'"),
        ("users.get", {"channel": channel, "email": "nobody"}, "not an email address"),
        ("users.get", {"id": "1"}, "'id' must be a positive integer user id"),
        ("users.get", {"channel": 77, "email": "a@example.com"}, "no channel with id 77"),
        ("users.add", {"channel": 77, "email": "a@example.com"}, "no channel with id 77"),
        ("users.update", {"id": user["id"], "kuloo_id": "mine"}, "'kuloo_id' cannot be changed"),
        ("users.activity", {}, "'id' must be a positive integer user id"),
        ("users.activity", {"id": 999}, "no user with id 999"),
        ("users.list", {"channel": 77}, "no channel with id 77"),
        ("users.audit", {"id": user["id"], "limit": 0}, "'limit' must be an integer from 1 to 500"),
        ("users.audit", {"id": 999}, "no user with id 999"),
    ]:
        code, message = ctl(manual, method, json.dumps(params))
        assert code == 1 and needle in message, (method, params, message)

    # the KulooId and everything else survive a restart
    assert manual.stop() == 0
    os.unlink(manual.notify_path)
    again = daemon_factory(MANUAL).start()
    again.wait_for("READY=1")
    with again.client() as c:
        assert c.call("users.get", {"id": user["id"]}) == {**active, "unsubscribed": True}


def test_paging_a_channel_through_kuloo_ctl(manual):
    with manual.client() as c:
        channel = c.call("channels.create", {"name": "Acme", "sequential_tags": TAGS})["id"]
        for i in range(7):
            c.call(
                "users.add",
                {
                    "channel": channel,
                    "email": f"u{i}@example.com",
                    "frequency": "daily" if i % 2 else "weekly",
                },
            )
    seen, after = [], None
    while True:
        params = {"channel": channel, "limit": 2, "subscription": "weekly"}
        if after is not None:
            params["after"] = after
        code, page = ctl(manual, "users.list", json.dumps(params))
        assert code == 0, page
        assert page["total"] == 4
        seen += [u["email"] for u in page["users"]]
        after = page["next"]
        if after is None:
            break
    assert seen == ["u0@example.com", "u2@example.com", "u4@example.com", "u6@example.com"]
