"""Pilot tests of the TUI against a real daemon subprocess (and sellsim for the token)."""

from __future__ import annotations

import shutil
import signal
import sqlite3
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Select, Static

from kuloo_tui.app import make_app
from kuloo_tui.client import DaemonClient
from kuloo_tui.screens.articles import ArticlesScreen
from kuloo_tui.screens.base import Banner
from kuloo_tui.screens.channel import ChannelScreen
from kuloo_tui.screens.confirm import ConfirmScreen
from kuloo_tui.screens.dashboard import DashboardScreen
from kuloo_tui.screens.outbox import OutboxScreen, state_cell
from kuloo_tui.screens.user import UserScreen, describe_progress
from kuloo_tui.screens.users import UsersScreen

from .conftest import restart, until

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]


def app_for(daemon):
    return make_app(DaemonClient(daemon.socket_path, backoff_start=0.05, backoff_max=0.5))


def rows(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_dashboard_lists_channels_and_follows_events(daemon):
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme", "plan": "pro"})
        for i in range(3):
            c.call("users.add", {"channel": 1, "email": f"u{i}@example.com"})
    app = app_for(daemon)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one("#channels", DataTable)
        await until(lambda: table.row_count == 1, pilot)
        assert rows(table)[0][:5] == ["1", "Acme", "pro", "none", "3"]
        with daemon.client() as c:  # another admin's change arrives as an event
            c.call("channels.create", {"name": "Beta"})
        await until(lambda: table.row_count == 2, pilot)
        assert rows(table)[1][1] == "Beta"


async def test_find_a_user_and_change_their_frequency(daemon):
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme", "sequential_tags": ["welcome", "upsell"]})
        for i in range(120):
            c.call(
                "users.add",
                {"channel": 1, "email": f"user{i:03}@example.com", "first_name": f"N{i}"},
            )
        c.call(
            "users.add",
            {
                "channel": 1,
                "email": "maria@example.org",
                "first_name": "Maria",
                "last_name": "Lopez",
            },
        )
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        dash = app.screen
        assert isinstance(dash, DashboardScreen)
        await until(lambda: dash.query_one("#channels", DataTable).row_count == 1, pilot)
        await pilot.press("u")
        await until(lambda: isinstance(app.screen, UsersScreen), pilot)
        users = app.screen
        table = users.query_one("#users", DataTable)
        await until(lambda: table.row_count == 50, pilot)  # one page, never every user
        assert users.total == 121 and users.next is not None
        await pilot.press("m")
        await until(lambda: table.row_count == 100, pilot)
        await pilot.press("slash", *"lopez")
        await until(
            lambda: table.row_count == 1 and users.users[0]["email"] == "maria@example.org", pilot
        )
        table.focus()
        await pilot.press("enter")
        await until(
            lambda: isinstance(app.screen, UserScreen) and app.screen.doc is not None, pilot
        )
        profile = app.screen
        assert [o.value for o in profile.query_one("#promo_tags")._options] == ["welcome", "upsell"]
        profile.query_one("#frequency", Select).value = "monthly"
        await pilot.press("ctrl+s")
        await until(lambda: profile.doc["frequency"] == "monthly", pilot)
        with daemon.client() as c:
            assert c.call("users.get", {"id": profile.user_id})["frequency"] == "monthly"
        audit = profile.query_one("#audit", DataTable)
        await until(lambda: any(r[2] == "frequency" for r in rows(audit)), pilot)
        await pilot.press("escape")
        # the users list shows the change (the daemon's user.updated event)
        await until(lambda: rows(table)[0][3] == "monthly", pilot)


async def test_add_user_refusal_shows_the_daemons_message(daemon):
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme"})
        c.call("users.add", {"channel": 1, "email": "taken@example.com"})
    app = app_for(daemon)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: app.client.connected, pilot)
        app.add_user(1)
        await pilot.pause()
        screen = app.screen
        screen.query_one("#email", Input).value = "TAKEN@example.com"
        await pilot.press("ctrl+s")
        await until(lambda: any("Adding the user" == n.title for n in app._notifications), pilot)
        note = next(n for n in app._notifications if n.title == "Adding the user")
        assert "taken@example.com" in note.message.lower() and note.severity == "error"
        assert isinstance(app.screen, UserScreen)  # still there, nothing crashed


