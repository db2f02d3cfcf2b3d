"""Snapshots of the main screens at 80×24 and 120×40, against a real daemon on a manual clock.

Textual is pinned exactly in pyproject.toml because snapshots move with it. After an
intended change: ``.venv/bin/pytest tests/tui/test_snapshots.py --snapshot-update``, and
look at the report's pictures.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from plugins.bounced import bounce, take_bounces
from textual.widgets import DataTable, Input

from kuloo_daemon.rules.bounces import Kind
from kuloo_tui.app import make_app
from kuloo_tui.client import DaemonClient
from kuloo_tui.screens.articles import ArticlesScreen
from kuloo_tui.screens.channel import ChannelScreen
from kuloo_tui.screens.confirm import ConfirmScreen
from kuloo_tui.screens.outbox import OutboxScreen
from kuloo_tui.screens.sync import SyncScreen
from kuloo_tui.screens.user import UserScreen
from kuloo_tui.screens.users import UsersScreen

from .conftest import restart, until

REPO = Path(__file__).resolve().parents[2]
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


@pytest.fixture
def seeded(daemon):
    with daemon.client() as c:
        c.call(
            "channels.create",
            {
                "name": "Acme News",
                "plan": "pro",
                "sequential_tags": ["welcome", "onboarding", "upsell"],
                "sender": "Acme <news@acme.example>",
                "postal_address": "1 Main St, Springfield",
            },
        )
        c.call("channels.create", {"name": "Beta Letters"})
        people = [
            ("ada@example.com", "Ada", "Lovelace", "daily"),
            ("bob@example.com", "Bob", "Stone", "weekly"),
            ("cy@example.com", "Cy", "Young", "monthly"),
        ]
        for email, first, last, frequency in people:
            c.call(
                "users.add",
                {
                    "channel": 1,
                    "email": email,
                    "first_name": first,
                    "last_name": last,
                    "frequency": frequency,
                    "promo_tags": ["welcome"],
                },
            )
        c.call("users.update", {"id": 2, "unsubscribed": True})
    return daemon


def app_for(daemon):
    return make_app(DaemonClient(daemon.socket_path))


async def dashboard_loaded(pilot):
    await until(lambda: pilot.app.screen.query_one("#channels", DataTable).row_count == 2, pilot)


async def users_listed(pilot, rows: int = 3):
    """The Users screen (``u``), its rows drawn."""
    await pilot.press("u")
    await until(
        lambda: (
            isinstance(pilot.app.screen, UsersScreen)
            and pilot.app.screen.query_one("#users", DataTable).row_count == rows
        ),
        pilot,
    )


async def profile_shown(pilot, user: int = 1, channel: int = 1):
    """A user's profile, its audit log drawn."""
    pilot.app.open_user(user, channel)
    await until(
        lambda: (
            isinstance(pilot.app.screen, UserScreen)
            and pilot.app.screen.doc is not None
            and pilot.app.screen.query_one("#audit", DataTable).row_count > 0
        ),
        pilot,
    )


@pytest.mark.parametrize("size", SIZES)
def test_dashboard(seeded, snap_compare, size):
    assert snap_compare(app_for(seeded), terminal_size=size, run_before=dashboard_loaded)


