"""The sending side of bounces (issue 26; docs/delivery.md, "Bounces and complaints").

- With ``[bounces] domain``, MAIL FROM is the message's signed ``b-`` address (VERP), the
  From header is the channel's sender as before, and List-Unsubscribe carries the user's
  own ``u-`` mailto address (DKIM-covered); ``list_unsubscribe_mailto`` is then ignored,
  with a warning in check-config.
- The relay's own 5xx refusal of a recipient (at RCPT, or after DATA) makes the user
  bounced at once, with no DSN at all, with or without ``[bounces]``; a policy refusal
  (5.7.x) fails only that message; ten users refused alike in one batch are the relay's
  problem: none is marked.

Real aiosmtpd on loopback as the relay, a SQLite file, the manual clock.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import dkim
import pytest
from plugins.ports import smtp_controller

from kuloo_daemon import config as config_mod
from kuloo_daemon.rules.bounces import VerpKind, VerpSigner
from kuloo_daemon.store import users as user_store
from kuloo_daemon.store.models import AuditEntry
from kuloo_daemon.store.models import User as UserRow
from kuloo_daemon.vocabulary import OutboxState

from .conftest import SIGNING_KEY, Sink
from .test_dkim import dns_for, rsa_pem, signed_headers

BOUNCES = "bounces.gardens.test"
VERP = VerpSigner([SIGNING_KEY.encode()])
WELCOME = "Welcome to Kuloo Gardens"
DAY = 86400


@dataclass
class RefusingSink(Sink):
    """A relay with a reply of its own for some recipients: at RCPT, or after DATA."""

    at_rcpt: dict[str, str] = field(default_factory=dict)
    at_data: dict[str, str] = field(default_factory=dict)
    pipelining: bool = False  # offer PIPELINING (MAIL, RCPT and DATA in one write)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        return responses[:1] + ["250-PIPELINING"] + responses[1:] if self.pipelining else responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address in self.at_rcpt:
            return self.at_rcpt[address].replace("{rcpt}", address)
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        (rcpt,) = envelope.rcpt_tos
        if rcpt in self.at_data:
            return self.at_data[rcpt]
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelining"])
def relay(request):
    sink = RefusingSink(pipelining=request.param)
    controller, sink.port = smtp_controller(sink, enable_SMTPUTF8=False)
    yield sink
    controller.stop()


def bounces_section(root: Path) -> dict:
    return {"domain": BOUNCES, "maildir": str(root / "bounce-mail")}


def metric(env, name: str, labels: dict | None = None) -> float:
    return env.services.metrics.registry.get_sample_value(name, labels or {}) or 0.0


async def row_of(env, user_id: int) -> UserRow:
    async def get():
        return await UserRow.get(id=user_id)

    return await env.store.run(get)


async def audit_actors(env, user_id: int) -> list[tuple[str, str]]:
    async def get():
        return [(e.actor, e.field) for e in await AuditEntry.filter(user_id=user_id).order_by("id")]

    return await env.store.run(get)


# ----------------------------------------------------------------------------- return path


async def test_with_a_bounce_domain_mail_from_is_the_messages_verp_address(
    env_factory, smtp_sink, short_tmp
):
    """Planted bugs: MAIL FROM left as the sender; the token naming another message; the
    mailto left as the configured address; List-Unsubscribe not DKIM-signed."""
    pem = rsa_pem()
    async with env_factory(
        dkim={"domain": "gardens.test", "selector": "k2026"},
        bounces=bounces_section(Path(short_tmp)),
        delivery={"list_unsubscribe_mailto": "unsubscribe@gardens.test"},
    ) as env:
        (Path(env.services.config.credentials_dir()) / "dkim-private-key").write_text(pem)
        key = config_mod.dkim_key(env.services.config)
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        ids = {}
        for name in ("ann", "bob"):
            ids[name] = await env.user(ch, f"{name}@example.com", tags=["welcome"])
        await env.delivery.run(None)
        sent = {e.email: e for e in await env.outbox(ch, OutboxState.SENT.value)}
        assert sorted(sent) == ["ann@example.com", "bob@example.com"]
        assert len(smtp_sink.envelopes) == 2
        for (mail_from, (rcpt,)), msg, raw in zip(
            smtp_sink.envelopes, smtp_sink.messages, smtp_sink.raw, strict=True
        ):
            user = await env.store.run(user_store.get, ids[rcpt.split("@")[0]])
            local, _, domain = mail_from.partition("@")
            assert domain == BOUNCES and local.startswith("b-") and len(local) <= 64
            token = VERP.verify(mail_from)
            assert token is not None and token.kind == VerpKind.BOUNCE
            assert (token.kuloo_id, token.outbox_id) == (user.kuloo_id, sent[rcpt].id)
            # The From header never changes: DMARC aligns on it, with the DKIM domain.
            assert msg["From"] == "Kuloo Gardens <news@gardens.test>"
            one_click, mailto = (v.strip() for v in str(msg["List-Unsubscribe"]).split(","))
            assert re.fullmatch(r"<https://links\.kuloo\.test/u/[^>]+>", one_click)
            address = re.fullmatch(r"<mailto:([^>]+)>", mailto)[1]
            assert (
                address.endswith(f"@{BOUNCES}")
                and "unsubscribe@gardens.test" not in msg.as_string()
            )
            unsub = VERP.verify(address)
            assert unsub is not None and (unsub.kind, unsub.kuloo_id) == (
                VerpKind.UNSUBSCRIBE,
                user.kuloo_id,
            )
            assert "list-unsubscribe" in signed_headers(raw)
            assert dkim.verify(raw, dnsfunc=dns_for(key))
            forged = raw.replace(address.encode(), b"u-0-aaaaaaaaaaaaa@" + BOUNCES.encode())
            assert forged != raw and not dkim.verify(forged, dnsfunc=dns_for(key))


async def test_without_a_bounce_domain_mail_from_is_the_sender_and_the_mailto_as_configured(
    env_factory, smtp_sink
):
    async with env_factory(delivery={"list_unsubscribe_mailto": "unsubscribe@gardens.test"}) as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        await env.user(ch, "ann@example.com", tags=["welcome"])
        await env.delivery.run(None)
        ((mail_from, _),) = smtp_sink.envelopes
        assert mail_from == "news@gardens.test"
        (msg,) = smtp_sink.messages
        assert str(msg["List-Unsubscribe"]).endswith(
            ", <mailto:unsubscribe@gardens.test?subject=unsubscribe>"
        )
        assert "Return-Path" not in msg  # SMTP: the relay's MTA writes it at delivery


async def test_the_maildir_transport_writes_the_return_path_as_an_mta_would(env_factory, short_tmp):
    """Planted bug: the Maildir transport drops the envelope sender."""
    root = Path(short_tmp)
    async with env_factory(
        delivery={"transport": "maildir", "maildir": str(root / "out")},
        bounces=bounces_section(root),
    ) as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        await env.user(ch, "ann@example.com", tags=["welcome"])
        await env.delivery.run(None)
        (path,) = (root / "out" / "new").iterdir()
        first = path.read_bytes().split(b"\n", 1)[0].decode()
        return_path = re.fullmatch(r"Return-Path: <([^>]+)>", first)[1]
        (entry,) = await env.outbox(ch, OutboxState.SENT.value)
        token = VERP.verify(return_path)
        assert token is not None and token.outbox_id == entry.id


def test_check_config_warns_that_list_unsubscribe_mailto_is_ignored_with_bounces(tmp_path):
    """Planted bug: no warning (or one also without [bounces])."""
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "link-signing-key").write_text(SIGNING_KEY + "\n")
    base = (
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[control]\nsocket = "{tmp_path / "c.sock"}"\n'
        f'[credentials]\ndirectory = "{tmp_path / "creds"}"\n'
        f'[delivery]\ntransport = "maildir"\nmaildir = "{tmp_path / "out"}"\n'
        'list_unsubscribe_mailto = "unsubscribe@gardens.test"\n'
    )

    def check(text: str) -> subprocess.CompletedProcess:
        path = tmp_path / "kuloo.toml"
        path.write_text(text)
        return subprocess.run(
            [sys.executable, "-m", "kuloo_daemon.cli", "check-config", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    with_bounces = check(base + f'[bounces]\ndomain = "{BOUNCES}"\nmaildir = "bounce-mail"\n')
    assert with_bounces.returncode == 0 and ": OK (" in with_bounces.stdout
    assert "warning: delivery.list_unsubscribe_mailto: ignored because [bounces] domain is set" in (
        with_bounces.stderr
    )
    without = check(base)
    assert without.returncode == 0 and without.stderr == ""


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("with_domain", [True, False], ids=["bounces-domain", "no-domain"])
async def test_a_relay_answering_550_5_1_1_at_rcpt_bounces_the_user_with_no_dsn(
    env_factory, relay, short_tmp, with_domain
):
    """No DSN at all: the relay's own answer is enough. The user is bounced, gets nothing
    more, the event and the metric say so; the others go on. Planted bugs: the refusals
    never reach the store; the token names no user; no users.changed event."""
    relay.at_rcpt["gone@example.com"] = "550 5.1.1 <{rcpt}>: User unknown"
    extra = {"bounces": bounces_section(Path(short_tmp))} if with_domain else {}
    async with env_factory(smtp={"port": relay.port}, **extra) as env:
        events: list = []
        inner = env.services.publish
        env.services.publish = lambda e, d: (events.append((e, d)), inner(e, d))[-1]
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        gone = await env.user(ch, "gone@example.com", tags=["welcome"], frequency="disabled")
        kept = await env.user(ch, "kept@example.com", tags=["welcome"], frequency="disabled")
        await env.delivery.run(None)
        row = await row_of(env, gone)
        assert row.bounce_status == "5.1.1" and row.bounce_at == env.clock.now()
        assert "User unknown" in row.bounce_reason
        assert ("bounce", "bounce") in await audit_actors(env, gone)
        assert (await row_of(env, kept)).bounce_status == ""
        (failed,) = await env.outbox(ch, OutboxState.FAILED.value)
        assert failed.email == "gone@example.com" and "550 5.1.1" in failed.last_error
        assert ("users.changed", {"channel": ch, "ids": [gone]}) in events
        assert metric(env, "kuloo_sync_email_bounces_total", {"kind": "hard"}) == 1
        # No email of any kind afterwards: the sequence goes on for the other user only.
        await env.advance(3 * DAY)
        assert relay.subjects("kept@example.com")[0] == WELCOME
        assert len(relay.subjects("kept@example.com")) == 2
        assert [e.email for e in await env.outbox(ch) if e.email == "gone@example.com"] == [
            "gone@example.com"
        ]


@pytest.mark.parametrize(
    "where,reply,status",
    [
        ("data", "550 5.1.1 mailbox unavailable", "5.1.1"),
        ("rcpt", "550 Requested action not taken: mailbox unavailable", "550"),
        ("rcpt", "551 User not local", "551"),
        ("data", "550 Requested action not taken: mailbox unavailable", ""),
    ],
    ids=["data-5.1.1", "rcpt-bare-550", "rcpt-bare-551", "data-bare-550"],
)
async def test_a_hard_refusal_is_read_as_the_step_it_came_at(
    env_factory, relay, where, reply, status
):
    """A bare 550 is hard only at RCPT: after DATA it may be about the message. Planted
    bug: every refusal taken as at RCPT (or as after DATA)."""
    getattr(relay, f"at_{where}")["gone@example.com"] = reply
    async with env_factory(smtp={"port": relay.port}) as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        gone = await env.user(ch, "gone@example.com", tags=["welcome"])
        await env.delivery.run(None)
        assert [e.email for e in await env.outbox(ch, OutboxState.FAILED.value)] == [
            "gone@example.com"
        ]
        assert (await row_of(env, gone)).bounce_status == status


@pytest.mark.parametrize(
    "where,reply",
    [
        ("rcpt", "554 5.7.1 <{rcpt}>: Recipient address rejected: policy"),
        ("data", "554 5.7.1 Message rejected as spam"),
        ("rcpt", "550 5.4.1 Recipient address rejected: Access denied"),
        ("rcpt", "553 5.3.0 system not accepting network messages"),
    ],
    ids=["rcpt-5.7.1", "data-5.7.1", "rcpt-5.4.1", "rcpt-5.3.0"],
)
async def test_a_policy_or_system_refusal_fails_only_that_message(env_factory, relay, where, reply):
    """Planted bug: every 5xx counted as hard."""
    getattr(relay, f"at_{where}")["ann@example.com"] = reply
    async with env_factory(smtp={"port": relay.port}) as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        ann = await env.user(ch, "ann@example.com", tags=["welcome"])
        await env.delivery.run(None)
        (failed,) = await env.outbox(ch, OutboxState.FAILED.value)
        assert failed.email == "ann@example.com" and reply.split(" <")[0][:9] in failed.last_error
        assert (await row_of(env, ann)).bounce_status == ""
        assert metric(env, "kuloo_sync_email_bounces_total", {"kind": "hard"}) == 0


async def test_ten_users_refused_alike_in_one_batch_are_the_relays_problem(env_factory, relay):
    """The same refusal for ten users of one batch: none is bounced (each message fails).
    Planted bug: the refusals handed to the store one message at a time."""
    for i in range(10):
        relay.at_rcpt[f"u{i}@example.com"] = "550 5.1.1 <{rcpt}>: User unknown"
    relay.at_rcpt["solo@other.test"] = "550 5.1.1 <{rcpt}>: no mailbox here, sorry"
    async with env_factory(smtp={"port": relay.port}) as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        users = [await env.user(ch, f"u{i}@example.com", tags=["welcome"]) for i in range(10)]
        solo = await env.user(ch, "solo@other.test", tags=["welcome"])
        await env.delivery.run(None)
        assert len(await env.outbox(ch, OutboxState.FAILED.value)) == 11
        assert [(await row_of(env, u)).bounce_status for u in users] == [""] * 10
        assert (await row_of(env, solo)).bounce_status == "5.1.1"  # a different refusal


async def test_refusals_are_recorded_per_batch(env_factory, relay):
    """Ten alike spread over two batches (of 5) are five per batch: both halves bounced."""
    for i in range(10):
        relay.at_rcpt[f"u{i}@example.com"] = "550 5.1.1 <{rcpt}>: User unknown"
    async with env_factory(smtp={"port": relay.port}, delivery={"batch_size": 5}) as env:
        ch = await env.channel()
        await env.delivery.import_articles(ch, "sample")
        users = [await env.user(ch, f"u{i}@example.com", tags=["welcome"]) for i in range(10)]
        await env.delivery.run(None)  # a batch with nothing sent ends the pass
        await env.delivery.run(None)
        assert len(await env.outbox(ch, OutboxState.FAILED.value)) == 10
        assert [(await row_of(env, u)).bounce_status for u in users] == ["5.1.1"] * 10
