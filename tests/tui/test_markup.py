"""User and Sell text is shown literally on every screen, never as markup (issue 20 item 3).

A signup or a Sell lead named ``[/]`` made the Users screen raise ``MarkupError`` and the
TUI exit printing its local variables; ``[link=file:///etc/passwd]y[/]`` became a link.
Names, emails, tags, audit values, Sync error texts, outbox errors, article titles and
text, and the daemon's refusals (which quote what was typed) go through every screen
here against a real daemon; each screen must draw them character for character.
"""

from __future__ import annotations

import signal
import sqlite3
from datetime import UTC, datetime

import pytest
from plugins.bounced import bounce, take_bounces
from textual.widgets import DataTable, Input, SelectionList, Static
from textual.widgets._toast import Toast

from kuloo_daemon.rules.bounces import Kind
from kuloo_tui.app import make_app
from kuloo_tui.client import DaemonClient
from kuloo_tui.screens.articles import ArticlesScreen
from kuloo_tui.screens.channel import ChannelScreen
from kuloo_tui.screens.dashboard import DashboardScreen
from kuloo_tui.screens.outbox import OutboxScreen
from kuloo_tui.screens.sync import SyncScreen
from kuloo_tui.screens.user import UserScreen
from kuloo_tui.screens.users import UsersScreen

from .conftest import restart, until

pytestmark = pytest.mark.anyio
NAMES = ["[/]", "[bold]x", "[link=file:///etc/passwd]y[/]"]
ERROR = "Sell says [/] and [link=file:///etc/passwd]y[/] [bold]z"
CHANNEL = "[bold]Acme[/]"
TAG = "[/]"
# A remote mail server's words (a bounce's reason) are as hostile as a Sell user's.
BOUNCE_REASON = "550 5.1.1 [bold]no such user[/] [link=file:///etc/passwd]y[/]"


def hostile_daemon(make_daemon):
    """A channel, users, audit entries, a Sync error, an outbox message, an article and a
    bounce, each carrying markup (the error texts are written as a sync and a send would
    leave them; the bounce as the bounce mailbox takes it)."""
    d = make_daemon()
    folder = d.root / "state" / "articles" / "hostile"
    folder.mkdir(parents=True)
    (folder / "a.md").write_text(
        '---\nid: a1\ntitle: "[/] [bold]x"\ntags: ["[/]"]\n'
        "published_at: 2026-01-01T08:00:00Z\n---\n"
        "See [link=file:///etc/passwd]y[/] now.\n"
    )
    with d.client() as c:
        c.call(
            "channels.create",
            {
                "name": CHANNEL,
                "sequential_tags": ["welcome", TAG],
                "sender": "Acme <n@acme.example>",
            },
        )
        kuloo_ids = []
        for i, name in enumerate(NAMES):
            added = c.call(
                "users.add",
                {
                    "channel": 1,
                    "email": f"u{i}@example.com",
                    "first_name": name,
                    "last_name": name,
                    "promo_tags": [TAG],
                },
            )
            kuloo_ids.append(added["kuloo_id"])
        c.call("users.update", {"id": 1, "first_name": "[link=file:///etc/passwd]z[/]"})
        report = c.call("articles.import", {"channel": 1, "path": "hostile"})
        assert report["imported"] == 1, report
    d.signal(signal.SIGTERM)
    d.proc.wait(10)
    at = "2026-01-05 09:00:00+00:00"
    with sqlite3.connect(d.root / "state" / "kuloo.sqlite3") as conn:
        conn.execute(
            "insert into sync_error (channel_id, user_id, crm_kind, crm_id, email, code,"
            " error, attempts, payload_key, created_at, updated_at)"
            " values (1, 1, 'lead', 7, 'u0@example.com', 'refused', ?, 1, '', ?, ?)",
            (ERROR, at, at),
        )
        conn.execute("update kuloo_user set sync_error = ? where id = 1", (ERROR,))
        conn.execute(
            "insert into outbox_message (channel_id, user_id, kind, state, message_id,"
            " attempts, last_error, created_at, updated_at)"
            " values (1, 1, 'digest', 'failed', '<m.1@t>', 1, ?, ?, ?)",
            (ERROR, at, at),
        )
    # user 1 bounced; 1 bounce in 10 emails: the dashboard warns, naming the channel
    take_bounces(
        d.root / "state" / "kuloo.sqlite3",
        [bounce(Kind.HARD, kuloo_ids[0], "5.1.1", BOUNCE_REASON)],
        datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
        sent=10,
    )
    restart(d)
    return d


def drawn(table: DataTable) -> str:
    """What the table draws, line by line (its cells as the terminal shows them)."""
    return "\n".join(table.render_line(y).text for y in range(table.size.height))


def plain(widget: Static) -> str:
    return str(widget.render())


