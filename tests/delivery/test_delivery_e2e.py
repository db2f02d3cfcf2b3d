"""Delivery end to end: the daemon as a subprocess, a real SMTP server, the manual clock.

The hard promise: a crash (kill -9) after the SMTP server accepted a message and before
the daemon recorded it leaves the entry ``uncertain``, and no second copy ever arrives
on its own; the admin decides with ``outbox.resolve``.
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import signal
from pathlib import Path

import pytest
from plugins.daemon_proc import eventually
from plugins.ports import smtp_controller

from kuloo_daemon.control.client import ControlError

ROOT = Path(__file__).resolve().parents[2]
START = "2026-01-05T09:00:00Z"
DAY = 86400


class Sink:
    def __init__(self) -> None:
        self.messages: list = []
        self.on_data = None

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        if self.on_data is not None:
            self.on_data()
        return "250 OK"

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]


@pytest.fixture
def sink():
    s = Sink()
    controller, s.port = smtp_controller(s)
    yield s
    controller.stop()


def delivery_config(root: str, smtp_port: int) -> str:
    creds = Path(root) / "creds"
    creds.mkdir(exist_ok=True)
    (creds / "link-signing-key").write_text("e2e-signing-key-0123456789abcdef\n")
    shutil.copytree(ROOT / "config" / "articles", Path(root) / "articles" / "sample")
    return (
        f'[clock]\nmode = "manual"\nstart = "{START}"\n'
        f'[credentials]\ndirectory = "{creds}"\n'
        f'[articles]\nroot = "{root}/articles"\n'
        # A wall-time budget that a loaded machine could exhaust, making a slow
        # handover look like a failure: generous (the tests wait on what arrives).
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\n'
        "timeout_seconds = 60\n"
        f'[links]\nlisten = "127.0.0.1:0"\npublic_url = "https://links.kuloo.test"\n'
    )


def test_kill_9_after_smtp_acceptance_leaves_uncertain_and_never_sends_twice(
    daemon_factory, short_tmp, sink
):
    d = daemon_factory(delivery_config(short_tmp, sink.port)).start()
    d.wait_for("READY=1")
    with d.client() as c:
        channel = c.call(
            "channels.create",
            {
                "name": "Kuloo Gardens",
                "sender": "News <news@gardens.test>",
                "postal_address": "1 Allotment Road",
                "sequential_tags": ["welcome", "onboarding"],
            },
        )["id"]
        report = c.call("articles.import", {"channel": channel, "path": "sample"})
        assert report["imported"] == 5
        # The SMTP server kills the daemon the moment it has accepted the message: before the
        # daemon hears the 250, let alone records it. The pass runs within a tick of the new
        # user, or at delivery.run, whichever comes first.
        sink.on_data = lambda: os.kill(d.proc.pid, signal.SIGKILL)
        with pytest.raises((ControlError, OSError, ConnectionError)):
            c.call(
                "users.add",
                {
                    "channel": channel,
                    "email": "ann@example.com",
                    "promo_tags": ["welcome"],
                    "frequency": "disabled",
                },
            )
            c.call("delivery.run", {"channel": channel})
    d.proc.wait(10)
    assert d.proc.returncode == -signal.SIGKILL
    assert sink.subjects() == ["Welcome to Kuloo Gardens"]  # the server accepted it
    sink.on_data = None

    d.start()
    d.wait_for("READY=1")
    with d.client() as c:
        (user,) = c.call("users.list", {"channel": channel})["users"]
        entries = c.call("outbox.list", {"channel": channel})["messages"]
        assert [(e["state"], e["email"]) for e in entries] == [("uncertain", "ann@example.com")]
        assert c.call("delivery.run", {}) == {"queued": 0, "sent": 0, "failed": 0, "uncertain": 0}
        # Business time passes; the scheduler runs delivery on its own: still no second copy,
        # and the sequence waits for the admin's decision rather than guessing.
        moved = c.call("clock.advance", {"seconds": 3 * DAY})
        assert "delivery" in moved["ran"]
        assert sink.subjects() == ["Welcome to Kuloo Gardens"]
        progress = c.call("users.progress", {"id": user["id"]})
        assert progress["sent"] == [] and progress["next"]["title"] == "Welcome to Kuloo Gardens"
        # The admin checked: it did arrive.
        resolved = c.call("outbox.resolve", {"id": entries[0]["id"], "as": "sent"})
        assert resolved["state"] == "sent"
        with pytest.raises(ControlError) as bad:
            c.call("outbox.resolve", {"id": entries[0]["id"], "as": "resend"})
        assert bad.value.code == "conflict"
        # The sequence goes on: the next article was due 2 days after the welcome (long past).
        # The resolve made the user due, so a pass within a tick may send it before this one.
        c.call("delivery.run", {"channel": channel})
        eventually(lambda: len(sink.subjects()) == 2, what="the second email")
        assert sink.subjects() == ["Welcome to Kuloo Gardens", "Five tools worth buying"]
        progress = c.call("users.progress", {"id": user["id"]})
        assert [s["title"] for s in progress["sent"]] == [
            "Welcome to Kuloo Gardens",
            "Five tools worth buying",
        ]
        assert progress["next"] is None
        # The preview is the exact message that user gets.
        articles = c.call("articles.list", {"channel": channel})["articles"]
        tools = next(a for a in articles if a["key"] == "welcome-2")
        preview = c.call("articles.preview", {"id": tools["id"], "user": user["id"]})
        assert preview["subject"] == "Five tools worth buying"
        assert preview["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert preview["headers"]["To"] == "ann@example.com"
        assert "1 Allotment Road" in preview["text"] and preview["size_bytes"] > 1000
    log = d.log()
    assert "e2e-signing-key" not in log


def test_the_scheduler_sends_on_its_own_as_business_time_passes(daemon_factory, short_tmp, sink):
    d = daemon_factory(delivery_config(short_tmp, sink.port)).start()
    d.wait_for("READY=1")
    with d.client() as c:
        channel = c.call(
            "channels.create",
            {
                "name": "Kuloo Gardens",
                "sender": "News <news@gardens.test>",
                "sequential_tags": ["welcome", "onboarding"],
            },
        )["id"]
        c.call("articles.import", {"channel": channel, "path": "sample"})
        c.call(
            "users.add",
            {
                "channel": channel,
                "email": "bo@example.com",
                "promo_tags": ["welcome", "onboarding"],
                "frequency": "disabled",
            },
        )
        # A new user is noticed within a tick (not on business time): the welcome is due now.
        # Each step waits for what it expects to arrive, not for a guessed time.
        assert c.call("delivery.run", {"channel": channel})["queued"] in (0, 1)
        eventually(lambda: len(sink.subjects()) == 1, what="the welcome")
        assert sink.subjects() == ["Welcome to Kuloo Gardens"]
        moved = c.call("clock.advance", {"seconds": DAY})
        assert "delivery" in moved["ran"]
        eventually(lambda: len(sink.subjects()) == 2, what="the second email")
        assert sink.subjects() == ["Welcome to Kuloo Gardens", "Plan your beds in one afternoon"]
        c.call("clock.advance", {"seconds": 2 * DAY})
        eventually(lambda: len(sink.subjects()) == 3, what="the third email")
        assert sink.subjects()[-1] == "Five tools worth buying"

        def all_sent():
            sent = c.call("outbox.list", {"channel": channel, "state": "sent"})["messages"]
            return sent if len(sent) == 3 else None

        sent = eventually(all_sent, what="three messages recorded as sent")
        assert len({m["message_id"] for m in sent}) == 3
        assert len(sink.subjects()) == 3  # and nothing more arrived meanwhile
        assert [str(m["Message-ID"]) for m in sink.messages] == [m["message_id"] for m in sent]
