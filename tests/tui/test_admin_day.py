"""Issue 24, the admin's day: pilot tests against a real daemon subprocess.

Each test names the bug it was seen to catch (planted, then restored).
"""

from __future__ import annotations

import re
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest
from textual.color import Color
from textual.widgets import DataTable, Footer, Input, Select, Static

from kuloo_tui.app import describe_run, make_app
from kuloo_tui.client import DaemonClient
from kuloo_tui.screens.articles import ArticlesScreen, describe_import
from kuloo_tui.screens.base import Col, failure_title, fit_widths
from kuloo_tui.screens.confirm import ConfirmScreen
from kuloo_tui.screens.dashboard import DashboardScreen
from kuloo_tui.screens.sync import SyncScreen
from kuloo_tui.screens.user import CheckList, UserScreen
from kuloo_tui.screens.users import UsersScreen

from .conftest import restart, until

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]
WEB = "http://sell-web.test/_sim/web"
LONG_FIX = (
    "Two Sell records carry the email shared@example.com: Kuloo cannot tell which one is "
    "the user. Merge or delete the duplicate in Sell (keep the one with the deals), then "
    "sync again; the error clears on its own once only one record has the address."
)


def app_for(daemon):
    return make_app(DaemonClient(daemon.socket_path, backoff_start=0.05, backoff_max=0.5))


def screen_text(app) -> str:
    """The screen as plain text, line by line (what an admin sees, without colours)."""
    return "\n".join(strip.text.rstrip() for strip in app.screen._compositor.render_strips())


def toasts(app) -> list[tuple[str, str]]:
    return [(n.title, n.message) for n in app._notifications]


def bindings_shown(screen) -> dict[str, str]:
    return {
        b.binding.key: b.binding.description
        for b in screen.active_bindings.values()
        if b.binding.show
    }


async def open_screen(app, pilot, key: str, kind) -> None:
    await until(
        lambda: (
            isinstance(app.screen, DashboardScreen)
            and app.screen.query_one("#channels", DataTable).row_count >= 1
        ),
        pilot,
    )
    await pilot.press(key)
    await until(lambda: isinstance(app.screen, kind), pilot)


# --------------------------------------------------------------------------- item 2


async def test_an_import_that_would_withdraw_asks_first_and_withdrawn_articles_stay_listed(daemon):
    """Importing a folder whose files are gone withdrew articles with a bare "withdrawn 3"
    toast. Now the dry run names them in a confirmation (its own footer keys); Cancel
    changes nothing; Yes withdraws, and the list keeps them, dimmed, with their state.
    Planted bugs: the dry-run answer ignored (imported at once); the state column blank."""
    seq = daemon.root / "state" / "articles" / "seq"
    shutil.copytree(REPO / "config" / "articles" / "sequence", seq)
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme", "sequential_tags": ["welcome"]})
        c.call("articles.import", {"channel": 1, "path": "seq"})
    (seq / "01-welcome.md").unlink()
    (seq / "04-broken.md").write_text("---\ntitle: [oops\n---\nbody\n")
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_screen(app, pilot, "a", ArticlesScreen)
        screen = app.screen
        table = screen.query_one("#articles", DataTable)
        await until(lambda: table.row_count == 3, pilot)
        screen.query_one("#folder", Input).value = "seq"
        await pilot.click("#import")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot, tries=600)
        question = str(app.screen.query_one("#question", Static).render())
        assert "withdraw 1 article" in question
        assert "Welcome to Kuloo Gardens (seq/01-welcome.md)" in question
        assert (
            app.screen.query(Footer)
            and {"escape": "Cancel", "y": "Yes"}.items() <= bindings_shown(app.screen).items()
        )
        await pilot.press("escape")
        await until(lambda: app.screen is screen, pilot)
        with daemon.client() as c:
            listed = c.call("articles.list", {"channel": 1})["articles"]
        assert not any(a["withdrawn_at"] for a in listed)  # cancelled: nothing written
        await pilot.click("#import")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot, tries=600)
        await pilot.press("y")
        await until(
            lambda: any(
                "withdrawn" in str(c) for r in range(table.row_count) for c in table.get_row_at(r)
            ),
            pilot,
            tries=600,
        )
        row = next(
            table.get_row_at(r)
            for r in range(table.row_count)
            if str(table.get_row_at(r)[1]) == "Welcome to Kuloo Gardens"
        )
        assert str(row[-1]) == "withdrawn" and "dim" in str(row[1].spans[0].style)
        assert {str(table.get_row_at(r)[-1]) for r in range(table.row_count)} == {
            "active",
            "withdrawn",
        }
        await until(lambda: any(m.startswith("Imported") for _, m in toasts(app)), pilot, tries=600)
        message = next(m for _, m in toasts(app) if m.startswith("Imported"))
        assert "Withdrawn: Welcome to Kuloo Gardens (seq/01-welcome.md)" in message
        assert re.search(
            r"Not imported: seq/04-broken\.md: front matter is not valid YAML", message
        )


