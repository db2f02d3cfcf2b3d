"""The sync store's own plan-cap counter (``apply_batch``): in process, on a SQLite copy.

The pure selection is ``rules.caps`` (tests/rules/test_linking_caps.py); here the store's count
of links while it applies a batch: links already made, links made earlier in the same batch
(imports and links to existing users alike), never one more than the plan allows.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from plugins.stores import seed_sqlite

from kuloo_daemon.rules import caps
from kuloo_daemon.rules.texts import E_CAP
from kuloo_daemon.store import channels as channel_store
from kuloo_daemon.store import users as user_store
from kuloo_daemon.store.bridge import Store
from kuloo_daemon.store.models import SyncError
from kuloo_daemon.store.models import User as UserRow
from kuloo_daemon.store.sync import batch as sync_batch
from kuloo_daemon.store.sync.types import RecordIn
from kuloo_daemon.vocabulary import Actor, Plan, Source

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CAP = caps.cap_of(Plan.FREE)


@pytest.fixture
async def store(short_tmp, sqlite_template):
    async with Store.open(seed_sqlite(sqlite_template, f"{short_tmp}/s.sqlite3")) as s:
        yield s


async def free_channel(store) -> int:
    created = await store.run(channel_store.create, {"name": "Acme", "plan": "free"}, None, T0)
    return created.channel.id


def lead(n: int, email: str) -> RecordIn:
    return RecordIn("lead", 1000 + n, {"KulooId": None}, email, T0)


async def counts(store, channel: int) -> tuple[int, int]:
    """(users linked to a Sell record, plan-cap Sync errors)."""

    async def read():
        linked = await UserRow.filter(channel_id=channel, crm_id__not_isnull=True).count()
        refused = await SyncError.filter(channel_id=channel, code=E_CAP).count()
        return linked, refused

    return await store.run(read)


async def apply(store, channel: int, records: list[RecordIn]) -> None:
    await store.run(sync_batch.apply_batch, channel, records, [], None, T0)


async def test_new_records_are_imported_up_to_the_cap_and_no_further(store):
    """Planted bugs: the room check off by one (``linked <= cap``: one link too many); the
    count not kept while the batch imports (every record of the batch fits)."""
    assert CAP == 10
    ch = await free_channel(store)
    await apply(store, ch, [lead(n, f"n{n}@example.com") for n in range(CAP + 2)])
    assert await counts(store, ch) == (CAP, 2)
    await apply(store, ch, [lead(99, "late@example.com")])  # the count starts from the links made
    assert await counts(store, ch) == (CAP, 3)


async def test_links_to_existing_users_count_toward_the_cap_within_the_batch(store):
    """Planted bug: a link to an existing user not counted (``linked += 1`` only on import):
    the batch's import after it overshoots the cap."""
    ch = await free_channel(store)
    for n in range(CAP):
        await store.run(
            user_store.add,
            ch,
            {"email": f"u{n}@example.com", "source": Source.ADMIN},
            Actor.ADMIN,
            T0,
        )
    records = [lead(n, f"u{n}@example.com") for n in range(CAP)] + [lead(50, "new@example.com")]
    await apply(store, ch, records)
    assert await counts(store, ch) == (CAP, 1)


async def test_a_channel_at_its_cap_before_the_batch_has_no_room(store):
    """Planted bug: the links already in the store not counted when the batch starts (or
    counted one short)."""
    ch = await free_channel(store)
    await apply(store, ch, [lead(n, f"n{n}@example.com") for n in range(CAP - 1)])
    assert await counts(store, ch) == (CAP - 1, 0)
    await apply(store, ch, [lead(60, "fits@example.com"), lead(61, "over@example.com")])
    assert await counts(store, ch) == (CAP, 1)
