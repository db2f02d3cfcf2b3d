"""Bounces in the TUI (issue 26 items 6 and 7), against a real daemon: the Users table marks
bounced users (with a legend, and a filter), the profile shows the bounce with the remote
server's words drawn literally and clears it only after a confirmation, and the dashboard
shows each channel's deliverability and warns above 2 % bounces or 0.1 % complaints."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from plugins.bounced import bounce, take_bounces
from textual.widgets import Button, DataTable, Select, Static

from kuloo_daemon.rules.bounces import Kind
from kuloo_tui.screens.confirm import ConfirmScreen
from kuloo_tui.screens.dashboard import warnings
from kuloo_tui.screens.user import UserScreen
from kuloo_tui.screens.users import LEGEND, UsersScreen

from .conftest import until
from .test_app import app_for

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # the daemon's manual clock
REASON = "550 5.1.1 <ada@example.com>: [bold]User unknown[/] in [link=file:///etc/passwd]x[/]"


def seed_bounces(daemon, *, sent: int = 40) -> dict[str, dict]:
    """Channel 1 with ada (hard bounce), bob (complained) and cy; ``sent`` emails sent."""
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme News"})
        users = {
            name: c.call("users.add", {"channel": 1, "email": f"{name}@example.com"})
            for name in ("ada", "bob", "cy")
        }
    take_bounces(
        daemon.root / "state" / "kuloo.sqlite3",
        [
            bounce(Kind.HARD, users["ada"]["kuloo_id"], "5.1.1", REASON),
            bounce(Kind.COMPLAINT, users["bob"]["kuloo_id"], "", "abuse report"),
        ],
        NOW,
        sent=sent,
    )
    return users


def drawn(table: DataTable) -> str:
    return "\n".join(table.render_line(y).text for y in range(table.size.height))


def plain(widget: Static) -> str:
    return str(widget.render())


async def test_bounced_users_are_marked_shown_and_cleared_after_a_confirmation(daemon):
    users = await asyncio.to_thread(seed_bounces, daemon)
    ada = users["ada"]
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app.open_users(1)
        await until(
            lambda: isinstance(app.screen, UsersScreen) and len(app.screen.users) == 3, pilot
        )
        screen = app.screen
        await pilot.pause()
        table = screen.query_one("#users", DataTable)
        lines = drawn(table).splitlines()
        assert "Bounced" in lines[0]
        (ada_line,) = [x for x in lines if "ada@example.com" in x]
        assert ada_line.rstrip().endswith("5.1.1")
        assert not any("5.1.1" in x for x in lines if "ada@" not in x)
        assert LEGEND in plain(screen.query_one("#count", Static))

        # the bounced filter asks the daemon for bounced users only
        screen.query_one("#f-bounced", Select).value = True
        await until(lambda: [u["email"] for u in screen.users] == ["ada@example.com"], pilot)
        screen.query_one("#f-bounced", Select).value = False
        await until(lambda: len(screen.users) == 2, pilot)
        assert LEGEND not in plain(screen.query_one("#count", Static))
        screen.query_one("#f-bounced", Select).clear()
        await until(lambda: len(screen.users) == 3, pilot)

        app.open_user(ada["id"], 1)
        await until(
            lambda: isinstance(app.screen, UserScreen) and app.screen.doc is not None, pilot
        )
        profile = app.screen
        await pilot.pause()
        shown = plain(profile.query_one("#bounce", Static))
        assert profile.query_one("#bounce", Static).display
        assert f"Bounced on 2026-01-05 09:00 UTC: 5.1.1 {REASON}" in shown  # drawn as it came
        assert profile.query_one("#clear-bounce", Button).display
        assert "f7" in profile.active_bindings  # in the footer: F7 Clear bounce

        # Cancel: nothing changes
        await pilot.press("f7")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        assert REASON in plain(app.screen.query_one("#question", Static))
        assert "ada@example.com" in plain(app.screen.query_one("#question", Static))
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, UserScreen), pilot)
        with daemon.client() as c:
            assert c.call("users.get", {"id": ada["id"]})["bounce"] is not None

        # Yes: cleared, the profile says so, the audit trail has it
        await pilot.press("f7")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        await pilot.press("y")
        await until(lambda: any("Bounce cleared" in n.message for n in app._notifications), pilot)
        await until(lambda: isinstance(app.screen, UserScreen), pilot)
        await until(lambda: not profile.query_one("#bounce", Static).display, pilot)
        assert not profile.query_one("#clear-bounce", Button).display
        with daemon.client() as c:
            assert c.call("users.get", {"id": ada["id"]})["bounce"] is None
            audit = c.call("users.audit", {"id": ada["id"]})["entries"]
        assert (audit[0]["actor"], audit[0]["field"], audit[0]["new"]) == ("admin", "bounce", None)
        audit_table = profile.query_one("#audit", DataTable)
        await until(lambda: "bounce" in drawn(audit_table), pilot)

        # F7 is not offered for a user who has not bounced
        assert "f7" not in profile.active_bindings
        await pilot.press("f7")
        await pilot.pause(0.2)
        assert isinstance(app.screen, UserScreen)

        # Back on the list, the row is no longer marked (the user.updated event)
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, UsersScreen), pilot)
        await until(lambda: not any(u.get("bounce") for u in app.screen.users), pilot)
        await pilot.pause()
        assert "5.1.1" not in drawn(app.screen.query_one("#users", DataTable))
        assert LEGEND not in plain(app.screen.query_one("#count", Static))


async def test_the_dashboard_shows_deliverability_and_warns_above_the_lines(daemon):
    await asyncio.to_thread(seed_bounces, daemon)  # 1 bounce and 1 complaint in 40: 2.5 %
    with daemon.client() as c:
        c.call("channels.create", {"name": "[bold]Quiet[/]"})  # nothing sent: no warning
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#deliverability", DataTable)
        await until(lambda: table.row_count == 2, pilot)
        await pilot.pause()
        text = drawn(table)
        (acme,) = [x for x in text.splitlines() if "Acme News" in x]
        assert acme.split() == ["Acme", "News", "40", "1", "⚠", "2.50%", "1", "⚠", "2.50%"]
        (quiet,) = [x for x in text.splitlines() if "Quiet" in x]
        assert quiet.split() == ["[bold]Quiet[/]", "0", "0", "—", "0", "—"]
        box = app.screen.query_one("#reputation", Static)
        assert box.display
        said = plain(box)
        assert "Acme News: 2.50% of the last 30 days' emails bounced (above 2%)" in said
        assert "2.50% of the last 30 days' emails were reported as spam" in said
        assert "Quiet" not in said


def test_the_warning_lines_are_above_2_percent_bounces_and_0_1_percent_complaints():
    def figures(sent, bounced, complaints):
        return {
            "sent_30d": sent,
            "bounced_30d": bounced,
            "complaints_30d": complaints,
            "bounce_rate": round(bounced / sent, 4) if sent else 0.0,
            "complaint_rate": round(complaints / sent, 4) if sent else 0.0,
        }

    assert warnings("A", figures(1000, 20, 1)) == []  # exactly 2 % and 0.1 %: no warning
    over = warnings("A", figures(1000, 21, 2))
    assert len(over) == 2 and "2.10%" in over[0] and "0.20%" in over[1]
    assert warnings("A", figures(0, 0, 0)) == []
    (gmail,) = warnings("A", figures(10000, 0, 31))
    assert "0.31%" in gmail and "0.3%" in gmail
