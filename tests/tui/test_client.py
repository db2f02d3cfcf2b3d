"""The TUI's asyncio client against a real daemon subprocess: calls, typed errors, events,
and reconnection with backoff when the daemon goes away and comes back."""

from __future__ import annotations

import asyncio
import signal

import pytest

from kuloo_tui.client import Connected, DaemonClient, DaemonError, Disconnected, Event, Unreachable

from .conftest import restart, until

pytestmark = pytest.mark.anyio


async def next_of(queue: asyncio.Queue, kind: type, tries: int = 200):
    for _ in range(tries):
        item = await asyncio.wait_for(queue.get(), 30)
        if isinstance(item, kind):
            return item
    raise AssertionError(f"no {kind.__name__}")


async def test_calls_errors_and_events(daemon):
    client = DaemonClient(daemon.socket_path)
    queue = client.listen()
    client.start()
    try:
        connected = await next_of(queue, Connected)
        assert "users.list" in connected.server["methods"]
        status = await client.call("status")
        assert status["pid"] == daemon.proc.pid
        with pytest.raises(DaemonError) as caught:
            await client.call("channels.get", {"id": 999})
        assert caught.value.code == "not_found" and caught.value.message
        with pytest.raises(DaemonError) as caught:
            await client.call("channels.create", {"name": "", "plan": "gold"})
        assert caught.value.code == "invalid_params" and len(caught.value.problems) == 2
        # several calls at once are told apart by their ids
        results = await asyncio.gather(
            *(client.call("channels.list") for _ in range(10)), client.call("status")
        )
        assert (
            all(r == {"channels": []} for r in results[:10])
            and results[10]["pid"] == daemon.proc.pid
        )
        # events published by another client reach this one
        with daemon.client() as other:
            other.call("channels.create", {"name": "Acme"})
        event = await next_of(queue, Event)
        assert event.event == "channel.updated" and event.data["name"] == "Acme"
    finally:
        await client.close()


async def test_unreachable_then_reconnects_when_the_daemon_restarts(daemon):
    client = DaemonClient(daemon.socket_path, backoff_start=0.05, backoff_max=0.5)
    queue = client.listen()
    client.start()
    try:
        await next_of(queue, Connected)
        first_pid = (await client.call("status"))["pid"]
        daemon.signal(signal.SIGKILL)
        down = await next_of(queue, Disconnected)
        assert down.reason
        with pytest.raises(Unreachable):
            await client.call("status")
        restart(daemon)
        await next_of(queue, Connected)
        assert (await client.call("status"))["pid"] not in (None, first_pid)
    finally:
        await client.close()


async def test_no_daemon_yet_is_reported_once_and_retried(short_tmp):
    path = f"{short_tmp}/none.sock"
    client = DaemonClient(path, backoff_start=0.01, backoff_max=0.02)
    queue = client.listen()
    client.start()
    try:
        down = await next_of(queue, Disconnected)
        assert path in down.reason
        await asyncio.sleep(0.2)  # several retries happen meanwhile …
        assert queue.empty()  # … and are not reported again
        with pytest.raises(Unreachable):
            await client.call("status")
    finally:
        await client.close()
    await until(lambda: client._task is None)
