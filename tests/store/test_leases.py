"""Leases on a real PostgreSQL database (``store.leases``, ``services.Leases``): one holder
per channel and kind, renewal, release, takeover of an expired lease with the repair of
what the dead daemon left, and ``status`` listing the daemons with their leases."""

from __future__ import annotations

from datetime import UTC, datetime

import trio

from kuloo_daemon.services import open_services
from kuloo_daemon.store import channels as channel_store
from kuloo_daemon.store import leases
from kuloo_daemon.store.bridge import Store
from kuloo_daemon.store.models import OutboxMessage, SyncRun

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


async def _channel(store) -> int:
    return (await store.run(channel_store.create, {"name": "Acme"}, None, T0)).channel.id


async def _expire(channel_id: int, kind: str) -> None:
    """As if the holder's lease time had passed without a renewal (it died)."""
    from tortoise import connections

    await connections.get("default").execute_query(
        "UPDATE lease SET lease_until = now() - interval '1 second' WHERE channel_id = $1 AND kind = $2",
        [channel_id, kind],
    )


async def _until(channel_id: int, kind: str):
    from tortoise import connections

    rows = await connections.get("default").execute_query_dict(
        "SELECT lease_until, now() AS db_now FROM lease WHERE channel_id = $1 AND kind = $2",
        [channel_id, kind],
    )
    return rows[0]["lease_until"], rows[0]["db_now"]


async def test_one_holder_per_channel_and_kind_until_released(pg_target):
    async with Store.open(pg_target) as store:
        cid = await _channel(store)
        a = await store.run(leases.claim, cid, "sync", "A", 30, T0)
        b = await store.run(leases.claim, cid, "sync", "B", 30, T0)
        assert a.held and not b.held and b.holder == "A" and b.until is not None
        assert (
            await store.run(leases.claim, cid, "delivery", "B", 30, T0)
        ).held  # another kind, another lease
        await store.run(leases.release, cid, "sync", "B", 0, T0)  # not B's to release
        assert not (await store.run(leases.claim, cid, "sync", "B", 30, T0)).held
        await store.run(leases.release, cid, "sync", "A", 0, T0)
        assert (await store.run(leases.claim, cid, "sync", "B", 30, T0)).held


async def test_lease_times_are_the_databases_and_a_heartbeat_renews_them(pg_target):
    async with Store.open(pg_target) as store:
        cid = await _channel(store)
        await store.run(leases.register, "A", "host", 1)
        assert (await store.run(leases.claim, cid, "sync", "A", 30, T0)).held
        until, db_now = await store.run(_until, cid, "sync")
        assert (
            29 <= (until - db_now).total_seconds() <= 30
        )  # from now(), not the clock's 2026-03-01
        await store.run(_expire, cid, "sync")
        assert await store.run(leases.heartbeat, "A", 600) == {(cid, "sync")}
        until, db_now = await store.run(_until, cid, "sync")
        assert (until - db_now).total_seconds() > 590


async def test_an_expired_lease_is_taken_over_and_what_the_dead_daemon_left_is_repaired(pg_target):
    async def leftovers(cid):
        await SyncRun.create(channel_id=cid, started_at=T0, status="running")
        from kuloo_daemon.store.models import User

        u = await User.create(
            channel_id=cid, kuloo_id="k1", email="a@example.com", email_key="a@example.com"
        )
        await OutboxMessage.create(
            channel_id=cid, user_id=u.id, kind="digest", state="sending", message_id="<m1@x>"
        )

    async def states(cid):
        run = await SyncRun.get(channel_id=cid)
        mail = await OutboxMessage.get(channel_id=cid)
        return run.status, run.reason, run.daemon_id, run.finished_at, mail.state

    async with Store.open(pg_target) as store:
        cid = await _channel(store)
        assert (await store.run(leases.claim, cid, "sync", "dead", 30, T0)).held
        assert (await store.run(leases.claim, cid, "delivery", "dead", 30, T0)).held
        await store.run(leftovers, cid)
        assert not (await store.run(leases.claim, cid, "sync", "B", 30, T0)).held  # still alive
        await store.run(_expire, cid, "sync")
        await store.run(_expire, cid, "delivery")
        later = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
        took = await store.run(leases.claim, cid, "sync", "B", 30, later)
        assert took.held and took.taken_over == "dead"
        assert (await store.run(states, cid))[:4] == ("failed", "interrupted", "dead", later)
        assert (await store.run(leases.claim, cid, "delivery", "B", 30, later)).taken_over == "dead"
        assert (await store.run(states, cid))[
            4
        ] == "uncertain"  # it may have left: never sent again


