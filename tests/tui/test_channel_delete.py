"""Deleting a channel from the TUI: only once its name is typed out (issue 27 item 3)."""

from __future__ import annotations

import pytest
from textual.widgets import Button, DataTable, Input

from kuloo_tui.screens.channel import ChannelScreen
from kuloo_tui.screens.confirm import TypeToConfirmScreen
from kuloo_tui.screens.dashboard import DashboardScreen

from .conftest import until
from .test_app import app_for, rows

pytestmark = pytest.mark.anyio


async def test_a_channel_goes_only_when_its_name_is_typed_out(daemon):
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme"})
        c.call("channels.create", {"name": "Beta"})
        c.call("users.add", {"channel": 1, "email": "a@example.com"})
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#channels", DataTable)
        await until(lambda: table.row_count == 2, pilot)
        await pilot.press("enter")
        await until(
            lambda: isinstance(app.screen, ChannelScreen) and app.screen.doc is not None, pilot
        )
        await pilot.press("ctrl+delete")
        await until(lambda: isinstance(app.screen, TypeToConfirmScreen), pilot)
        modal = app.screen
        modal.query_one("#typed", Input).value = "acme"  # not the exact name
        await pilot.pause()
        assert modal.query_one("#yes", Button).disabled
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, ChannelScreen), pilot)
        with daemon.client() as c:
            assert len(c.call("channels.list")["channels"]) == 2  # cancelled: nothing happened
        await pilot.press("ctrl+delete")
        await until(lambda: isinstance(app.screen, TypeToConfirmScreen), pilot)
        app.screen.query_one("#typed", Input).value = "Acme"
        await pilot.press("enter")
        await until(
            lambda: any("deleted, with 1 user(s)" in n.message for n in app._notifications), pilot
        )
        await until(lambda: isinstance(app.screen, DashboardScreen), pilot)
        await until(lambda: table.row_count == 1 and rows(table)[0][1] == "Beta", pilot)
