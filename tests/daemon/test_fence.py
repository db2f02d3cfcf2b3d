"""The fence before every external write under a lease (``services.Fence``/``Leases.fence``):
by the daemon's own monotonic clock, no Sell write and no SMTP transaction once more than
``lease_seconds`` × 2/3 have passed since the last renewal the database confirmed.

In process, with a fake monotonic clock: the fence's arithmetic, the Sell client's hook
(``crm.client.write_fence``: a write refused never reaches the transport, a read still
goes), ``Leases.fence`` on PostgreSQL (claim and confirmed renewals move it) and on SQLite
(never refuses), and delivery's send loop stopping before the next SMTP transaction."""

from __future__ import annotations

import threading

import httpx
import pytest

from kuloo_daemon.crm.client import SellClient, write_fence
from kuloo_daemon.delivery.service import Delivery
from kuloo_daemon.delivery.transport import Outcome, Result
from kuloo_daemon.secrets import Secret
from kuloo_daemon.services import Fence, LeaseLost, Leases, open_services
from kuloo_daemon.store import channels as channel_store
from kuloo_daemon.store import leases


class FakeMonotonic:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_fence_refuses_beyond_two_thirds_of_the_lease():
    """Planted bugs: the comparison flipped, or the limit at the whole lease (5 s)."""
    clock = FakeMonotonic()
    fence = Fence(5 * Leases.FENCE, clock.now, clock, "sync lease of channel 1")
    clock.now += 3.3
    fence.check()  # 3.3 s < 3.33 s: still certainly ours
    clock.now += 0.1  # 3.4 s since the renewal: no longer certain
    with pytest.raises(LeaseLost, match="sync lease of channel 1"):
        fence.check()
    clock.now -= 3  # once refused, it stays refused (the work has stopped)
    assert not fence.ok()


async def test_a_sell_write_is_not_sent_once_the_fence_refuses():
    """Planted bug: the client's hook deleted (the POST goes out after the fence refused)."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        data = {"id": 1, "last_name": "X"} if request.method == "POST" else {"id": 1, "name": "me"}
        return httpx.Response(200, json={"data": data, "meta": {}})

    clock = FakeMonotonic()
    fence = Fence(5 * Leases.FENCE, clock.now, clock)
    async with SellClient(
        "http://sell.test", Secret("t" * 40), transport=httpx.MockTransport(handler)
    ) as sell:
        token = write_fence.set(fence.check)
        try:
            await sell.create_lead({"last_name": "X"})
            assert seen == ["POST"]
            clock.now += 4
            await sell.users_self()  # a read is not fenced
            with pytest.raises(LeaseLost):
                await sell.create_lead({"last_name": "Y"})
            with pytest.raises(LeaseLost):
                await sell.update_lead(1, {"last_name": "Y"})
        finally:
            write_fence.reset(token)
    assert seen == ["POST", "GET"]


async def test_the_lease_fence_runs_from_the_claim_and_ends_the_work_quietly(
    services_config, pg_server, pg_database
):
    """Planted bugs: the fence's limit at the whole lease; ``hold`` not catching LeaseLost
    (the refusal escapes as a crash) or not releasing the lease afterwards."""
    config = services_config(
        clock={"mode": "manual"}, store={"url": pg_server.url(pg_database), "lease_seconds": 5}
    )
    async with open_services(config) as services:
        cid = (
            await services.store.run(
                channel_store.create, {"name": "A"}, None, services.clock.now()
            )
        ).channel.id
        clock = FakeMonotonic()
        lease = Leases(services.store, services.clock, 5, monotonic=clock)
        await services.store.run(leases.register, lease.id, lease.host, 1)
        async with lease.hold("sync", cid) as held:
            assert held
            fence = lease.fence("sync", cid)
            clock.now += 3.3
            fence()
            clock.now += 0.1
            with pytest.raises(LeaseLost):
                fence()
            fence()  # as the Sell client would: the refusal ends the work
        assert (await services.store.run(leases.holder, cid, "sync"))[0] == ""  # released
        assert lease.fence("sync", cid)() is None  # no lease held: nothing to fence


async def test_keep_alive_moves_the_fence_only_for_leases_it_renewed(
    services_config, pg_server, pg_database
):
    """Planted bug: ``keep_alive`` moves every fence, also of a lease taken over meanwhile."""
    import trio
    from tortoise import connections

    config = services_config(
        clock={"mode": "manual"}, store={"url": pg_server.url(pg_database), "lease_seconds": 1.5}
    )
    async with open_services(config) as services:
        store = services.store
        a = (
            await store.run(channel_store.create, {"name": "A"}, None, services.clock.now())
        ).channel.id
        b = (
            await store.run(channel_store.create, {"name": "B"}, None, services.clock.now())
        ).channel.id

        async def steal() -> None:
            await connections.get("default").execute_query(
                "UPDATE lease SET lease_owner = 'other-daemon' WHERE channel_id = $1", [b]
            )

        lease = services.leases
        fences = {}

        async def work_on_b(task_status=trio.TASK_STATUS_IGNORED) -> None:
            async with lease.hold("sync", b):
                fences["b"] = lease._fences[(b, "sync")]
                task_status.started()
                await trio.sleep_forever()  # until keep_alive finds the lease gone

        async with trio.open_nursery() as nursery:
            await nursery.start(lease.keep_alive)
            async with lease.hold("sync", a):
                fa = lease._fences[(a, "sync")]
                await nursery.start(work_on_b)
                await store.run(steal)
                a_before, b_before = fa.confirmed, fences["b"].confirmed
                await trio.sleep(1.5)  # two or three beats
                assert fa.confirmed > a_before
                assert fences["b"].confirmed == b_before
            nursery.cancel_scope.cancel()


async def test_sqlite_never_fences(services_config):
    async with open_services(services_config(clock={"mode": "manual"})) as services:
        async with services.leases.hold("sync", 1) as held:
            assert held
            assert services.leases.fence("sync", 1)() is None


class RecordingTransport:
    conn = object()

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, data: bytes, sender: str, recipient: str) -> Result:
        self.sent.append(recipient)
        return Result(Outcome.SENT, "250 ok")


def test_the_send_loop_stops_before_the_next_smtp_transaction_once_fenced(services_config):
    """Planted bug: the send loop's fence check deleted (all five go out)."""
    clock = FakeMonotonic()
    fence = Fence(5 * Leases.FENCE, clock.now, clock)
    transport = RecordingTransport()
    original = transport.send

    def send(data, sender, recipient):
        if len(transport.sent) == 1:
            clock.now += 4  # the process froze after the second message's transaction
        return original(data, sender, recipient)

    transport.send = send
    delivery = Delivery.__new__(Delivery)
    delivery._pace, delivery._gate = {}, threading.Lock()
    chunk = [(i, b"x", "news@kuloo.test", f"r{i}@example.net") for i in range(5)]
    lost: list[LeaseLost] = []
    out, refusal, end, _ = delivery._send_chunk(transport, chunk, 1, 0.0, None, fence.check, lost)
    assert transport.sent == ["r0@example.net", "r1@example.net"]
    assert [r.id for r in out] == [0, 1] and len(lost) == 1 and refusal is None
    assert end == "fenced"
