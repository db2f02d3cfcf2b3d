"""The bounce mailbox (issue 26 items 2-4): a real Maildir on disk, real DSN and ARF samples
(tests/samples/dsn/README.md says where each came from), a real store (SQLite and
PostgreSQL). Each message is processed once and removed only after its effects are
committed; what nobody can read goes to ``.unknown``, never deleted; a mailbox that cannot
be read is retried."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from kuloo_daemon.delivery import bounces as bounces_mod
from kuloo_daemon.delivery.bounces import BounceMailbox
from kuloo_daemon.delivery.inbox import MaildirInbox
from kuloo_daemon.rules.bounces import VerpSigner
from kuloo_daemon.store import users as user_store
from kuloo_daemon.store.models import AuditEntry, BounceEvent, InboundMessage
from kuloo_daemon.store.models import User as UserRow

from .conftest import SIGNING_KEY

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "dsn"
DOMAIN = "bounces.example"
VERP = "verp-failed-5.1.1-to-b-c1d2e3f4.tok_bounces.example.eml"
SIGNER = VerpSigner([SIGNING_KEY.encode()])
GARBAGE = b"\x00\xff not mail at all \r\n\r\n\x8f"


def sample(name: str, **swap: str) -> bytes:
    text = (SAMPLES / name).read_text()
    for old, new in swap.items():
        text = text.replace(old, new)
    return text.encode()


def dsn_for(kuloo_id: str, outbox_id: int = 7) -> bytes:
    """The real Postfix DSN to a VERP return path, for this user's message."""
    return sample(VERP, **{"b-c1d2e3f4.tok": SIGNER.bounce(kuloo_id, outbox_id)})


def arf_for(kuloo_id: str) -> bytes:
    return sample(
        "arf-abuse.synthetic.eml",
        **{"@@B@@": SIGNER.bounce(kuloo_id, 9), "@@U@@": SIGNER.unsubscribe(kuloo_id)},
    )


def mailto_for(kuloo_id: str) -> bytes:
    return (
        f"From: reader@mailbox.example\r\nTo: {SIGNER.unsubscribe(kuloo_id)}@{DOMAIN}\r\n"
        "Subject: unsubscribe\r\nMessage-ID: <m1@mailbox.example>\r\n\r\nplease\r\n"
    ).encode()


_SEQ = iter(range(10**9))


def drop(md: Path, raw: bytes, *, cur: bool = False) -> str:
    """Deliver ``raw`` as an MTA does (written in tmp/, renamed into new/); ``cur``: as a
    mail client left it after reading (cur/, with its flags)."""
    for sub in ("tmp", "new", "cur"):
        (md / sub).mkdir(parents=True, exist_ok=True)
    name = f"{time.time():.6f}.M{next(_SEQ)}P{os.getpid()}.kuloo-test"
    (md / "tmp" / name).write_bytes(raw)
    target = md / "cur" / f"{name}:2,S" if cur else md / "new" / name
    os.rename(md / "tmp" / name, target)
    return name


def files(md: Path) -> list[str]:
    return sorted(p.name for sub in ("new", "cur") for p in (md / sub).iterdir())


def unknown(md: Path) -> list[bytes]:
    folder = md / ".unknown"
    if not folder.exists():
        return []
    return sorted(p.read_bytes() for sub in ("new", "cur") for p in (folder / sub).iterdir())


def heard(services, kind: str) -> float:
    value = services.metrics.registry.get_sample_value(
        "kuloo_sync_bounce_mailbox_messages_total", {"kind": kind}
    )
    return value or 0.0


async def db(env, make):
    async def run():
        return await make()

    return await env.store.run(run)


def config_for(md: Path) -> dict:
    return {"bounces": {"domain": DOMAIN, "maildir": str(md), "poll_seconds": 1}}


@pytest.fixture
def delivery_backend(backend):
    """Every test here runs on SQLite and on PostgreSQL (process-once is the store's unique
    digest, committed with the effects)."""
    return backend


class Published(list):
    def __call__(self, event, data):
        self.append((event, data))


@pytest.fixture
async def bed(env_factory, short_tmp):
    md = Path(short_tmp) / "bounces"
    async with env_factory(**config_for(md)) as env:
        events = Published()
        inner = env.services.publish

        def publish(event, data):
            events(event, data)
            inner(event, data)

        env.services.publish = publish
        env.md, env.events = md, events
        yield env


