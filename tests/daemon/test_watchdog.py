"""The systemd watchdog is fed only while the scheduler makes progress (issue 14 item 7).

The daemon's watchdog feeder against a real datagram socket (what systemd listens on)
and the real scheduler, on trio's MockClock: explicit times, no sleeps. The end-to-end
healthy case (daemon subprocess) is in test_lifecycle.py.
"""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from kuloo_daemon.app import _feed_watchdog
from kuloo_daemon.scheduler import Scheduler
from kuloo_daemon.systemd import Notifier

WITHHELD = "scheduler has not ticked; withholding the watchdog ping"


@pytest.fixture
def systemd_socket(short_tmp):
    path = os.path.join(short_tmp, "notify")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.setblocking(False)
    notifier = Notifier(path)
    yield server, notifier
    notifier.close()
    server.close()


def drain(server: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(server.recv(1024))
        except BlockingIOError:
            return out


async def test_no_ping_while_the_scheduler_is_stuck_and_the_log_says_why(
    autojump_clock, systemd_socket
):
    """Planted bugs: the health check deleted (pings go on while stuck), the error log
    deleted, ``allowed`` = the watchdog interval alone (a scheduler ticking every second
    would be called stuck between its ticks)."""
    server, notifier = systemd_socket
    scheduler = Scheduler(tick_seconds=1.0)
    life = SimpleNamespace(stopping=False, scheduler=scheduler, notifier=notifier)
    interval = 0.5  # systemd's WatchdogSec/2-style ping interval; allowed lag = 3 ticks = 3 s
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            ticking = trio.CancelScope()

            async def run_scheduler(task_status=trio.TASK_STATUS_IGNORED) -> None:
                with ticking:
                    await scheduler.run(task_status=task_status)

            await nursery.start(run_scheduler)
            # trio may run the feeder before the first tick: let the scheduler tick first
            await trio.testing.wait_all_tasks_blocked()
            assert scheduler.ticks == 1
            nursery.start_soon(_feed_watchdog, life, interval)

            healthy: list[bytes] = []
            for _ in range(10):  # healthy: ticks every second (read like systemd does)
                await trio.sleep(1)
                healthy += drain(server)
            healthy_logs = list(logs)

            ticking.cancel()  # the scheduler wedges: no tick from now on
            stuck_ticks = scheduler.ticks
            await trio.sleep(3.5)  # within the allowed lag a ping or two may still go
            drain(server)
            stuck: list[bytes] = []
            for _ in range(10):  # ten intervals
                await trio.sleep(interval)
                stuck += drain(server)
            life.stopping = True
            nursery.cancel_scope.cancel()

    assert scheduler.ticks == stuck_ticks
    assert len(healthy) >= 18 and set(healthy) == {b"WATCHDOG=1"}  # one ping per half interval
    assert not [e for e in healthy_logs if e["event"] == WITHHELD]
    assert stuck == []
    withheld = [e for e in logs if e["event"] == WITHHELD]
    assert len(withheld) >= 20
    assert withheld[0]["log_level"] == "error" and withheld[0]["allowed_seconds"] == 3.0


async def test_a_scheduler_that_never_ticked_gets_no_ping(autojump_clock, systemd_socket):
    """Planted bug: ``last_tick is None`` treated as healthy."""
    server, notifier = systemd_socket
    life = SimpleNamespace(stopping=False, scheduler=Scheduler(tick_seconds=1.0), notifier=notifier)
    with capture_logs() as logs, trio.move_on_after(10):
        await _feed_watchdog(life, 2.0)
    assert drain(server) == []
    assert [e["allowed_seconds"] for e in logs if e["event"] == WITHHELD][:1] == [3.0]


async def test_the_feeder_stops_when_the_daemon_stops(autojump_clock, systemd_socket):
    """Planted bug: ``while True`` (pings after STOPPING=1 keep a hung shutdown alive)."""
    server, notifier = systemd_socket
    scheduler = Scheduler(tick_seconds=1.0)
    scheduler.last_tick = trio.current_time()
    life = SimpleNamespace(stopping=True, scheduler=scheduler, notifier=notifier)
    with trio.fail_after(1):
        await _feed_watchdog(life, 2.0)
    assert drain(server) == []


def test_a_full_notify_queue_never_blocks_the_daemon(systemd_socket):
    """Found by the stuck-scheduler test: with nobody reading (systemd busy), the notify
    socket's queue fills after a few datagrams and a blocking ``sendto`` froze the whole
    trio loop. Planted bug: the Notifier's socket left blocking."""
    import threading

    _server, notifier = systemd_socket
    results: list[bool] = []
    sender = threading.Thread(
        target=lambda: results.extend(notifier.watchdog() for _ in range(500))
    )
    sender.start()
    sender.join(timeout=30)
    assert not sender.is_alive(), "sd_notify blocked on a full socket queue"
    assert results[0] is True and results[-1] is False  # dropped, never fatal


def test_healthy_edge():
    """Planted bugs: ``<`` for ``<=`` at exactly the allowed lag; ``last_tick is None``."""
    s = Scheduler(tick_seconds=1.0)
    assert s.healthy(100.0, 3.0) is False
    s.last_tick = 97.0
    assert s.healthy(100.0, 3.0) is True
    assert s.healthy(100.001, 3.0) is False