def test_the_import_toast_names_files_and_reasons_and_counts_the_rest():
    """Item 8: "problems 1" said nothing. Planted bug: problems listed by count only."""
    report = {
        "imported": 1,
        "updated": 0,
        "unchanged": 2,
        "withdrawn": 0,
        "cancelled": 0,
        "withdrawn_articles": [],
        "problems": [{"file": f"n/{i}.md", "problem": "'title' is missing"} for i in range(10)],
    }
    text = describe_import(report)
    assert text.splitlines()[0] == "Imported: 1 imported, 0 updated, 2 unchanged, 0 withdrawn"
    assert "Not imported: n/0.md: 'title' is missing" in text and "… and 2 more" in text


# --------------------------------------------------------------------------- items 4 and 5


async def test_search_enter_opens_the_first_result_and_down_moves_into_the_list(daemon):
    """Enter and ↓ did nothing in the search box. Planted bugs: the SearchInput bindings
    removed (Enter submits into nothing, ↓ stays), the footer not showing them."""
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme"})
        for name in ("ann", "bob", "maria"):
            c.call("users.add", {"channel": 1, "email": f"{name}@example.com"})
    app = app_for(daemon)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_screen(app, pilot, "u", UsersScreen)
        users = app.screen
        await until(lambda: users.query_one("#users", DataTable).row_count == 3, pilot)
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        shown = bindings_shown(users)
        assert shown.get("enter") == "Open highlighted" and shown.get("down") == "Into the list"
        assert "Open highlighted" in screen_text(app) and "Into the list" in screen_text(app)
        await pilot.press("down")
        assert app.focused is users.query_one("#users", DataTable)
        await pilot.press("slash", *"maria", "enter")  # before or after the answer: the same
        await until(
            lambda: isinstance(app.screen, UserScreen) and app.screen.doc is not None, pilot
        )
        assert app.screen.doc["email"] == "maria@example.com"


def test_widths_follow_content_and_the_least_kept_columns_give_way():
    """Fixed widths cut ``dmitri.berg.3@example.com`` to a plausible wrong address.
    Planted bugs: no slack to the flex column; dropping by position instead of ``keep``."""
    cols = [
        Col("Id", keep=6),
        Col("Email", keep=9, flex=True, least=20),
        Col("Name", keep=4, least=8),
        Col("Source", keep=1),
        Col("Sync error", keep=8),
    ]
    rows = [("7", "dmitri.berg.3@example.com", "Dmitri Berg", "admin", "yes")]
    wide = fit_widths(cols, rows, 120)
    assert wide[1] is not None and wide[1] > len("dmitri.berg.3@example.com")  # the slack
    assert sum(w + 2 for w in wide if w) == 120
    narrow = fit_widths(cols, rows, 50)
    assert narrow[3] is None and narrow[4] == len("Sync error")  # Source gave way, not Sync error
    assert sum(w + 2 for w in narrow if w) <= 50


