"""The bounce mailbox over IMAP (issue 26 item 2, ``[bounces] imap_url``): a real IMAP server
on loopback (pymap behind implicit TLS, tests/plugins/imap_server.py), the daemon's own
configuration path (the URL, the ``bounces-password`` credential, the test CA trusted
through ``[bounces] ca_file``), a real SQLite store."""

from __future__ import annotations

import imaplib
import logging
from pathlib import Path

import pytest
from plugins.imap_server import run_imap_server
from structlog.testing import capture_logs

from kuloo_daemon.delivery import bounces as bounces_mod
from kuloo_daemon.delivery.bounces import BounceMailbox
from kuloo_daemon.delivery.inbox import ImapInbox, default_context
from kuloo_daemon.store.models import AuditEntry, BounceEvent
from kuloo_daemon.store.models import User as UserRow

from .test_bounce_mailbox import GARBAGE, _kuloo_id, arf_for, db, dsn_for


@pytest.fixture(params=["move", "copy"])
def imap(request, short_tmp):
    """The server (with MOVE, or without: COPY + \\Deleted + EXPUNGE), its CA trusted the
    way an operator trusts a private CA: ``[bounces] ca_file``."""
    gen = run_imap_server(no_move=request.param == "copy")
    server = next(gen)
    server.ca_file = Path(short_tmp) / "imap-ca.pem"
    server.ca.cert_pem.write_to_path(str(server.ca_file))
    yield server
    gen.close()


def _config(server, ca_file: str | Path | None = None) -> dict:
    """``ca_file`` None: the fixture's CA; "": the system's store."""
    ca = ca_file if ca_file is not None else getattr(server, "ca_file", "")
    return {
        "bounces": {
            "domain": "bounces.example",
            "imap_url": f"imaps://{server.user}@{server.host}:{server.port}/INBOX",
            "ca_file": str(ca),
        }
    }


def _password(env, value: str) -> None:
    Path(env.services.config.credentials_dir(), "bounces-password").write_text(value + "\n")


async def test_imap_messages_are_acted_on_then_deleted_or_moved_to_unknown(imap, env_factory):
    async with env_factory(**_config(imap)) as env:
        _password(env, imap.password)
        ch = await env.channel()
        gone = await env.user(ch, "gone@example.org")
        angry = await env.user(ch, "angry@example.org")
        imap.append(dsn_for(await _kuloo_id(env, gone)))
        imap.append(arf_for(await _kuloo_id(env, angry)))
        imap.append(GARBAGE)

        poll = await BounceMailbox(env.services).poll()

        assert poll.ok, poll.error
        assert poll.counts == {"hard": 1, "complaint": 1, "unknown": 1}
        assert imap.messages("INBOX") == []
        assert imap.messages("unknown") == [GARBAGE]
        rows = {r.id: r for r in await db(env, lambda: UserRow.filter(channel_id=ch))}
        assert rows[gone].bounce_status == "5.1.1" and rows[angry].unsubscribed


async def test_an_imap_removal_that_fails_reads_the_message_again_once(imap, env_factory):
    async with env_factory(**_config(imap)) as env:
        _password(env, imap.password)
        ch = await env.channel()
        gone = await env.user(ch, "gone@example.org")
        imap.append(dsn_for(await _kuloo_id(env, gone)))
        url = env.services.config["bounces.imap_url"]
        from kuloo_daemon.config import parse_imap_url

        class Dropped(ImapInbox):
            def remove(self, key):  # the connection drops after the commit
                raise OSError(104, "Connection reset by peer")

        def broken():
            return Dropped(
                parse_imap_url(url),
                lambda: env.services.config.credential("bounces_password"),
                context=default_context(env.services.config["bounces.ca_file"]),
            )

        first = await BounceMailbox(env.services, broken).poll()
        assert first.counts == {"hard": 1} and len(imap.messages()) == 1
        again = await BounceMailbox(env.services).poll()
        assert again.ok and again.counts == {"duplicate": 1} and imap.messages() == []
        assert await db(env, lambda: BounceEvent.filter(user_id=gone).count()) == 1
        assert await db(env, lambda: AuditEntry.filter(user_id=gone, actor="bounce").count()) == 1


@pytest.mark.parametrize("imap", ["move"], indirect=True)
async def test_a_refused_imap_login_is_logged_without_the_password(imap, env_factory, caplog):
    caplog.set_level(logging.DEBUG)
    async with env_factory(**_config(imap)) as env:
        _password(env, "the-wrong-password-42")
        job = BounceMailbox(env.services)
        with capture_logs() as events:  # ours, whatever stream logging was configured to
            poll = await job.poll()
        assert not poll.ok and "refused the login" in poll.error
        assert "the-wrong-password-42" not in poll.error
        ours = [r.getMessage() for r in caplog.records if not r.name.startswith("pymap")]
        logged = "\n".join(ours + [repr(e) for e in events])
        assert "bounce mailbox unreadable" in logged and "refused the login" in logged
        assert "the-wrong-password-42" not in logged  # the server's own debug log aside
        _password(env, imap.password)  # fixed: the next poll reads it again
        assert (await job.poll()).ok


@pytest.mark.parametrize("imap", ["move"], indirect=True)
async def test_an_untrusted_imap_certificate_is_refused(imap, env_factory):
    async with env_factory(**_config(imap, ca_file="")) as env:  # the system's store
        _password(env, imap.password)
        poll = await BounceMailbox(env.services).poll()
        assert not poll.ok and "TLS" in poll.error and "CERTIFICATE_VERIFY_FAILED" in poll.error


async def test_an_imap_certificate_for_another_name_is_refused(env_factory, short_tmp):
    gen = run_imap_server(cert_host="imap.elsewhere.example")
    server = next(gen)
    try:
        ca = Path(short_tmp) / "ca.pem"
        server.ca.cert_pem.write_to_path(str(ca))
        async with env_factory(**_config(server, ca_file=ca)) as env:
            _password(env, server.password)
            poll = await BounceMailbox(env.services).poll()
            assert not poll.ok and "TLS" in poll.error
    finally:
        gen.close()


@pytest.mark.parametrize("imap", ["copy"], indirect=True)
async def test_a_huge_imap_message_is_moved_to_unknown_unread(imap, env_factory, monkeypatch):
    monkeypatch.setattr(bounces_mod, "MAX_MESSAGE_BYTES", 4096)
    fetched: list[str] = []
    real_uid = imaplib.IMAP4.uid

    def uid(self, command, *args):
        if command.upper() == "FETCH":
            fetched.append(args[-1])
        return real_uid(self, command, *args)

    monkeypatch.setattr(imaplib.IMAP4, "uid", uid)
    async with env_factory(**_config(imap)) as env:
        _password(env, imap.password)
        big = b"From: a@example.org\r\nSubject: big\r\n\r\n" + b"x" * 6000 + b"\r\n"
        imap.append(big)
        poll = await BounceMailbox(env.services).poll()
        assert poll.counts == {"unknown": 1}
        assert fetched == ["(RFC822.SIZE)"]  # its size asked, its body never fetched
        assert imap.messages("INBOX") == [] and imap.messages("unknown") == [big]


@pytest.mark.parametrize("imap", ["move"], indirect=True)
async def test_a_ca_file_gone_since_start_up_is_a_mailbox_error(imap, env_factory):
    """Planted bug: the missing bundle raised out of the poll as a defect."""
    async with env_factory(**_config(imap)) as env:
        _password(env, imap.password)
        imap.ca_file.unlink()
        poll = await BounceMailbox(env.services).poll()
        assert not poll.ok and poll.error.startswith("bounces.ca_file: ")
