"""store.erasure and the signup after an erasure, on a real SQLite file and a real
PostgreSQL database (``backend``; issue 27 item 3,
docs/operations.md): the tombstone, what goes, and a confirmation link older than the
erasure refused."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kuloo_daemon.rules.bounces import Bounce, Kind, VerpSigner
from kuloo_daemon.store import Invalid, NotFound, bounces, erasure, users
from kuloo_daemon.store import channels as channel_store
from kuloo_daemon.store.bridge import Store
from kuloo_daemon.store.models import AuditEntry, BounceEvent, ErasedUser, SyncError
from kuloo_daemon.vocabulary import Actor

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
KEY = b"the-erasure-key"
EMAIL = "erin@example.com"


@pytest.fixture
async def store(short_tmp, backend):
    location = backend.target if backend.postgres else f"{short_tmp}/s.sqlite3"
    async with Store.open(location) as s:
        yield s


async def setup(store) -> tuple[int, users.User]:
    created = await store.run(channel_store.create, {"name": "Acme"}, None, T0)
    cid = created.channel.id
    user = await store.run(
        users.add, cid, {"email": "Erin@Example.com", "first_name": "Erin"}, Actor.ADMIN, T0
    )
    return cid, user


async def _all(model, **filters):
    return await model.filter(**filters)


async def _sync_error(cid: int, user_id: int | None, email: str, error: str) -> None:
    await SyncError.create(
        channel_id=cid,
        user_id=user_id,
        email=email,
        code="duplicate",
        error=error,
        created_at=T0,
        updated_at=T0,
    )


async def _note(cid: int, user_id: int, note: str) -> None:
    await AuditEntry.create(
        channel_id=cid, user_id=user_id, at=T0, actor="sync", field="crm", note=note
    )


def test_sqlite_connections_delete_securely():
    from kuloo_daemon.store.bridge import tortoise_config

    assert (
        tortoise_config("x.sqlite3")["connections"]["default"]["credentials"]["secure_delete"]
        == "ON"
    )


async def test_erase_removes_the_user_their_values_and_errors_and_leaves_a_tombstone(store):
    cid, user = await setup(store)
    await store.run(users.update, user.id, {"first_name": "Erina"}, Actor.ADMIN, T0)
    other = await store.run(users.add, cid, {"email": "ozzy@example.com"}, Actor.ADMIN, T0)
    await store.run(users.update, other.id, {"first_name": "Ozzy"}, Actor.ADMIN, T0)
    await store.run(_note, cid, other.id, "lead 7 already synced with erin@example.com")
    await store.run(_sync_error, cid, user.id, "Erin@Example.com", "mine")
    await store.run(_sync_error, cid, None, "ERIN@example.com", "a record with their address")
    await store.run(
        _sync_error, cid, None, "x@example.com", "x: Erin@Example.com is already synced"
    )
    await store.run(_sync_error, cid, None, "y@example.com", "someone else's")
    with pytest.raises(Invalid):
        await store.run(erasure.erase, user.id, "erin@example.org", KEY, T0)
    with pytest.raises(NotFound):
        await store.run(erasure.erase, user.id + 99, EMAIL, KEY, T0)
    done = await store.run(
        erasure.erase, user.id, " ERIN@example.com", KEY, T0 + timedelta(hours=1)
    )
    assert (done.id, done.channel_id) == (user.id, cid)
    with pytest.raises(NotFound):
        await store.run(users.get, user.id)
    stones = await store.run(_all, ErasedUser)
    assert [(s.former_id, s.kuloo_id, s.channel_id) for s in stones] == [
        (user.id, user.kuloo_id, cid)
    ]
    assert stones[0].erased_at == T0 + timedelta(hours=1)
    audit = await store.run(_all, AuditEntry, user_id=None)
    assert audit and all(a.old is None and a.new is None for a in audit)
    assert [a.note for a in audit if a.note] == [f"user {user.id} erased"]
    others = await store.run(_all, AuditEntry, user_id=other.id)
    assert '"Ozzy"' in {a.new for a in others}  # another user's entries keep their values
    assert [a.note for a in others if "erin" in (a.note or "")] == []
    assert [e.error for e in await store.run(_all, SyncError)] == ["someone else's"]


async def test_a_signup_confirmed_after_the_erasure_needs_a_link_issued_after_it(store):
    cid, user = await setup(store)
    erased_at = T0 + timedelta(days=1)
    await store.run(erasure.erase, user.id, EMAIL, KEY, erased_at)
    older = erased_at - timedelta(minutes=5)
    with pytest.raises(users.ErasedAfter):
        await store.run(
            users.sign_up,
            cid,
            {"email": EMAIL},
            Actor.LINK,
            erased_at + timedelta(hours=1),
            older,
            KEY,
        )
    assert len(await store.run(_all, ErasedUser)) == 1  # the tombstone stands
    sub = await store.run(
        users.sign_up,
        cid,
        {"email": EMAIL},
        Actor.LINK,
        erased_at + timedelta(hours=1),
        erased_at + timedelta(minutes=1),
        KEY,
    )
    assert sub.created and sub.user.kuloo_id == user.kuloo_id  # the former KulooId back
    assert await store.run(_all, ErasedUser) == []


async def test_users_add_ends_the_tombstone_of_that_address_only(store):
    cid, user = await setup(store)
    other = await store.run(users.add, cid, {"email": "ozzy@example.com"}, Actor.ADMIN, T0)
    await store.run(erasure.erase, user.id, EMAIL, KEY, T0)
    await store.run(erasure.erase, other.id, "ozzy@example.com", KEY, T0)
    again = await store.run(users.add, cid, {"email": "ERIN@example.com"}, Actor.ADMIN, T0, KEY)
    assert again.kuloo_id == user.kuloo_id
    assert [s.former_id for s in await store.run(_all, ErasedUser)] == [other.id]


async def test_users_erase_is_refused_while_the_channels_sync_runs(services_config, short_tmp):
    from pathlib import Path

    from kuloo_daemon.control.context import Context
    from kuloo_daemon.control.protocol import ProtocolError
    from kuloo_daemon.control.user_methods import users_erase
    from kuloo_daemon.delivery.service import Delivery
    from kuloo_daemon.services import open_services
    from kuloo_daemon.sync import engine

    creds = Path(short_tmp) / "creds"
    creds.mkdir()
    (creds / "erasure-key").write_text("k" * 32)
    async with open_services(services_config(credentials={"directory": str(creds)})) as services:
        cid, user = await setup(services.store)
        context = Context(services, Delivery(services), "", lambda: 1)
        async with engine.channel_lock(services, cid):  # a sync run of the channel is under way
            with pytest.raises(ProtocolError) as busy:
                await users_erase(context, {"id": user.id, "confirm": EMAIL})
            assert busy.value.code == "conflict"
        with pytest.raises(ProtocolError) as bad:
            await users_erase(context, {"id": user.id, "confirm": ""})
        assert bad.value.code == "invalid_params"
        done = await users_erase(context, {"id": user.id, "confirm": EMAIL})
        assert done["erased"] is True and done["id"] == user.id


async def test_erase_deletes_the_users_bounce_events_and_their_words_leave_the_file(
    store, backend, short_tmp
):
    """Bounce events go with the user (the cascade), and so does a confirmation's bounce that
    names the address (no user row to cascade from); SQLite's secure_delete leaves no trace
    of the remote server's words in the file."""
    cid, user = await setup(store)
    other = await store.run(users.add, cid, {"email": "ozzy@example.com"}, Actor.ADMIN, T0)
    signer = VerpSigner([b"k" * 32])

    def token(local: str):
        found = signer.verify(local + "@bounces.example.com")
        assert found is not None
        return found

    words = "550 5.1.1 <Erin@Example.com>: Recipient unknown at quasar-mailhost-erin"
    taken = [
        Bounce(Kind.SOFT, "4.2.2", "mailbox full", token(signer.bounce(user.kuloo_id, 1))),
        Bounce(Kind.HARD, "5.1.1", words, token(signer.bounce(user.kuloo_id, 2))),
        # a confirmation email to the same address bounced: an event with no user
        Bounce(Kind.HARD, "5.1.1", words, token(signer.confirm(cid))),
        Bounce(Kind.HARD, "5.1.1", "550 unknown ozzy", token(signer.bounce(other.kuloo_id, 3))),
    ]
    for bounce in taken:
        await store.run(bounces.take, bounce, T0)
    assert len(await store.run(_all, BounceEvent)) == 4
    assert (await store.run(users.get, user.id)).bounce is not None
    if not backend.postgres:
        assert b"quasar-mailhost-erin" in _file_bytes(f"{short_tmp}/s.sqlite3")

    await store.run(erasure.erase, user.id, EMAIL, KEY, T0 + timedelta(hours=1))
    left = await store.run(_all, BounceEvent)
    assert [(e.user_id, e.reason) for e in left] == [(other.id, "550 unknown ozzy")]
    if not backend.postgres:
        raw = _file_bytes(f"{short_tmp}/s.sqlite3")
        assert b"quasar-mailhost-erin" not in raw and b"mailbox full" not in raw
        assert b"550 unknown ozzy" in raw  # the other user's event stays


def _file_bytes(path: str) -> bytes:
    """The SQLite file's bytes with the WAL checkpointed into it (and what the WAL holds)."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = Path(path + "-wal")
    return Path(path).read_bytes() + (wal.read_bytes() if wal.exists() else b"")
