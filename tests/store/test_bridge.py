"""The trio -> tortoise bridge: one crossing per unit of work, clean cancellation."""

import asyncio
import random
import time
from datetime import UTC, datetime

import pytest
import trio
from plugins.stores import seed_sqlite
from tortoise.transactions import in_transaction

from kuloo_daemon.store.bridge import Store
from kuloo_daemon.store.models import Channel


async def _count() -> int:
    return await Channel.all().count()


async def _insert_then_hang(started_flag: list) -> None:
    async with in_transaction():
        await Channel.create(name="half-done")
        started_flag.append(True)
        await asyncio.sleep(3600)  # the caller will be cancelled here


@pytest.fixture
def seeded(short_tmp, sqlite_template):
    """``{short_tmp}/s.sqlite3`` as a copy of a migrated store: these tests are about the
    bridge, not migrating (test_pragmas_and_migrations_are_applied starts from nothing)."""
    seed_sqlite(sqlite_template, f"{short_tmp}/s.sqlite3")


async def test_cancelling_the_caller_mid_transaction_rolls_back(short_tmp, seeded):
    async with Store.open(f"{short_tmp}/s.sqlite3") as store:
        flag: list = []
        with trio.move_on_after(5) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.run, _insert_then_hang, flag)
                while not flag:  # noqa: ASYNC110 - set on the asyncio thread; polling is the honest wait
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught, "the cancelled unit of work did not unwind"
        assert flag == [True]
        assert await store.run(_count) == 0  # rolled back

        # and the store is still usable, transactions included
        async def make(name):
            async with in_transaction():
                return (await Channel.create(name=name)).id

        assert await store.run(make, "after") == 1
        assert await store.run(_count) == 1


async def test_concurrent_units_of_work_share_one_store(short_tmp, seeded):
    async with Store.open(f"{short_tmp}/s.sqlite3") as store:

        async def make(i):
            await Channel.create(name=f"c{i}")

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(store.run, make, i)
        assert await store.run(_count) == 50


async def test_errors_cross_back_with_their_type(short_tmp, seeded):
    async with Store.open(f"{short_tmp}/s.sqlite3") as store:

        async def boom():
            raise KeyError("from the loop side")

        with pytest.raises(KeyError, match="from the loop side"):
            await store.run(boom)
        assert await store.run(_count) == 0


async def test_exit_is_prompt_with_work_in_flight(short_tmp, seeded):
    flag: list = []
    with trio.CancelScope() as scope:
        async with Store.open(f"{short_tmp}/s.sqlite3") as store:
            # the deadline starts once the store is open: opening (migrations) is not the point
            scope.deadline = trio.current_time() + 0.5
            started = time.monotonic()
            await store.run(_insert_then_hang, flag)
    assert flag == [True]
    assert time.monotonic() - started < 5
    async with Store.open(f"{short_tmp}/s.sqlite3") as store:  # reopens; nothing half-written
        assert await store.run(_count) == 0


async def test_pragmas_and_migrations_are_applied(short_tmp):
    async with Store.open(f"{short_tmp}/s.sqlite3") as store:

        async def pragmas():
            from tortoise import connections

            conn = connections.get("default")
            return [
                (await conn.execute_query_dict(f"PRAGMA {name}"))[0]
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            ]

        journal, fks, busy = await store.run(pragmas)
    assert journal == {"journal_mode": "wal"}
    assert fks == {"foreign_keys": 1}
    assert list(busy.values()) == [5000]


async def test_cancelling_callers_at_random_points_never_wedges_the_store(short_tmp, seeded):
    """Cancellations landing anywhere in a transaction (its BEGIN included: tortoise used to
    keep the SQLite lock then) leave the store answering, and nothing half-written."""
    from kuloo_daemon.store import channels as channel_store

    now = datetime(2026, 1, 1, tzinfo=UTC)
    rng = random.Random(1)
    async with Store.open(f"{short_tmp}/s.sqlite3") as store:
        first = await store.run(channel_store.create, {"name": "one"}, None, now)
        created = 0
        for i in range(300):
            with trio.move_on_after(rng.random() * 0.01) as attempt:
                if i % 2:
                    await store.run(
                        channel_store.update,
                        first.channel.id,
                        {"postal_address": str(i)},
                        False,
                        None,
                        now,
                    )
                else:
                    await store.run(channel_store.create, {"name": f"n{i}"}, None, now)
                    created += 1
            with trio.move_on_after(10) as wedged:
                total = await store.run(_count)
            assert not wedged.cancelled_caught, (
                f"the store stopped answering after cancellation {i}"
            )
            assert attempt.cancelled_caught or i % 2 or total >= created + 1
        # every create either committed whole or not at all: names are unique and complete
        names = await store.run(
            lambda: Channel.all().values_list("name", flat=True)
        )  # a queryset is fine too
        assert len(names) == len(set(names)) and all(n == "one" or n.startswith("n") for n in names)


async def test_a_unit_of_work_that_fails_to_start_reports_its_error(short_tmp, seeded):
    def not_a_unit(required):
        return required

    async with Store.open(f"{short_tmp}/s.sqlite3") as store:
        with trio.fail_after(10), pytest.raises(TypeError):
            await store.run(not_a_unit)  # missing argument: raised on the loop side
        assert await store.run(_count) == 0