@pytest.mark.parametrize("size", SIZES)
def test_users(seeded, snap_compare, size):
    async def run_before(pilot):
        await dashboard_loaded(pilot)
        await users_listed(pilot)

    assert snap_compare(app_for(seeded), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_channel_document(seeded, snap_compare, size):
    async def run_before(pilot):
        await dashboard_loaded(pilot)
        await pilot.press("enter")
        await until(
            lambda: (
                isinstance(pilot.app.screen, ChannelScreen) and pilot.app.screen.doc is not None
            ),
            pilot,
        )

    assert snap_compare(app_for(seeded), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_user_profile(seeded, snap_compare, size):
    async def run_before(pilot):
        await dashboard_loaded(pilot)
        await profile_shown(pilot)

    assert snap_compare(app_for(seeded), terminal_size=size, run_before=run_before)


def test_users_named_with_markup(daemon, snap_compare):
    """Issue 20 item 3: names and a channel that look like markup are drawn as typed (a
    user named ``[/]`` crashed this screen)."""
    with daemon.client() as c:
        c.call("channels.create", {"name": "[bold]Acme[/]", "sequential_tags": ["[/]"]})
        for i, name in enumerate(["[/]", "[bold]x", "[link=file:///etc/passwd]y[/]"]):
            c.call(
                "users.add",
                {
                    "channel": 1,
                    "email": f"u{i}@example.com",
                    "first_name": name,
                    "last_name": "[/]",
                    "promo_tags": ["[/]"],
                },
            )

    async def run_before(pilot):
        channels = pilot.app.screen.query_one("#channels", DataTable)
        await until(lambda: channels.row_count == 1, pilot)
        await users_listed(pilot)

    assert snap_compare(app_for(daemon), terminal_size=(80, 24), run_before=run_before)


# --------------------------------------------------------------------------- issue 24

SHARED_FIX = (
    "Two Sell records carry the email shared@example.com: Kuloo cannot tell which one "
    "is the user. Merge or delete the duplicate in Sell (keep the one with the deals), "
    "then sync again; the error clears on its own."
)


def seed_rows(daemon) -> None:
    """Sync errors and outbox messages, written while the daemon is stopped."""
    daemon.signal(signal.SIGTERM)
    daemon.proc.wait(10)
    at = "2026-01-05 09:00:00+00:00"
    with sqlite3.connect(daemon.root / "state" / "kuloo.sqlite3") as conn:
        conn.executemany(
            "insert into sync_error (channel_id, user_id, crm_kind, crm_id, email, code, error,"
            " attempts, payload_key, created_at, updated_at)"
            " values (1, ?, ?, ?, ?, ?, ?, 1, '', ?, ?)",
            [
                (None, "lead", 4242, "shared@example.com", "duplicate", SHARED_FIX, at, at),
                (
                    1,
                    "contact",
                    17,
                    "ada@example.com",
                    "kuloo_id",
                    "The KulooId in Sell (k-0000) is not this user's: restore it to the value "
                    "shown in Kuloo, or clear it and sync again.",
                    at,
                    at,
                ),
            ],
        )
        conn.executemany(
            "insert into outbox_message (channel_id, user_id, kind, state, message_id, attempts,"
            " last_error, created_at, updated_at) values (1, ?, 'digest', ?, ?, ?, ?, ?, ?)",
            [
                (
                    1,
                    "failed",
                    "<a.1@t>",
                    5,
                    "550 5.1.1 <ada@example.com>: Recipient address "
                    "rejected: User unknown in virtual mailbox table",
                    at,
                    at,
                ),
                (3, "uncertain", "<c.1@t>", 1, "", at, at),
            ],
        )
    restart(daemon)


@pytest.mark.parametrize("size", SIZES)
def test_sync_errors(seeded, snap_compare, size):
    """The whole error under the cursor, below the list (issue 24 item 3)."""
    seed_rows(seeded)

    async def run_before(pilot):
        await dashboard_loaded(pilot)
        await pilot.press("y")
        await until(
            lambda: (
                isinstance(pilot.app.screen, SyncScreen)
                and len(pilot.app.screen.errors) == 2
                and "deals" in str(pilot.app.screen.query_one("#error-detail").render())
            ),
            pilot,
        )

    assert snap_compare(app_for(seeded), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_outbox(seeded, snap_compare, size):
    """Fitted columns: Email and Error stay at 80 columns (issue 24 item 5)."""
    seed_rows(seeded)

    async def run_before(pilot):
        await dashboard_loaded(pilot)
        await pilot.press("o")
        await until(
            lambda: (
                isinstance(pilot.app.screen, OutboxScreen) and len(pilot.app.screen.messages) == 2
            ),
            pilot,
        )
        await pilot.pause(0.1)

    assert snap_compare(app_for(seeded), terminal_size=size, run_before=run_before)


def articles_seeded(daemon) -> None:
    seq = daemon.root / "state" / "articles" / "seq"
    shutil.copytree(REPO / "config" / "articles" / "sequence", seq)
    with daemon.client() as c:
        c.call("articles.import", {"channel": 1, "path": "seq"})
        (seq / "02-planning.md").unlink()
        c.call("articles.import", {"channel": 1, "path": "seq"})
        (seq / "01-welcome.md").unlink()


@pytest.mark.parametrize("size", SIZES)
def test_articles_with_a_withdrawn_one(seeded, snap_compare, size):
    """Withdrawn articles stay listed, dimmed, with their state (issue 24 item 2)."""
    articles_seeded(seeded)

    async def run_before(pilot):
        await dashboard_loaded(pilot)
        await pilot.press("a")
        await until(
            lambda: (
                isinstance(pilot.app.screen, ArticlesScreen)
                and pilot.app.screen.query_one("#articles", DataTable).row_count == 3
            ),
            pilot,
        )

    assert snap_compare(app_for(seeded), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_import_confirmation(seeded, snap_compare, size):
    """An import that would withdraw names the articles and asks; the dialog's footer shows
    its own keys (issue 24 items 2 and 9)."""
    articles_seeded(seeded)

    async def run_before(pilot):
        await dashboard_loaded(pilot)
        await pilot.press("a")
        await until(
            lambda: (
                isinstance(pilot.app.screen, ArticlesScreen)
                and pilot.app.screen.query_one("#articles", DataTable).row_count == 3
            ),
            pilot,
        )
        pilot.app.screen.query_one("#folder", Input).value = "seq"
        pilot.app.screen.start_import()  # not a click: the button's press effect is timed
        await until(lambda: isinstance(pilot.app.screen, ConfirmScreen), pilot, tries=600)
        await pilot.pause(0.1)

    assert snap_compare(app_for(seeded), terminal_size=size, run_before=run_before)


# --------------------------------------------------------------------------- issue 26

BOUNCE_REASON = (
    "550 5.1.1 <ada@example.com>: Recipient address rejected: User unknown in virtual mailbox table"
)


@pytest.fixture
def bounced(seeded):
    """Ada's address bounced, and Cy complained, in the 40 emails channel 1 sent: both rates
    2.5 %, above the dashboard's lines."""
    with seeded.client() as c:
        ada, cy = (c.call("users.get", {"id": i})["kuloo_id"] for i in (1, 3))
    take_bounces(
        seeded.root / "state" / "kuloo.sqlite3",
        [
            bounce(Kind.HARD, ada, "5.1.1", BOUNCE_REASON),
            bounce(Kind.COMPLAINT, cy, "", "abuse report"),
        ],
        datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
        sent=40,
    )
    return seeded


@pytest.mark.parametrize("size", SIZES)
def test_dashboard_with_deliverability_warnings(bounced, snap_compare, size):
    async def run_before(pilot):
        await dashboard_loaded(pilot)
        screen = pilot.app.screen
        await until(lambda: screen.query_one("#deliverability", DataTable).row_count == 2, pilot)
        await until(lambda: screen.query_one("#reputation").display, pilot)
        await pilot.pause(0.1)  # the table drawn at its new height

    assert snap_compare(app_for(bounced), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_users_with_a_bounced_user(bounced, snap_compare, size):
    async def run_before(pilot):
        await dashboard_loaded(pilot)
        await users_listed(pilot)

    assert snap_compare(app_for(bounced), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_bounced_user_profile(bounced, snap_compare, size):
    async def run_before(pilot):
        await dashboard_loaded(pilot)
        await profile_shown(pilot)

    assert snap_compare(app_for(bounced), terminal_size=size, run_before=run_before)


def test_clear_bounce_confirmation(bounced, snap_compare):
    async def run_before(pilot):
        await dashboard_loaded(pilot)
        pilot.app.open_user(1, 1)
        await until(
            lambda: isinstance(pilot.app.screen, UserScreen) and pilot.app.screen.doc is not None,
            pilot,
        )
        await pilot.press("f7")
        await until(lambda: isinstance(pilot.app.screen, ConfirmScreen), pilot)
        await pilot.pause(0.1)

    assert snap_compare(app_for(bounced), terminal_size=(80, 24), run_before=run_before)
