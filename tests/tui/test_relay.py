"""The admin after a relay outage: the dashboard says the relay refuses us (in its own
words), and the outbox resends every failed message of a channel behind a confirmation."""

from __future__ import annotations

import signal
import socket

import pytest
from textual.widgets import DataTable, Static

from kuloo_tui.screens.confirm import ConfirmScreen
from kuloo_tui.screens.outbox import OutboxScreen

from .conftest import restart, until
from .test_app import app_for, rows, seed_counts

pytestmark = pytest.mark.anyio


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_resend_all_failed_then_the_dashboard_shows_the_refusing_relay(make_daemon):
    relay = f'[smtp]\nhost = "127.0.0.1"\nport = {closed_port()}\nsecurity = "none"\n'
    daemon = make_daemon(extra=relay)
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme"})
        user = c.call("users.add", {"channel": 1, "email": "u@example.com"})["id"]
    daemon.signal(signal.SIGTERM)
    daemon.proc.wait(10)
    seed_counts(daemon.root / "state" / "kuloo.sqlite3", 1, user, failed=5, uncertain=0, errors=0)
    restart(daemon)
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#channels", DataTable)
        await until(lambda: table.row_count == 1 and rows(table)[0][6] == "0/5/0", pilot)
        assert not app.screen.query_one("#relay", Static).display  # nothing tried yet: no warning
        await pilot.press("o")
        await until(lambda: isinstance(app.screen, OutboxScreen), pilot)
        await pilot.press("E")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        await pilot.press("y")
        await until(
            lambda: any("5 failed messages queued again" in n.message for n in app._notifications),
            pilot,
        )
        # The daemon's next pass meets a relay that is not there: every message stays queued.
        with daemon.client() as c:
            await until(
                lambda: (c.call("status")["relay"] or {}).get("state") == "refusing",
                pilot,
                tries=400,
            )
            assert c.call("outbox.counts", {"channel": 1})["counts"]["queued"] == 5
        await pilot.press("escape")
        await pilot.press("r")
        box = app.screen.query_one("#relay", Static)
        await until(lambda: box.display and "connection refused" in str(box.render()), pilot)
        assert "Mail relay refusing since" in str(box.render())