async def test_every_screen_draws_names_and_error_texts_literally(make_daemon):
    """Planted bugs (each made it fail): a string cell left to DataTable (markup), a
    ``Static`` without ``markup=False``, a notification with markup."""
    d = hostile_daemon(make_daemon)
    app = make_app(DaemonClient(d.socket_path))
    async with app.run_test(size=(160, 50)) as pilot:
        # Dashboard: the channel's name
        channels = app.screen.query_one("#channels", DataTable)
        await until(lambda: channels.row_count == 1, pilot)
        await pilot.pause()
        assert CHANNEL in drawn(channels)
        await until(lambda: app.screen.query_one("#reputation", Static).display, pilot)
        warned = plain(app.screen.query_one("#reputation", Static))
        assert f"⚠ {CHANNEL}: 10.00%" in warned

        # Users: every name, as typed (the Name column is 16 wide: its first 16 characters)
        await pilot.press("u")
        await until(
            lambda: (
                isinstance(app.screen, UsersScreen)
                and app.screen.query_one("#users", DataTable).row_count == 3
            ),
            pilot,
        )
        await pilot.pause()
        users = drawn(app.screen.query_one("#users", DataTable))
        shown = [
            "[link=file:///etc/passwd]z[/] [/]",
            "[bold]x [bold]x",
            "[link=file:///etc/passwd]y[/] [link=file:///etc/passwd]y[/]",
        ]
        for n, name in enumerate(shown):
            assert f"u{n}@example.com" in users and name[:16] in users, (name, users)
        assert app.screen.sub_title == f"Users of {CHANNEL}"

        # Profile: the sync error, the promo tag, the audit trail's old and new names
        table = app.screen.query_one("#users", DataTable)
        table.focus()
        table.move_cursor(row=0)
        await pilot.press("enter")
        await until(
            lambda: (
                isinstance(app.screen, UserScreen)
                and app.screen.doc is not None
                and app.screen.query_one("#audit", DataTable).row_count > 0
            ),
            pilot,
        )
        await pilot.pause()
        profile = app.screen
        assert ERROR in plain(profile.query_one("#crm", Static))
        assert f"5.1.1 {BOUNCE_REASON}" in plain(profile.query_one("#bounce", Static))
        tags = profile.query_one(SelectionList)
        prompts = [str(tags.get_option_at_index(i).prompt) for i in range(tags.option_count)]
        assert prompts == ["welcome", TAG]
        audit = drawn(profile.query_one("#audit", DataTable))
        assert "[link=file:///etc/passwd]z[/]"[:21] in audit and "[/]" in audit, audit
        await pilot.press("escape", "escape")

        # Sync errors: the record's error text
        await until(lambda: isinstance(app.screen, DashboardScreen), pilot)
        await pilot.press("y")
        await until(
            lambda: isinstance(app.screen, SyncScreen) and len(app.screen.errors) == 1, pilot
        )
        await pilot.pause()
        assert ERROR in drawn(app.screen.query_one("#sync-errors", DataTable))
        await pilot.press("escape")

        # Outbox: the failed message's error
        await until(lambda: isinstance(app.screen, DashboardScreen), pilot)
        await pilot.press("o")
        await until(lambda: isinstance(app.screen, OutboxScreen) and app.screen.messages, pilot)
        await pilot.pause()
        assert ERROR[:30] in drawn(app.screen.query_one("#outbox", DataTable))
        await pilot.press("escape")

        # Articles: the title and tags in the list, the text in the preview
        await until(lambda: isinstance(app.screen, DashboardScreen), pilot)
        await pilot.press("a")
        await until(lambda: isinstance(app.screen, ArticlesScreen) and app.screen.articles, pilot)
        await pilot.pause()
        articles = app.screen
        listed = drawn(articles.query_one("#articles", DataTable))
        assert "[/] [bold]x" in listed and f" {TAG} " in listed
        articles.query_one("#articles", DataTable).focus()
        await pilot.press("enter")
        preview = articles.query_one("#preview", Static)
        await until(
            lambda: "See [link=file:///etc/passwd]y[/] now." in plain(preview), pilot, tries=600
        )
        assert "Subject: [/] [bold]x" in plain(preview)


async def test_notifications_quote_what_was_typed_literally(make_daemon):
    """The daemon's refusal quotes the email (or the tags) that was typed: the toast and
    the channel's problem list show it as it is. Planted bugs: ``App.notify``'s default
    (markup) kept, the problems ``Static`` with markup."""
    d = make_daemon()
    with d.client() as c:
        c.call("channels.create", {"name": "Acme"})
    app = make_app(DaemonClient(d.socket_path))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await until(lambda: app.screen.query_one("#channels", DataTable).row_count == 1, pilot)
        app.add_user(1)
        await until(
            lambda: isinstance(app.screen, UserScreen) and app.screen.query("#email"), pilot
        )
        for typed in ("[/]", "[link=file:///etc/passwd]y[/]"):
            app.screen.query_one("#email").value = typed
            await pilot.press("ctrl+s")
            await until(
                lambda: any(n.title == "Adding the user" for n in app._notifications), pilot
            )
            await pilot.pause()
            await until(
                lambda typed=typed: any(
                    typed in str(toast.render()) for toast in app.screen.query(Toast)
                ),
                pilot,
            )
        # The channel document lists the daemon's problems inline, quoting the tags typed
        app.pop_screen()
        app.open_channel(1)
        await until(
            lambda: isinstance(app.screen, ChannelScreen) and app.screen.doc is not None, pilot
        )
        app.screen.query_one("#tags", Input).value = f"{NAMES[2]}, {NAMES[2]}"
        await pilot.press("ctrl+s")
        problems = app.screen.query_one("#problems", Static)
        await until(lambda: f"[{NAMES[2]!r}] more than once" in plain(problems), pilot)
        app.notify("[bold]sync[/] finished for [/]")
        await until(
            lambda: any(
                "[bold]sync[/] finished for [/]" in str(t.render()) for t in app.screen.query(Toast)
            ),
            pilot,
        )