async def test_users_and_outbox_at_80_columns_keep_their_error_columns_and_cut_with_ellipsis(
    daemon,
):
    """At 80 columns "Sync error" (Users) and "Error" (Outbox) were off screen; at 120 a long
    email was cut without a mark. Planted bugs: ``overflow="ellipsis"`` removed from
    ``literal``; the old fixed widths."""
    long = "dmitri.berg.3.with.a.long.local.part@subdomain.example.com"
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme"})
        c.call(
            "users.add",
            {
                "channel": 1,
                "email": "dmitri.berg.3@example.com",
                "first_name": "Dmitri",
                "last_name": "Berg",
            },
        )
        c.call("users.add", {"channel": 1, "email": long})
    app = app_for(daemon)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_screen(app, pilot, "u", UsersScreen)
        table = app.screen.query_one("#users", DataTable)
        await until(lambda: table.row_count == 2, pilot)
        await pilot.pause(0.2)
        labels = [str(col.label) for col in table.columns.values()]
        assert "Sync error" in labels and "Email" in labels
        text = screen_text(app)
        assert "Sync error" in text and "dmitri.berg.3@example.com " in text
        assert "dmitri.berg.3.with" in text and long not in text and "…" in text
        await pilot.press("escape", "o")
        await until(lambda: app.screen.__class__.__name__ == "OutboxScreen", pilot)
        await pilot.pause(0.2)
        assert "Error" in [
            str(c.label) for c in app.screen.query_one("#outbox", DataTable).columns.values()
        ]
        assert re.search(r"Email.*State.*Error", screen_text(app))
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_screen(app, pilot, "u", UsersScreen)
        table = app.screen.query_one("#users", DataTable)
        await until(lambda: table.row_count == 2, pilot)
        await pilot.pause(0.2)
        assert long in screen_text(app)  # room enough: nothing cut


# --------------------------------------------------------------------------- items 3 and 10


def seed_sync_errors(db: Path) -> None:
    at = "2026-01-05 09:00:00+00:00"
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "insert into sync_error (channel_id, crm_kind, crm_id, email, code, error, attempts,"
            " payload_key, created_at, updated_at) values (1, ?, ?, ?, 'duplicate', ?, 1, '', ?, ?)",
            [
                ("contact", 17, "other@example.com", "A short problem.", at, at),
                ("lead", 4242, "shared@example.com", LONG_FIX, at, at),
            ],
        )


async def test_the_whole_error_is_shown_and_a_shared_email_gives_its_sell_record(make_daemon):
    """Sync error instructions needed ~100 presses of →; an error without a user opened
    nothing. Now the error under the cursor is shown whole, and Enter copies the record's
    link (built on ``[sell] web_url``, never opening a browser) and shows it as a hyperlink.
    Planted bugs: the detail pane not updated; the link built on the default web app."""
    daemon = make_daemon(sell=f'web_url = "{WEB}"\n')
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme"})
    daemon.signal(signal.SIGTERM)
    daemon.proc.wait(10)
    seed_sync_errors(daemon.root / "state" / "kuloo.sqlite3")
    restart(daemon)
    app = app_for(daemon)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_screen(app, pilot, "y", SyncScreen)
        sync = app.screen
        await until(lambda: len(sync.errors) == 2, pilot)
        await until(lambda: app.sell_web_url == WEB, pilot)
        detail = sync.query_one("#error-detail", Static)
        await until(lambda: "A short problem." in str(detail.render()), pilot)
        await pilot.press("down")  # the cursor moves: the pane follows it
        await until(lambda: "keep the one with the deals" in str(detail.render()), pilot)
        flat = " ".join(screen_text(app).split())
        assert (
            "sync again; the error clears on its own once only one record has the address." in flat
        )
        await pilot.press("enter")
        url = f"{WEB}/leads/4242"
        assert app.clipboard == url and sync.opened_record == url
        assert any(url in m and t == "Sell record" for t, m in toasts(app))
        rendered = detail.render()
        assert any(span.style.link == url for span in rendered.spans)  # a terminal hyperlink


# --------------------------------------------------------------------------- item 8


def test_a_run_with_standing_errors_says_so():
    """A run with 3 standing sync errors read plain "ok". Planted bug: count not shown."""
    run = {"status": "ok", "counts": {"pulled": 4}}
    assert describe_run(run, 3) == "Sync ok · 3 sync errors: pulled 4"
    assert describe_run(run, 1).startswith("Sync ok · 1 sync error:")
    assert (
        describe_run({"status": "failed", "reason": "sell_unreachable", "counts": {}}, 0)
        == "Sync failed (sell_unreachable)"
    )


