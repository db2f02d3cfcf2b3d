"""Snapshots of the main screens at 80×24 and 120×40, against a real daemon on a manual clock.

Textual is pinned exactly in pyproject.toml because snapshots move with it. After an
intended change: ``.venv/bin/pytest tests/tui/test_snapshots.py --snapshot-update``, and
look at the report's pictures.
"""

from __future__ import annotations

import pytest
from textual.widgets import DataTable

from kuloo_tui.app import make_app
from kuloo_tui.client import DaemonClient
from kuloo_tui.screens.channel import ChannelScreen
from kuloo_tui.screens.user import UserScreen
from kuloo_tui.screens.users import UsersScreen

from .conftest import until

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


@pytest.fixture
def seeded(daemon):
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme News", "plan": "pro",
                                   "sequential_tags": ["welcome", "onboarding", "upsell"],
                                   "sender": "Acme <news@acme.example>", "postal_address": "1 Main St, Springfield"})
        c.call("channels.create", {"name": "Beta Letters"})
        people = [("ada@example.com", "Ada", "Lovelace", "daily"), ("bob@example.com", "Bob", "Stone", "weekly"),
                  ("cy@example.com", "Cy", "Young", "monthly")]
        for email, first, last, frequency in people:
            c.call("users.add", {"channel": 1, "email": email, "first_name": first, "last_name": last,
                                 "frequency": frequency, "promo_tags": ["welcome"]})
        c.call("users.update", {"id": 2, "unsubscribed": True})
    return daemon


def app_for(daemon):
    return make_app(DaemonClient(daemon.socket_path))


async def dashboard_loaded(pilot):
    await until(lambda: pilot.app.screen.query_one("#channels", DataTable).row_count == 2, pilot)


@pytest.mark.parametrize("size", SIZES)
def test_dashboard(seeded, snap_compare, size):
    assert snap_compare(app_for(seeded), terminal_size=size, run_before=dashboard_loaded)


@pytest.mark.parametrize("size", SIZES)
def test_users(seeded, snap_compare, size):
    async def run_before(pilot):
        await dashboard_loaded(pilot)
        await pilot.press("u")
        await until(lambda: isinstance(pilot.app.screen, UsersScreen)
                    and pilot.app.screen.query_one("#users", DataTable).row_count == 3, pilot)

    assert snap_compare(app_for(seeded), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_channel_document(seeded, snap_compare, size):
    async def run_before(pilot):
        await dashboard_loaded(pilot)
        await pilot.press("enter")
        await until(lambda: isinstance(pilot.app.screen, ChannelScreen) and pilot.app.screen.doc is not None, pilot)

    assert snap_compare(app_for(seeded), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_user_profile(seeded, snap_compare, size):
    async def run_before(pilot):
        await dashboard_loaded(pilot)
        pilot.app.open_user(1, 1)
        await until(lambda: isinstance(pilot.app.screen, UserScreen) and pilot.app.screen.doc is not None
                    and pilot.app.screen.query_one("#audit", DataTable).row_count > 0, pilot)

    assert snap_compare(app_for(seeded), terminal_size=size, run_before=run_before)


def test_users_named_with_markup(daemon, snap_compare):
    """Issue 20 item 3: names and a channel that look like markup are drawn as typed (a
    user named ``[/]`` crashed this screen)."""
    with daemon.client() as c:
        c.call("channels.create", {"name": "[bold]Acme[/]", "sequential_tags": ["[/]"]})
        for i, name in enumerate(["[/]", "[bold]x", "[link=file:///etc/passwd]y[/]"]):
            c.call("users.add", {"channel": 1, "email": f"u{i}@example.com", "first_name": name,
                                 "last_name": "[/]", "promo_tags": ["[/]"]})  # fmt: skip

    async def run_before(pilot):
        channels = pilot.app.screen.query_one("#channels", DataTable)
        await until(lambda: channels.row_count == 1, pilot)
        await pilot.press("u")
        await until(lambda: isinstance(pilot.app.screen, UsersScreen)
                    and pilot.app.screen.query_one("#users", DataTable).row_count == 3, pilot)

    assert snap_compare(app_for(daemon), terminal_size=(80, 24), run_before=run_before)