async def test_a_token_for_wrongly_set_up_fields_shows_every_problem(make_daemon, sellsim):
    from sellsim.seeds import DEMO_TOKEN

    def field_id(type_, name):
        return next(
            d["id"]
            for d in sellsim.state()["accounts"][0]["definitions"][type_]
            if d["name"] == name
        )

    sellsim.edit_custom_field("lead", field_id("lead", "Promo"), {"name": "promo"})
    sellsim.delete_custom_field("contact", field_id("contact", "Last active"))
    sellsim.add_custom_field(
        "contact", {"name": "Last active", "type": "string", "for_contact": True}
    )
    daemon = make_daemon(
        sell=f'base_url = "{sellsim.base_url}"\nmax_attempts = 2\nverify_timeout_seconds = 20\n'
    )
    with daemon.client() as c:
        c.call(
            "channels.create",
            {"name": "Acme", "sequential_tags": ["welcome", "onboarding", "upsell"]},
        )
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: app.screen.query_one("#channels", DataTable).row_count == 1, pilot)
        await pilot.press("enter")
        await until(
            lambda: isinstance(app.screen, ChannelScreen) and app.screen.doc is not None, pilot
        )
        screen = app.screen
        token = screen.query_one("#token", Input)
        assert token.password  # masked as typed
        token.focus()
        await pilot.press(*DEMO_TOKEN[:30])
        token.value = DEMO_TOKEN
        await pilot.press("ctrl+s")
        await until(lambda: screen.doc["connection"]["status"] == "failed", pilot, tries=600)
        shown = str(screen.query_one("#problems", Static).render()).splitlines()
        assert shown == [
            '• Leads: field "promo" not found — did you mean "Promo"? (case and spaces matter)',
            '• Contacts: "Last active" is a string field; it must be a date',
        ]
        assert (
            token.value == ""
            and DEMO_TOKEN[-4:] in token.placeholder
            and DEMO_TOKEN not in token.placeholder
        )
        # a malformed token: the daemon's refusal, shown in place of the problems
        token.value = "short token"
        await pilot.press("ctrl+s")
        await until(
            lambda: "20 to 512" in str(screen.query_one("#problems", Static).render()), pilot
        )


async def test_the_banner_shows_while_the_daemon_is_down_and_the_tui_reconnects(daemon):
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme"})
    app = app_for(daemon)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one("#channels", DataTable)
        banner = app.screen.query_one(Banner)
        await until(lambda: table.row_count == 1, pilot)
        assert not banner.display or not banner.has_class("-down")
        daemon.signal(signal.SIGKILL)
        await until(lambda: banner.has_class("-down"), pilot)
        assert "reconnecting" in str(banner.render())
        # meanwhile a refresh fails with a notification, never a traceback
        await pilot.press("r")
        await until(lambda: any(n.severity == "error" for n in app._notifications), pilot)
        restart(daemon)
        with daemon.client() as c:
            c.call("channels.create", {"name": "Beta"})
        await until(lambda: not banner.has_class("-down"), pilot, tries=400)
        await until(lambda: table.row_count == 2, pilot)  # the screen refreshed on its own


async def test_reset_sequence_goes_through_a_confirmation(daemon):
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme", "sequential_tags": ["welcome"]})
        c.call("users.add", {"channel": 1, "email": "ada@example.com", "promo_tags": ["welcome"]})
    app = app_for(daemon)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: app.client.connected, pilot)
        app.open_user(1, 1)
        await until(
            lambda: isinstance(app.screen, UserScreen) and app.screen.doc is not None, pilot
        )
        profile = app.screen
        progress = profile.query_one("#progress", Static)
        await until(lambda: "No sequential article sent yet" in str(progress.render()), pilot)
        await pilot.press("f8")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        assert "ada@example.com" in str(app.screen.query_one("#question", Static).render())
        await pilot.press("escape")  # cancelled: nothing is called
        await until(lambda: app.screen is profile, pilot)
        await pilot.pause(0.2)
        assert not any("reset" in n.message.lower() for n in app._notifications)
        await pilot.press("f8")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        await pilot.click("#yes")
        await until(
            lambda: any(n.message.startswith("Sequence reset") for n in app._notifications), pilot
        )
        assert app.screen is profile


def test_progress_is_described_sent_then_next():
    text = describe_progress(
        {
            "sent": [{"article": 3, "title": "Welcome", "sent_at": "2026-01-05T09:00:00Z"}],
            "next": {"article": 4, "title": "", "due_at": "2026-01-08T09:00:00Z"},
        }
    )
    assert text.splitlines() == ["Sent 2026-01-05 09:00  Welcome", "Next 2026-01-08 09:00  4"]
    assert describe_progress({"sent": [], "next": None}).splitlines() == [
        "No sequential article sent yet.",
        "Nothing more is due.",
    ]


async def test_outbox_screen_lists_and_refuses_to_resolve_a_settled_message(daemon):
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme"})
    app = app_for(daemon)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one("#channels", DataTable)
        await until(lambda: table.row_count == 1, pilot)
        assert rows(table)[0][6] == "0/0/0"  # queued/failed/uncertain
        await pilot.press("o")
        await until(lambda: isinstance(app.screen, OutboxScreen), pilot)
        count = app.screen.query_one("#count", Static)
        await until(lambda: "0 shown, 0 uncertain" in str(count.render()), pilot)
        app.screen.messages = [{"id": 1, "email": "a@example.com", "state": "sent"}]
        app.screen.query_one("#outbox", DataTable).add_row(
            "1", "a@example.com", "sequence", "sent", "1", "", ""
        )
        await pilot.press("s")
        await until(
            lambda: any("Only an uncertain" in n.message for n in app._notifications), pilot
        )
        assert not isinstance(app.screen, ConfirmScreen)