def test_toasts_are_never_titled_with_a_method_name():
    """A toast was titled "sync.run". Planted bug: ``failure_title`` returning the method."""
    for method in (
        "sync.run",
        "articles.import",
        "users.update",
        "outbox.resolve",
        "channels.verify",
        "users.progress",
        "something.new",
    ):
        assert not re.fullmatch(r"\w+\.\w+", failure_title(method)), method


async def test_sync_now_never_says_started_when_the_daemon_is_down(daemon):
    """ "Sync started…" appeared right before "not reachable". Planted bug: the old
    unconditional "Sync started…" toast."""
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme"})
    app = app_for(daemon)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_screen(app, pilot, "y", SyncScreen)
        daemon.signal(signal.SIGTERM)
        daemon.proc.wait(10)
        await until(lambda: app.down_reason is not None, pilot)
        await pilot.press("s")
        await until(lambda: any("not reachable" in m for _, m in toasts(app)), pilot)
        assert not any(m.startswith(("Sync started", "Sync running")) for _, m in toasts(app))
        assert all(not re.fullmatch(r"\w+\.\w+", t or "") for t, _ in toasts(app))


# --------------------------------------------------------------------------- item 9


def _luminance(c: Color) -> float:
    def channel(v: int) -> float:
        x = v / 255
        return x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(c.r) + 0.7152 * channel(c.g) + 0.0722 * channel(c.b)


def contrast(a: Color, b: Color) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


async def test_visual_details_focus_checkmarks_contrast(daemon):
    """Focus on compact selects was nearly invisible; promo tags differed only by colour;
    light-theme headings were 1.5:1. Planted bugs: each CSS rule removed; the ✓/☐ marks."""
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme", "sequential_tags": ["welcome", "upsell"]})
        c.call("users.add", {"channel": 1, "email": "ann@example.com", "promo_tags": ["welcome"]})
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(
            lambda: (
                isinstance(app.screen, DashboardScreen)
                and app.screen.query_one("#channels", DataTable).row_count == 1
            ),
            pilot,
        )
        app.open_user(1, 1)
        await until(
            lambda: isinstance(app.screen, UserScreen) and app.screen.doc is not None, pilot
        )
        tags = app.screen.query_one("#promo_tags", CheckList)
        await until(lambda: tags.option_count == 2, pilot)
        lines = [tags.render_line(y).text for y in range(2)]
        assert lines[0].lstrip().startswith(("▐✓▌", "✓")) or "✓" in lines[0], lines
        assert "☐" in lines[1] and "✓" not in lines[1], lines
        select = app.screen.query_one("#frequency", Select)
        current = select.query_one("SelectCurrent")
        blurred = current.styles.background
        select.focus()
        await pilot.pause(0.1)
        assert current.styles.background != blurred and current.styles.background.a > 0
        app.theme = "textual-light"
        await pilot.pause(0.2)
        for heading in app.screen.query(".section-title"):
            background, color = heading.background_colors[1], heading.colors[3]
            assert contrast(color, background) >= 4.5, (heading, color, background)


def test_less_kept_columns_give_way_before_a_name_is_cut():
    """At 80 columns the Users list cut names to "Dmitri …" while Source and CRM (the same
    for everyone) were shown whole. Planted bug: the give-way loop removed."""
    from kuloo_tui.screens.users import COLUMNS

    rows = [
        ("1", "dmitri.berg.3@example.com", "Dmitri Berg", "weekly", "admin", "—", ""),
        (
            "2",
            "ann.marie.longname-with-suffix@subdomain.example.org",
            "Ann-Marie Longname",
            "weekly",
            "admin",
            "—",
            "yes",
        ),
    ]
    widths = dict(zip((c.label for c in COLUMNS), fit_widths(COLUMNS, rows, 84), strict=True))
    assert widths["Source"] is None and widths["Name"] >= len("Dmitri Berg")
    assert widths["Sync error"] == len("Sync error") and widths["Email"] >= len(rows[0][1])