async def _kuloo_id(env, user_id: int) -> str:
    return (await env.store.run(user_store.get, user_id)).kuloo_id


async def test_a_mixed_maildir_acts_on_each_message_once_and_keeps_the_unknown(bed):
    env = bed
    ch = await env.channel()
    gone = await env.user(ch, "gone@example.org")
    complainer = await env.user(ch, "angry@example.org")
    leaver = await env.user(ch, "leaver@example.org")
    # a DSN with no token names no one, whatever address it quotes (anyone can write one)
    by_address = await env.user(ch, "gone.user@remote550.example")
    busy = await env.user(ch, "busy.user@remote450.example")
    bystander = await env.user(ch, "fine@example.org")
    drop(env.md, dsn_for(await _kuloo_id(env, gone)))
    drop(env.md, arf_for(await _kuloo_id(env, complainer)), cur=True)
    drop(env.md, mailto_for(await _kuloo_id(env, leaver)))
    no_token = sample("failed-5.1.1-gone.user_remote550.example.eml")
    drop(env.md, no_token)
    drop(env.md, sample("delayed-4.2.1-busy.user_remote450.example.eml"))
    policy = sample("failed-5.7.1-third_refuses.example.eml")  # no token either
    drop(env.md, policy)
    drop(env.md, GARBAGE, cur=True)
    assert len(files(env.md)) == 7

    poll = await BounceMailbox(env.services).poll()

    assert poll.ok and poll.error == ""
    assert dict(poll.counts) == {
        "hard": 1,
        "complaint": 1,
        "unsubscribe": 1,
        "delayed": 1,
        "unknown": 3,
    }
    assert files(env.md) == []  # every message handled: removed or set aside
    assert sorted(unknown(env.md)) == sorted([GARBAGE, no_token, policy])  # never deleted
    rows = {r.id: r for r in await db(env, lambda: UserRow.filter(channel_id=ch))}
    assert rows[gone].bounce_status == "5.1.1" and "User unknown" in rows[gone].bounce_reason
    assert rows[by_address].bounce_status == ""
    assert rows[complainer].unsubscribed and not rows[complainer].bounce_status
    assert rows[leaver].unsubscribed and not rows[leaver].bounce_status
    for quiet in (busy, bystander, by_address):
        assert not rows[quiet].bounce_status and not rows[quiet].unsubscribed
    # one users.changed for the poll, naming the users it changed
    changes = [d for e, d in env.events if e == "users.changed"]
    assert changes == [{"channel": ch, "ids": sorted([gone, complainer, leaver])}]
    actors = await db(
        env, lambda: AuditEntry.filter(user__channel_id=ch).values_list("user_id", "actor")
    )
    assert (gone, "bounce") in actors and (complainer, "complaint") in actors
    assert (leaver, "link") in actors
    assert heard(env.services, "hard") == 1 and heard(env.services, "unknown") == 3
    assert await db(env, lambda: InboundMessage.all().count()) == 7


class RemovalFails(MaildirInbox):
    """The crash between the commit and the removal, in process: the removal raises."""

    def remove(self, key: str) -> None:
        raise PermissionError(13, "Permission denied")


async def test_a_failed_removal_reads_the_message_again_with_no_second_effect(bed):
    env = bed
    ch = await env.channel()
    gone = await env.user(ch, "gone@example.org")
    drop(env.md, dsn_for(await _kuloo_id(env, gone)))

    first = await BounceMailbox(env.services, lambda: RemovalFails(str(env.md))).poll()
    assert first.counts == {"hard": 1} and not first.ok and "Permission denied" in first.error
    assert len(files(env.md)) == 1  # still there: its effects are committed, not its removal

    again = await BounceMailbox(env.services).poll()
    assert again.ok and again.counts == {"duplicate": 1}
    assert files(env.md) == [] and unknown(env.md) == []
    assert await db(env, lambda: BounceEvent.filter(user_id=gone).count()) == 1
    entries = await db(env, lambda: AuditEntry.filter(user_id=gone, actor="bounce").count())
    assert entries == 1
    assert heard(env.services, "hard") == 1 and heard(env.services, "duplicate") == 1
    changes = [d for e, d in env.events if e == "users.changed"]
    assert changes == [{"channel": ch, "ids": [gone]}]  # the second poll changed nobody