def test_uncertain_is_highlighted():
    assert state_cell("uncertain").plain == "UNCERTAIN" and "yellow" in str(
        state_cell("uncertain").style
    )
    assert state_cell("sent").style == ""


async def test_articles_import_list_and_preview(daemon):
    shutil.copytree(
        REPO / "config" / "articles" / "sequence", daemon.root / "state" / "articles" / "seq"
    )
    with daemon.client() as c:
        c.call(
            "channels.create",
            {"name": "Acme", "sequential_tags": ["welcome"], "sender": "Acme <n@acme.example>"},
        )
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: app.screen.query_one("#channels", DataTable).row_count == 1, pilot)
        await pilot.press("a")
        await until(lambda: isinstance(app.screen, ArticlesScreen), pilot)
        screen = app.screen
        screen.query_one("#folder", Input).value = "seq"
        await pilot.click("#import")
        table = screen.query_one("#articles", DataTable)
        await until(lambda: table.row_count == 3, pilot, tries=600)
        assert rows(table)[0][1] == "Welcome to Kuloo Gardens"
        table.focus()
        await pilot.press("enter")
        preview = screen.query_one("#preview", Static)
        await until(lambda: "Thank you for joining" in str(preview.render()), pilot, tries=600)
        text = str(preview.render())
        assert "HTML size:" in text and "Warning: the channel has no postal address" in text
        assert (
            "Subject: Welcome to Kuloo Gardens\nPreview: Thank you for joining Kuloo Gardens.\n"
            in text
        )


def seed_counts(
    db: Path, channel: int, user: int, failed: int, uncertain: int, errors: int
) -> None:
    """More outbox messages and Sync errors than any page holds, written while the daemon is
    stopped."""
    at = "2026-01-05 09:00:00+00:00"
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "insert into outbox_message (channel_id, user_id, kind, state, message_id, attempts, "
            "last_error, created_at, updated_at) values (?, ?, 'digest', ?, ?, 1, '', ?, ?)",
            [
                (channel, user, state, f"<seed.{state}.{i}@t>", at, at)
                for state, n in (("failed", failed), ("uncertain", uncertain))
                for i in range(n)
            ],
        )
        conn.executemany(
            "insert into sync_error (channel_id, crm_kind, "
            "crm_id, email, code, error, attempts, payload_key,"
            " created_at, updated_at) values (?, 'lead', "
            "?, '', 'duplicate', 'two leads', 1, '', ?, ?)",
            [(channel, 1000 + i, at, at) for i in range(errors)],
        )


async def test_dashboard_counts_are_exact_beyond_a_page(daemon):
    """Planted bug: the dashboard counts a page of sync.errors / outbox.list (``100+``)."""
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme"})
        user = c.call("users.add", {"channel": 1, "email": "u@example.com"})["id"]
    daemon.signal(signal.SIGTERM)
    daemon.proc.wait(10)
    seed_counts(
        daemon.root / "state" / "kuloo.sqlite3", 1, user, failed=1001, uncertain=3, errors=501
    )
    restart(daemon)
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#channels", DataTable)
        await until(lambda: table.row_count == 1, pilot)
        assert rows(table)[0][4:7] == ["1", "501", "0/1,001/3"]


async def test_the_banner_says_when_the_daemons_database_is_unreachable(make_daemon, own_pg_server):
    """Issue 22 item 2: PostgreSQL stopped under the daemon — the banner says the database is
    unreachable (the daemon's ``store.state`` event), and clears once it answers again.
    Planted bug: the app ignores ``store.state`` (the banner stays hidden)."""
    import asyncio

    db = own_pg_server.fresh_database()
    d = make_daemon(extra=f'[store]\nurl = "{own_pg_server.url(db)}"\n')
    with d.client() as c:
        c.call("channels.create", {"name": "Acme"})
    app = app_for(d)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one("#channels", DataTable)
        banner = app.screen.query_one(Banner)
        await until(lambda: table.row_count == 1, pilot)
        assert not banner.has_class("-down")
        await asyncio.to_thread(own_pg_server.halt)
        await until(
            lambda: banner.has_class("-down") and "database is unreachable" in str(banner.render()),
            pilot,
            tries=400,
        )
        await asyncio.to_thread(own_pg_server.resume)
        await until(lambda: not banner.has_class("-down"), pilot, tries=600)
