"""The control server in-process (under trio, on a real Unix socket and a real SQLite store).

These cases need a hand on the server that a subprocess cannot give: a method that fails
unexpectedly, a tiny event queue, a short send timeout. If an exception escaped a
connection, it would reach the nursery that runs ``ControlServer.serve`` and fail the test.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

import pytest
import trio
from plugins.stores import seed_sqlite
from structlog.testing import capture_logs

from kuloo_daemon import config as config_mod
from kuloo_daemon.control import methods
from kuloo_daemon.control.protocol import ClientProtocol, ErrorReply, Event, Reply, ServerProtocol
from kuloo_daemon.control.server import Broadcaster, ControlServer, bind_unix
from kuloo_daemon.delivery.service import Delivery
from kuloo_daemon.services import open_services


class Peer:
    """A test client over trio, speaking through the sans-IO ``ClientProtocol``."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.proto = ClientProtocol("test")
        self.inbox: list = []

    @classmethod
    async def connect(cls, path: str, *, hello: bool = True) -> Peer:
        peer = cls(await trio.open_unix_socket(path))
        if hello:
            _, data = peer.proto.hello()
            await peer.stream.send_all(data)
            assert isinstance(await peer.next(), Reply)
        return peer

    async def send(self, method: str, params: dict | None = None):
        rid, data = self.proto.request(method, params)
        await self.stream.send_all(data)
        return rid

    async def next(self):
        with trio.fail_after(10):
            while not self.inbox:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError("the server closed the connection")
                self.inbox += self.proto.receive_data(data)
        return self.inbox.pop(0)

    async def call(self, method: str, params: dict | None = None):
        rid = await self.send(method, params)
        while True:
            message = await self.next()
            if not isinstance(message, Event):
                assert message.id == rid
                return message


@pytest.fixture(autouse=True)
def _seeded(short_tmp, sqlite_template):
    """The store of ``serving(short_tmp)`` starts as a copy of a migrated one."""
    seed_sqlite(sqlite_template, f"{short_tmp}/kuloo.sqlite3")


@asynccontextmanager
async def serving(
    root: str, *, buffer: int = 256, send_timeout: float = 60.0, hello_timeout: float = 10.0
):
    config = config_mod.from_mapping({"daemon": {"state_dir": root}})
    path = os.path.join(root, "c.sock")
    broadcaster = Broadcaster(buffer)
    async with open_services(config, broadcaster.publish) as services:
        server = ControlServer(
            services,
            Delivery(services),
            broadcaster,
            65536,
            send_timeout=send_timeout,
            hello_timeout=hello_timeout,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, [bind_unix(path)])
            server.path = path
            yield server
            server.stop()


async def until(predicate) -> None:
    """Wait (at most 10 s) for the server to reach a state it reaches by itself."""
    for _ in range(1000):
        if predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError("the server never got there")


async def test_a_method_that_fails_unexpectedly_gets_internal_and_the_connection_goes_on(
    short_tmp, monkeypatch
):
    async def boom(ctx, params):
        raise RuntimeError("planted failure")

    monkeypatch.setitem(methods.METHODS, "boom", boom)
    async with serving(short_tmp) as server:
        peer = await Peer.connect(server.path)
        with capture_logs() as logs:
            reply = await peer.call("boom", {"x": 1})
        assert isinstance(reply, ErrorReply)
        assert (reply.id, reply.code) == (1, "internal")
        assert "see its log" in reply.message and "planted" not in reply.message
        [failure] = [e for e in logs if e["event"] == "control method failed"]
        assert (
            failure["log_level"] == "error"
            and failure["method"] == "boom"
            and failure["request_id"] == 1
        )
        # the same connection still answers, and so does the server
        status = await peer.call("status")
        assert isinstance(status, Reply) and status.result["connections"] == 1
        other = await Peer.connect(server.path)
        assert (await other.call("status")).result["connections"] == 2


async def test_an_unexpected_failure_outside_a_method_ends_that_connection_only(short_tmp):
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("cannot render")

    async with serving(short_tmp) as server:
        victim = await Peer.connect(server.path)
        assert (await victim.call("subscribe")).result == {"subscribed": True}
        bystander = await Peer.connect(server.path)
        with capture_logs() as logs:
            server.broadcaster.publish(
                "odd", {"value": Unprintable()}
            )  # fails in the victim's event pump
            last = await victim.next()
            assert isinstance(last, ErrorReply) and (last.id, last.code) == (None, "internal")
            with pytest.raises(EOFError):
                await victim.next()
        assert [e["event"] for e in logs if e["log_level"] == "error"] == [
            "control connection failed; closing it"
        ]
        await until(lambda: server.connections == 1)
        assert (await bystander.call("status")).result["connections"] == 1
        fresh = await Peer.connect(server.path)
        assert isinstance(await fresh.call("status"), Reply)