async def test_concurrent_claims_give_the_lease_to_exactly_one(pg_target):
    async with Store.open(pg_target) as store:
        channels = [
            await store.run(channel_store.create, {"name": f"c{i}"}, None, T0) for i in range(5)
        ]
        ids = [c.channel.id for c in channels]
        won: list[tuple[int, str]] = []

        async def contend(owner: str) -> None:
            for cid in ids:
                if (await store.run(leases.claim, cid, "sync", owner, 30, T0)).held:
                    won.append((cid, owner))

        async with trio.open_nursery() as nursery:
            for owner in ("A", "B", "C", "D"):
                nursery.start_soon(contend, owner)
        assert sorted(cid for cid, _ in won) == ids  # each channel to one daemon, none twice


def control_context(services):
    """What the control server hands its methods (no control connection here)."""
    from kuloo_daemon.control.context import Context
    from kuloo_daemon.delivery.service import Delivery

    return Context(services, Delivery(services), "", lambda: 0)


async def test_a_sync_run_records_its_daemon_and_status_lists_the_daemons(
    services_config, pg_server, pg_database
):
    from kuloo_daemon.control import methods
    from kuloo_daemon.store.sync import runs as sync_runs

    config = services_config(clock={"mode": "manual"}, store={"url": pg_server.url(pg_database)})
    async with open_services(config) as services:
        cid = (
            await services.store.run(
                channel_store.create, {"name": "A"}, None, services.clock.now()
            )
        ).channel.id
        async with services.leases.hold("sync", cid) as held:
            assert held
            await services.store.run(sync_runs.begin_run, cid, services.clock.now())
            status = await methods.status(control_context(services), {})
            [me] = status["daemons"]
            assert status["daemon"]["id"] == me["id"] == services.leases.id and not me["stopped"]
            assert [(x["channel"], x["kind"]) for x in me["leases"]] == [(cid, "sync")]
            assert me["last_seen"] is not None
        [run] = await services.store.run(sync_runs.runs, cid, 10)
        assert run.daemon_id == services.leases.id
        assert (await methods.status(control_context(services), {}))["daemons"][0]["leases"] == []
    rows = await trio.to_thread.run_sync(
        pg_server.sql, "SELECT stopped_at IS NOT NULL FROM daemon", pg_database
    )
    assert rows == "t"


async def test_sqlite_has_no_leases_and_status_shows_only_this_daemon(services_config):
    from kuloo_daemon.control import methods

    async with open_services(services_config(clock={"mode": "manual"})) as services:
        async with services.leases.hold("sync", 1) as held:
            assert held
        status = await methods.status(control_context(services), {})
        assert status["daemon"]["id"] == services.leases.id and "daemons" not in status


async def test_concurrent_outbox_claims_never_take_one_message_twice(pg_target):
    from kuloo_daemon.store import delivery as delivery_store
    from kuloo_daemon.store.models import User

    async def queue(cid: int, n: int) -> None:
        u = await User.create(
            channel_id=cid, kuloo_id="k1", email="a@example.com", email_key="a@example.com"
        )
        for i in range(n):
            await OutboxMessage.create(
                channel_id=cid,
                user_id=u.id,
                kind="digest",
                articles=[],
                state="queued",
                message_id=f"<m{i}@x>",
            )

    async with Store.open(pg_target) as store:
        cid = await _channel(store)
        await store.run(queue, cid, 40)
        taken: list[int] = []

        async def claimer() -> None:
            while claimed := await store.run(delivery_store.claim, cid, T0, 3):
                taken.extend(c.id for c in claimed)

        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(claimer)
        assert len(taken) == 40 and len(set(taken)) == 40


async def test_a_run_cut_short_by_a_stop_is_marked_interrupted_when_its_lease_is_released(
    pg_target,
):
    async def running(cid):
        await SyncRun.create(channel_id=cid, started_at=T0, status="running")

    async def state(cid):
        run = await SyncRun.get(channel_id=cid)
        return run.status, run.reason, run.daemon_id

    async with Store.open(pg_target) as store:
        cid = await _channel(store)
        claim = await store.run(leases.claim, cid, "sync", "A", 30, T0)
        await store.run(running, cid)
        await store.run(
            leases.release, cid, "sync", "B", claim.last_run, T0
        )  # not B's: nothing happens
        assert await store.run(state, cid) == ("running", "", "")
        await store.run(leases.release, cid, "sync", "A", claim.last_run, T0)
        assert await store.run(state, cid) == ("failed", "interrupted", "A")


