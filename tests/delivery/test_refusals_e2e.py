"""End to end: the daemon as a subprocess, aiosmtpd on loopback as the relay refusing one
recipient at RCPT (``550 5.1.1 User unknown``): that user is bounced with no DSN at all,
the other's mail leaves with the VERP return path (issue 26; docs/delivery.md, "Bounces
and complaints"). The start-up log says that ``list_unsubscribe_mailto`` is ignored."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from plugins.ports import smtp_controller

from kuloo_daemon.rules.bounces import VerpKind, VerpSigner

from .test_delivery_e2e import delivery_config

BOUNCES = "bounces.gardens.test"
KEY = "e2e-signing-key-0123456789abcdef"  # delivery_config's link-signing key


class RefusingRelay:
    def __init__(self) -> None:
        self.envelopes: list[tuple[str, list[str]]] = []
        self.rcpts: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        self.rcpts.append(address)
        if address == "gone@example.com":
            return "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


@pytest.fixture
def relay():
    r = RefusingRelay()
    controller, r.port = smtp_controller(r)
    yield r
    controller.stop()


def bounce_columns(database: Path, email: str) -> tuple[str, str]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return db.execute(
            "SELECT bounce_status, bounce_reason FROM kuloo_user WHERE email = ?", (email,)
        ).fetchone()


def test_a_relay_refusing_a_recipient_at_rcpt_bounces_that_user(daemon_factory, short_tmp, relay):
    extra = (
        delivery_config(short_tmp, relay.port)
        + f'[bounces]\ndomain = "{BOUNCES}"\nmaildir = "{short_tmp}/bounce-mail"\n'
        + '[delivery]\nlist_unsubscribe_mailto = "unsubscribe@gardens.test"\n'
    )
    d = daemon_factory(extra).start()
    d.wait_for("READY=1")
    warnings = [
        json.loads(line)
        for line in d.log().splitlines()
        if line.startswith("{") and "configuration warning" in line
    ]
    assert [w["problem"].split(":")[0] for w in warnings] == ["delivery.list_unsubscribe_mailto"]
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
        c.call("articles.import", {"channel": channel, "path": "sample"})
        for name in ("gone", "kept"):
            c.call(
                "users.add",
                {
                    "channel": channel,
                    "email": f"{name}@example.com",
                    "promo_tags": ["welcome"],
                    "frequency": "disabled",
                },
            )
        c.call("delivery.run", {"channel": channel})
        states = {
            m["email"]: m["state"] for m in c.call("outbox.list", {"channel": channel})["messages"]
        }
        assert states == {"gone@example.com": "failed", "kept@example.com": "sent"}
        gone = c.call("users.get", {"channel": channel, "email": "gone@example.com"})
        kept = c.call("users.get", {"channel": channel, "email": "kept@example.com"})
    database = d.root / "state" / "kuloo.sqlite3"
    status, reason = bounce_columns(database, "gone@example.com")
    assert status == "5.1.1" and "User unknown" in reason
    assert bounce_columns(database, "kept@example.com") == ("", "")
    if "bounce" in gone:  # the control API's field, once it is there
        assert gone["bounce"]["status"] == "5.1.1" and kept["bounce"] is None
    assert sorted(relay.rcpts) == ["gone@example.com", "kept@example.com"]  # no DSN needed
    ((mail_from, rcpts),) = relay.envelopes
    assert rcpts == ["kept@example.com"]
    token = VerpSigner([KEY.encode()]).verify(mail_from)
    assert mail_from.endswith(f"@{BOUNCES}") and token is not None
    assert (token.kind, token.kuloo_id) == (VerpKind.BOUNCE, kept["kuloo_id"])
    assert not (Path(short_tmp) / "bounce-mail" / "new").exists() or not any(
        (Path(short_tmp) / "bounce-mail" / "new").iterdir()
    )