async def test_a_failure_in_the_request_loop_ends_that_connection_only(short_tmp, monkeypatch):
    real = ServerProtocol.receive_data

    def fragile(self, data):
        if b"explode" in data:
            raise RuntimeError("planted failure in the request loop")
        return real(self, data)

    monkeypatch.setattr(ServerProtocol, "receive_data", fragile)
    async with serving(short_tmp) as server:
        victim = await Peer.connect(server.path)
        bystander = await Peer.connect(server.path)
        with capture_logs() as logs:
            await victim.stream.send_all(b"explode\n")
            last = await victim.next()
            assert isinstance(last, ErrorReply) and (last.id, last.code) == (None, "internal")
            with pytest.raises(EOFError):
                await victim.next()
        assert [e["event"] for e in logs if e["log_level"] == "error"] == [
            "control connection failed; closing it"
        ]
        await until(lambda: server.connections == 1)
        assert (await bystander.call("status")).result["connections"] == 1


async def test_a_subscriber_that_leaves_never_cuts_its_request_in_flight_short(
    short_tmp, monkeypatch
):
    """The request finishes (a store unit of work must never be cancelled half-way) though the
    event pump found the client gone first."""
    finished = trio.Event()
    started = trio.Event()

    async def slow(ctx, params):
        started.set()
        await trio.sleep(0.3)
        finished.set()
        return {"done": True}

    monkeypatch.setitem(methods.METHODS, "slow", slow)
    async with serving(short_tmp) as server:
        peer = await Peer.connect(server.path)
        await peer.call("subscribe")
        await peer.send("slow")
        await started.wait()
        await peer.stream.aclose()
        server.broadcaster.publish(
            "tick", {"pad": "x" * 300_000}
        )  # the pump meets the closed socket
        with trio.fail_after(10):
            await finished.wait()
        await until(lambda: server.connections == 0)


async def test_a_subscriber_whose_queue_overflows_gets_one_notice_and_may_subscribe_again(
    short_tmp,
):
    big = "x" * 60_000  # a few of these fill the socket's buffers, then the queue
    async with serving(short_tmp, buffer=8) as server:
        slow = await Peer.connect(server.path)
        await slow.call("subscribe")
        reader = await Peer.connect(server.path)
        await reader.call("subscribe")
        received: list[int] = []

        async def read_all() -> None:
            while len(received) < 50:
                received.append((await reader.next()).data["n"])

        with capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all)
                for n in range(50):
                    server.broadcaster.publish("tick", {"n": n, "pad": big})
                    await trio.sleep(0.01)  # let the pumps run
        assert received == list(range(50))  # the reader lost nothing: the slow one blocked nobody
        warnings = [e for e in logs if e["log_level"] == "warning"]
        assert [e["event"] for e in warnings] == [
            "control client too slow for its events; subscription ended"
        ]
        # now the slow client reads: the events it got, in order, then one notice
        got = []
        while True:
            message = await slow.next()
            if message.event == "events_dropped":
                break
            got.append(message.data["n"])
        assert got == list(range(len(got))) and got
        assert message.data == {"dropped": 8 + 1}  # the queue's eight and the one that did not fit
        assert (await slow.call("subscribe")).result == {"subscribed": True}
        server.broadcaster.publish("tick", {"n": 99})
        assert (await slow.next()).data == {"n": 99}


async def test_a_client_that_stops_reading_is_disconnected_after_the_send_timeout(short_tmp):
    async with serving(short_tmp, send_timeout=0.5) as server:
        stuck = await Peer.connect(server.path)
        await stuck.call("subscribe")
        with capture_logs() as logs:
            for n in range(40):
                server.broadcaster.publish("tick", {"n": n, "pad": "x" * 60_000})
            await until(lambda: server.connections == 0)
        assert "control client does not read; closing the connection" in [e["event"] for e in logs]
        assert not [e for e in logs if e["log_level"] == "error"]


async def test_a_client_that_never_says_hello_is_closed_and_one_that_did_may_idle(short_tmp):
    async with serving(short_tmp, hello_timeout=0.3) as server:
        greeted = await Peer.connect(server.path)
        mute = await Peer.connect(server.path, hello=False)
        trickle = await Peer.connect(server.path, hello=False)
        with capture_logs() as logs:
            with pytest.raises(trio.BrokenResourceError):
                for _ in range(100):  # a byte now and then does not extend the deadline
                    await trickle.stream.send_all(b" ")
                    await trio.sleep(0.05)
            await until(lambda: server.connections == 1)
        with pytest.raises(EOFError):
            await mute.next()
        assert [e["event"] for e in logs].count(
            "control client sent no hello in time; closing"
        ) == 2
        assert (await greeted.call("status")).result["connections"] == 1