async def test_sync_run_on_a_channel_leased_elsewhere_waits_for_that_run(
    services_config, pg_server, pg_database
):
    from kuloo_daemon.sync import engine

    config = services_config(
        clock={"mode": "manual"}, store={"url": pg_server.url(pg_database), "lease_seconds": 30}
    )
    async with open_services(config) as services:
        cid = (
            await services.store.run(
                channel_store.create, {"name": "A"}, None, services.clock.now()
            )
        ).channel.id
        other = await services.store.run(leases.claim, cid, "sync", "other-daemon", 30, T0)
        assert other.held
        order: list[str] = []

        async def explicit() -> None:
            order.append(f"ran {(await engine.run_channel(services, cid)).status.value}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(explicit)
            await trio.sleep(1.5)  # the explicit run polls the lease meanwhile
            order.append("released")
            await services.store.run(
                leases.release, cid, "sync", "other-daemon", other.last_run, T0
            )
        assert order == [
            "released",
            "ran skipped",
        ]  # it waited; a fresh run followed (no token: skipped)
        assert (await services.store.run(leases.claim, cid, "sync", "other-daemon", 30, T0)).held
        assert (
            await engine.run_channel(services, cid, scheduled=True) is None
        )  # the scheduler skips it


async def test_a_channel_that_does_not_exist_is_not_found_never_waited_for(
    services_config, pg_server, pg_database
):
    """Planted bug: ``claim`` answers "not held" for a channel that does not exist, so
    ``hold(wait=True)`` (``sync.run``) polls forever and ``delivery.run`` reports an empty
    pass where SQLite says not_found."""
    import pytest

    from kuloo_daemon.control import delivery_methods
    from kuloo_daemon.store import NotFound

    config = services_config(clock={"mode": "manual"}, store={"url": pg_server.url(pg_database)})
    async with open_services(config) as services:
        with pytest.raises(NotFound):
            await services.store.run(leases.claim, 999, "sync", "A", 30, T0)
        with trio.fail_after(20), pytest.raises(NotFound):  # the guard only ends a hang
            async with services.leases.hold("sync", 999, wait=True):
                pass
        with pytest.raises(NotFound):
            await delivery_methods.delivery_run(control_context(services), {"channel": 999})


async def _hold_until_stopped(services, cid, lose) -> list[str]:
    """Work under the sync lease until the work is stopped; ``lose()`` is what happens meanwhile."""
    seen: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(services.leases.keep_alive)
        with trio.fail_after(30):  # the guard only ends a hang
            async with services.leases.hold("sync", cid) as held:
                assert held
                seen.append("working")
                await lose()
                await trio.sleep_forever()
            seen.append("stopped")
        nursery.cancel_scope.cancel()
    return seen


async def test_work_stops_when_its_lease_is_taken_over_by_another_daemon(
    services_config, pg_server, pg_database
):
    """Fencing. Planted bug: ``keep_alive`` renews without checking what it renewed, so a
    daemon that stalled past ``lease_until`` keeps syncing beside the daemon that took over."""
    from tortoise import connections

    async def taken_over() -> None:
        await connections.get("default").execute_query(
            "UPDATE lease SET lease_owner = 'other-daemon' WHERE channel_id = $1", [cid]
        )

    config = services_config(
        clock={"mode": "manual"}, store={"url": pg_server.url(pg_database), "lease_seconds": 1.5}
    )
    async with open_services(config) as services:
        cid = (
            await services.store.run(
                channel_store.create, {"name": "A"}, None, services.clock.now()
            )
        ).channel.id
        assert await _hold_until_stopped(services, cid, lambda: services.store.run(taken_over)) == [
            "working",
            "stopped",
        ]
        assert (await services.store.run(leases.holder, cid, "sync"))[
            0
        ] == "other-daemon"  # not released by us


async def test_work_stops_when_its_lease_cannot_be_renewed_in_time(
    services_config, pg_server, pg_database, monkeypatch
):
    """Planted bug: a failing heartbeat is only logged, and the work goes on past the lease."""
    config = services_config(
        clock={"mode": "manual"}, store={"url": pg_server.url(pg_database), "lease_seconds": 1.5}
    )
    async with open_services(config) as services:
        cid = (
            await services.store.run(
                channel_store.create, {"name": "A"}, None, services.clock.now()
            )
        ).channel.id

        async def unreachable() -> None:
            async def fail(*_args):
                raise ConnectionError("the server went away")

            monkeypatch.setattr(leases, "heartbeat", fail)

        assert await _hold_until_stopped(services, cid, unreachable) == ["working", "stopped"]
        assert (await services.store.run(leases.holder, cid, "sync"))[
            0
        ] == ""  # released on the way out
