"""Bounces end to end (issue 26): the daemon as a subprocess, sellsim over loopback HTTP,
aiosmtpd on loopback as the relay, a real Maildir as the bounce mailbox.

Accepted by the relay → a real Postfix DSN for that message (its VERP address) dropped into
the bounce Maildir → the user bounced → after a sync, the lead's Sync error in Sell says
``Email bounced: …`` → the email changed in Sell → the next sync clears both. An ARF report
→ unsubscribed in Sell. kill -9 between the effects and the removal → processed once.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from plugins.daemon_proc import eventually
from plugins.ports import smtp_controller

from kuloo_daemon.rules.bounces import VerpSigner
from sellsim.seeds import DEMO_TOKEN

from .test_bounce_mailbox import GARBAGE, arf_for, drop, files, sample, unknown
from .test_bounce_mailbox import VERP as VERP_SAMPLE

ROOT = Path(__file__).resolve().parents[2]
KEY = "e2e-bounces-signing-key-0123456789"
SIGNER = VerpSigner([KEY.encode()])
DOMAIN = "bounces.example"
TAGS = ["welcome", "onboarding", "upsell"]


class Relay:
    """aiosmtpd as the relay: accepts everything, keeps the envelopes."""

    def __init__(self) -> None:
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK queued"


@pytest.fixture
def relay():
    r = Relay()
    controller, r.port = smtp_controller(r)
    yield r
    controller.stop()


def config(root: Path, smtp_port: int) -> str:
    creds = root / "creds"
    creds.mkdir(exist_ok=True)
    (creds / "link-signing-key").write_text(KEY + "\n")
    shutil.copytree(ROOT / "config" / "articles", root / "articles" / "sample")
    for sub in ("tmp", "new", "cur"):  # the MTA's Maildir
        (root / "bounces" / sub).mkdir(parents=True)
    return textwrap.dedent(
        f"""\
        [clock]
        mode = "manual"
        start = "2026-01-05T09:00:00Z"
        [credentials]
        directory = "{creds}"
        [articles]
        root = "{root}/articles"
        [smtp]
        host = "127.0.0.1"
        port = {smtp_port}
        security = "none"
        timeout_seconds = 60
        [links]
        listen = "127.0.0.1:0"
        public_url = "https://links.kuloo.test"
        [sync]
        scheduled = false
        [bounces]
        domain = "{DOMAIN}"
        maildir = "{root}/bounces"
        poll_seconds = 1
        [metrics]
        listen = "127.0.0.1:0"
        """
    )


class Bed:
    def __init__(self, daemon, sim, relay, root: Path) -> None:
        self.d, self.sim, self.relay, self.root = daemon, sim, relay, root
        self.md = root / "bounces"
        self.channel = 0

    def call(self, method, params=None):
        with self.d.client() as c:
            return c.call(method, params or {})

    def lead(self, email: str) -> dict:
        return next(r for r in self.sim.records("lead") if r["email"] == email)

    def sync(self) -> None:
        run = self.call("sync.run", {"channel": self.channel})
        assert run["status"] in ("ok", "partial"), run

    def user(self, email: str) -> dict:
        return self.call("users.get", {"channel": self.channel, "email": email})

    def audit(self, user_id: int) -> list[dict]:
        return self.call("users.audit", {"id": user_id, "limit": 100})["entries"]


def start(daemon_factory, sellsim, relay, short_tmp, args=None) -> Bed:
    sellsim.set_options(rate_per_second=5000, rate_per_hour=10**9)
    root = Path(short_tmp)
    d = daemon_factory(
        config(root, relay.port),
        sell=f'base_url = "{sellsim.base_url}"\nrequests_per_second = 2000\n',
    )
    d.start(args)
    d.wait_for("READY=1")
    bed = Bed(d, sellsim, relay, root)
    doc = bed.call(
        "channels.create",
        {
            "name": "Kuloo Gardens",
            "plan": "pro",
            "sequential_tags": TAGS,
            "api_token": DEMO_TOKEN,
            "sender": "Kuloo Gardens <news@gardens.test>",
            "postal_address": "1 Allotment Road\nLeeds",
        },
    )
    assert doc["connection"]["status"] == "verified", doc
    bed.channel = doc["id"]
    assert bed.call("articles.import", {"channel": bed.channel, "path": "sample"})["imported"]
    return bed


def sent_to(bed: Bed, email: str) -> dict:
    """Sell lead → Kuloo user (sync) → the welcome email accepted by the relay."""
    bed.sim.create_record(
        "lead",
        {
            "first_name": "Ann",
            "last_name": "Lee",
            "email": email,
            "custom_fields": {"Promo": ["welcome"]},
        },
    )
    bed.sync()
    bed.call("delivery.run", {"channel": bed.channel})
    (entry,) = [
        e
        for e in bed.call("outbox.list", {"channel": bed.channel})["messages"]
        if e["email"] == email
    ]
    assert entry["state"] == "sent", entry
    (mail_from,) = [f for f, rcpts in bed.relay.envelopes if email in rcpts]
    user = bed.user(email)
    return {"user": user, "outbox": entry, "return_path": return_path(mail_from, user, entry)}


def return_path(mail_from: str, user: dict, entry: dict) -> str:
    """The VERP local part the message went out with: the relay's MAIL FROM once delivery
    sends ``b-<token>@<domain>`` (checked to name this user and message), else the one the
    daemon's key makes for them."""
    if mail_from.startswith("b-"):
        token = SIGNER.verify(mail_from)
        assert mail_from.endswith("@" + DOMAIN) and token is not None, mail_from
        assert (token.kuloo_id, token.outbox_id) == (user["kuloo_id"], entry["id"])
        return mail_from.partition("@")[0]
    return SIGNER.bounce(user["kuloo_id"], entry["id"])


