"""The TUI against a daemon whose store holds 100,000 users (bench_users' fill): the time
from starting the app until the dashboard shows the channel, until the first users page
is shown, and a search's response time (a query typed in → its page shown), each through
the real control socket and the real daemon subprocess. Goal: usable in < 1.5 s.

Measured twice on the same store: at the daemon's first start after the upgrade that
added ``User.next_due_at`` (every user is due once: delivery plans them all while the TUI
loads; the dashboard and first page only), then after a restart, once every user has been
planned (the steady state, the figures the goal is about).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from bench.bench_users import NOW, TAGS, USERS, _fill
from kuloo_daemon.store import channels as channel_store
from kuloo_daemon.store.bridge import Store

SEARCHES = ["hopper", "user4242", "grace hop", "zzzz", "knuth", "user99"]


async def _store(db: Path) -> None:
    async with Store.open(db) as store:
        created = await store.run(
            channel_store.create, {"name": "Big", "sequential_tags": TAGS}, None, NOW
        )
        await store.run(_fill, created.channel.id, USERS, 1, 1)


async def _until(pilot, condition, limit: float = 60.0) -> None:
    deadline = time.perf_counter() + limit
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("the TUI never got there")
        await pilot.pause(0.005)


async def _measure(socket_path: str, searches: bool = True) -> dict[str, float]:
    from textual.widgets import DataTable, Input

    from kuloo_tui.app import make_app
    from kuloo_tui.client import DaemonClient
    from kuloo_tui.screens.users import UsersScreen

    app = make_app(DaemonClient(socket_path))
    started = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(
            pilot,
            lambda: (
                app.screen.query("#channels")
                and app.screen.query_one("#channels", DataTable).row_count == 1
            ),
        )
        dashboard = time.perf_counter() - started
        await pilot.press("u")
        await _until(
            pilot, lambda: isinstance(app.screen, UsersScreen) and len(app.screen.users) == 50
        )
        users = time.perf_counter() - started
        if not searches:
            return {"tui dashboard usable s": dashboard, "tui first users page s": users}
        screen = app.screen
        samples = []
        for query in SEARCHES * 3:
            t0 = time.perf_counter()
            screen.query_one("#search", Input).value = query
            await _until(pilot, lambda q=query: screen.shown_query == q)
            samples.append(time.perf_counter() - t0)
            screen.query_one("#search", Input).value = ""
            await _until(pilot, lambda: screen.shown_query == "")
    return {
        "tui dashboard usable s": dashboard,
        "tui first users page s": users,
        "tui search median ms": statistics.median(samples) * 1000,
        "tui search max ms": max(samples) * 1000,
    }


def _start(config: Path, sock: Path, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kuloo_daemon.cli", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ},
    )
    log.close()
    deadline = time.monotonic() + 60
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(log_path.read_text())
        time.sleep(0.05)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(30)


def main() -> dict[str, float]:
    from kuloo_daemon.control.client import ControlClient

    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        root = Path(tmp)
        state = root / "state"
        state.mkdir(mode=0o700)
        started = time.perf_counter()
        trio.run(_store, state / "kuloo.sqlite3")
        print(f"   filled {USERS:,} users in {time.perf_counter() - started:.1f} s")
        sock = root / "c.sock"
        config = root / "kuloo.toml"
        config.write_text(
            f'[daemon]\nstate_dir = "{state}"\n[control]\nsocket = "{sock}"\n'
            f'[clock]\nmode = "manual"\nstart = "{NOW.isoformat()}"\n[log]\nlevel = "warning"\n'
            '[sell]\nbase_url = "http://127.0.0.1:9"\nmax_attempts = 1\n'
        )
        proc = _start(config, sock, root / "daemon.log")
        try:
            first = asyncio.run(_measure(str(sock), searches=False))
            t0 = time.perf_counter()
            with ControlClient(str(sock), timeout=600) as c:
                c.call("delivery.run", {})  # waits for the start-up pass, then finds nobody due
            planned = time.perf_counter() - t0
        finally:
            _stop(proc)
        proc = _start(config, sock, root / "daemon.log")
        try:
            figures = asyncio.run(_measure(str(sock)))
        finally:
            _stop(proc)
    print("   first start after the upgrade (every user due once):")
    for name, value in first.items():
        print(f"   {'  ' + name:32} {value:10.3f}")
    print(f"   {'  then planned within s':32} {planned:10.3f}")
    print("   steady state (after a restart):")
    for name, value in figures.items():
        print(f"   {name:32} {value:10.3f}")
    return {**figures, **{f"first start {k}": v for k, v in first.items()}}


if __name__ == "__main__":
    main()