async def test_an_unknown_message_read_again_still_goes_to_unknown(bed):
    env = bed
    drop(env.md, GARBAGE)

    class SetAsideFails(MaildirInbox):
        def set_aside(self, key: str) -> None:
            raise OSError(28, "No space left on device")

    first = await BounceMailbox(env.services, lambda: SetAsideFails(str(env.md))).poll()
    assert first.counts == {"unknown": 1} and len(files(env.md)) == 1
    again = await BounceMailbox(env.services).poll()
    assert again.counts == {"duplicate": 1}
    assert files(env.md) == [] and unknown(env.md) == [GARBAGE]  # kept, not deleted


async def test_an_unreadable_mailbox_is_reported_and_tried_again(bed):
    env = bed
    job = BounceMailbox(env.services)
    with capture_logs() as logs:  # whatever stream an earlier test configured logging to
        missing = await job.poll()
        assert not missing.ok and str(env.md) in missing.error
        assert not (await job.poll()).ok  # the same cause again: logged once, not every poll
    warned = [e for e in logs if e["log_level"] == "warning" and "mailbox unreadable" in e["event"]]
    assert len(warned) == 1 and "no Maildir at" in warned[0]["reason"]
    assert env.md.exists() is False  # the daemon never creates the MTA's Maildir
    env.md.mkdir()
    half = await job.poll()  # a folder, but not a Maildir
    assert not half.ok and "not a Maildir" in half.error
    ch = await env.channel()
    gone = await env.user(ch, "gone@example.org")
    drop(env.md, dsn_for(await _kuloo_id(env, gone)))
    with capture_logs() as logs:
        fixed = await job.poll()
    assert fixed.ok and fixed.counts == {"hard": 1}
    assert any(e["event"] == "bounce mailbox readable again" for e in logs)
    view = job.view()
    assert view is not None and view["last_poll"]["ok"] and view["mailbox"] == "maildir"
    assert view["last_poll"]["messages"] == {"hard": 1}


async def test_a_message_too_big_to_be_a_bounce_goes_to_unknown_unread(bed, monkeypatch):
    env = bed
    monkeypatch.setattr(bounces_mod, "MAX_MESSAGE_BYTES", 4096)
    ch = await env.channel()
    gone = await env.user(ch, "gone@example.org")
    big = dsn_for(await _kuloo_id(env, gone)) + b"x" * 5000
    drop(env.md, big)
    reads: list[int] = []

    class Counting(MaildirInbox):
        def read(self, key, max_bytes):
            raw = super().read(key, max_bytes)
            reads.append(len(raw) if raw is not None else -1)
            return raw

    poll = await BounceMailbox(env.services, lambda: Counting(str(env.md))).poll()
    assert poll.counts == {"unknown": 1} and reads == [-1]  # never read into memory
    assert files(env.md) == [] and unknown(env.md) == [big]
    row = await db(env, lambda: UserRow.get(id=gone))
    assert not row.bounce_status  # a message nobody read does nothing
    assert await db(env, lambda: InboundMessage.all().count()) == 0


async def test_a_large_maildir_is_read_a_bounded_batch_at_a_time(bed, monkeypatch):
    env = bed
    monkeypatch.setattr(bounces_mod, "READ_COUNT", 3)
    ch = await env.channel()
    ids = [await env.user(ch, f"u{i}@example.org") for i in range(10)]
    for uid in ids:
        drop(env.md, dsn_for(await _kuloo_id(env, uid), outbox_id=uid))
    held: list[int] = []
    outstanding: set[str] = set()

    class Watching(MaildirInbox):
        def read(self, key, max_bytes):
            outstanding.add(key)
            held.append(len(outstanding))
            return super().read(key, max_bytes)

        def remove(self, key):
            outstanding.discard(key)
            super().remove(key)

    poll = await BounceMailbox(env.services, lambda: Watching(str(env.md))).poll()
    assert poll.counts == {"hard": 10} and files(env.md) == []
    assert max(held) == 3  # never more than a batch read and not yet done with
    rows = await db(env, lambda: UserRow.filter(id__in=ids, bounce_status="5.1.1").count())
    assert rows == 10


async def test_the_poll_job_runs_only_when_bounces_are_set(env_factory, short_tmp):
    async with env_factory(sub="plain") as env:
        job = BounceMailbox(env.services)
        assert job.jobs() == [] and job.view() is None