def dsn(local: str) -> bytes:
    """The real Postfix DSN to a VERP return path (``local@domain``)."""
    return sample(VERP_SAMPLE, **{"b-c1d2e3f4.tok": local})


def bounced_entries(bed: Bed, user_id: int) -> list[dict]:
    return [e for e in bed.audit(user_id) if e["actor"] == "bounce"]


def test_a_dsn_bounces_the_user_in_both_systems_and_an_email_change_clears_it(
    daemon_factory, sellsim, relay, short_tmp
):
    bed = start(daemon_factory, sellsim, relay, short_tmp)
    sent = sent_to(bed, "gone@example.org")
    sent_to(bed, "fine@example.org")  # a bystander: the next sequence email reaches them
    user = sent["user"]
    drop(bed.md, dsn(sent["return_path"]))
    drop(bed.md, GARBAGE)

    eventually(lambda: files(bed.md) == [], what="the bounce mailbox emptied")
    assert unknown(bed.md) == [GARBAGE]
    (entry,) = eventually(lambda: bounced_entries(bed, user["id"]), what="the user bounced")
    assert "5.1.1" in entry["new"]
    bed.sync()
    field = bed.lead("gone@example.org")["custom_fields"].get("Sync error") or ""
    assert field.startswith("Email bounced: 5.1.1 "), field
    assert "(2026-01-05)" in field
    status = bed.call("status")["bounces"]
    assert status["mailbox"] == "maildir" and status["last_poll"]["ok"]
    # no email of any kind to a bounced address: three days on, only the bystander's next one
    before = len(bed.relay.envelopes)
    bed.call("clock.advance", {"seconds": 3 * 86400})
    bed.call("delivery.run", {"channel": bed.channel})
    later = [rcpts for _f, rcpts in bed.relay.envelopes[before:]]
    assert ["fine@example.org"] in later and all("gone@example.org" not in r for r in later)

    # the address is changed in Sell: the next sync clears the bounce and the field
    lead = bed.lead("gone@example.org")
    bed.sim.edit_record("lead", lead["id"], {"email": "ann.new@example.org"})
    bed.sync()
    fresh = bed.user("ann.new@example.org")
    assert fresh["id"] == user["id"] and fresh.get("bounce") is None
    cleared = [e for e in bed.audit(user["id"]) if e["field"] == "bounce" and not e["new"]]
    assert len(cleared) == 1, bed.audit(user["id"])
    bed.sync()  # the cleared field is pushed
    assert not bed.lead("ann.new@example.org")["custom_fields"].get("Sync error")


def test_an_arf_report_unsubscribes_the_user_in_sell(daemon_factory, sellsim, relay, short_tmp):
    bed = start(daemon_factory, sellsim, relay, short_tmp)
    user = sent_to(bed, "angry@example.org")["user"]
    drop(bed.md, arf_for_key(user["kuloo_id"]))
    eventually(lambda: bed.user("angry@example.org")["unsubscribed"], what="unsubscribed")
    assert [e["actor"] for e in bed.audit(user["id"]) if e["field"] == "unsubscribed"] == [
        "complaint"
    ]
    bed.sync()
    subscription = bed.lead("angry@example.org")["custom_fields"].get("Subscription")
    assert subscription == "unsubscribed"


def arf_for_key(kuloo_id: str) -> bytes:
    """The ARF sample with this daemon's key (the shared helper signs with another)."""
    raw = arf_for(kuloo_id).decode()
    from .test_bounce_mailbox import SIGNER as OTHER

    raw = raw.replace(OTHER.bounce(kuloo_id, 9), SIGNER.bounce(kuloo_id, 9))
    return raw.replace(OTHER.unsubscribe(kuloo_id), SIGNER.unsubscribe(kuloo_id)).encode()


# The daemon, with one fault planted from outside: its first removal of a bounce message
# kills it (SIGKILL) — after the message's effects were committed, before the file is gone.
KILL_AT_REMOVAL = """\
import os, signal, sys
from kuloo_daemon.delivery import inbox

def remove(self, key):
    os.kill(os.getpid(), signal.SIGKILL)

inbox.MaildirInbox.remove = remove
from kuloo_daemon.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_between_the_effects_and_the_removal_processes_the_bounce_once(
    daemon_factory, sellsim, relay, short_tmp
):
    root = Path(short_tmp)
    args = [sys.executable, "-c", KILL_AT_REMOVAL, "run", "--config", str(root / "kuloo.toml")]
    bed = start(daemon_factory, sellsim, relay, short_tmp, args)
    sent = sent_to(bed, "gone@example.org")
    user, outbox = sent["user"], sent["outbox"]
    drop(bed.md, dsn(sent["return_path"]))
    bed.d.proc.wait(60)
    assert bed.d.proc.returncode == -signal.SIGKILL
    assert len(files(bed.md)) == 1  # killed before the removal

    bed.d.start()  # the plain daemon
    bed.d.wait_for("READY=1")
    eventually(lambda: files(bed.md) == [], what="the message removed after the restart")
    assert unknown(bed.md) == []
    assert len(bounced_entries(bed, user["id"])) == 1  # one effect, not two
    events = sqlite3.connect(root / "state" / "kuloo.sqlite3").execute(
        "SELECT kind, user_id, outbox_id FROM bounce_event"
    )
    assert list(events) == [("hard", user["id"], outbox["id"])]  # one bounce event
    # the restarted daemon counts the message read again as a duplicate, not a second bounce
    ready = [json.loads(ln) for ln in bed.d.log().splitlines() if '"daemon ready"' in ln]
    scraped = httpx.get(f"{ready[-1]['metrics']}/metrics", timeout=10).text
    assert 'kuloo_sync_bounce_mailbox_messages_total{kind="duplicate"} 1.0' in scraped
    assert 'kuloo_sync_bounce_mailbox_messages_total{kind="hard"} 1.0' not in scraped
    assert 'kuloo_sync_email_bounces_total{kind="hard"} 0.0' in scraped
    # the killed poll never finished: the only poll that read anything found a duplicate
    reads = [
        json.loads(line)
        for line in bed.d.log().splitlines()
        if line.startswith("{") and '"bounce mailbox read"' in line
    ]
    assert [(r.get("duplicate"), r.get("hard")) for r in reads] == [(1, None)]
