"""Erasing a user from their profile in the TUI: only once their email is typed out
(issue 27 item 3)."""

from __future__ import annotations

import pytest
from textual.widgets import Button, Input

from kuloo_tui.screens.confirm import TypeToConfirmScreen
from kuloo_tui.screens.user import UserScreen
from kuloo_tui.screens.users import UsersScreen

from .conftest import until
from .test_app import app_for

pytestmark = pytest.mark.anyio


async def test_a_user_is_erased_only_when_their_email_is_typed_out(daemon):
    (daemon.root / "creds" / "erasure-key").write_text("tui-tests-erasure-key\n")
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme"})
        user = c.call("users.add", {"channel": 1, "email": "erin@example.com"})
        c.call("users.add", {"channel": 1, "email": "keep@example.com"})
    app = app_for(daemon)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app.open_users(1)
        await until(
            lambda: isinstance(app.screen, UsersScreen) and len(app.screen.users) == 2, pilot
        )
        app.open_user(user["id"], 1)
        await until(
            lambda: isinstance(app.screen, UserScreen) and app.screen.doc is not None, pilot
        )
        await pilot.press("ctrl+delete")
        await until(lambda: isinstance(app.screen, TypeToConfirmScreen), pilot)
        modal = app.screen
        modal.query_one("#typed", Input).value = "erin@example.org"
        await pilot.pause()
        assert modal.query_one("#yes", Button).disabled
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, UserScreen), pilot)
        with daemon.client() as c:
            assert c.call("users.list", {"channel": 1})["total"] == 2  # cancelled: nothing happened
        await pilot.press("ctrl+delete")
        await until(lambda: isinstance(app.screen, TypeToConfirmScreen), pilot)
        app.screen.query_one("#typed", Input).value = "erin@example.com"
        await pilot.press("enter")
        await until(
            lambda: any(f"User {user['id']} erased" in n.message for n in app._notifications), pilot
        )
        await until(lambda: isinstance(app.screen, UsersScreen), pilot)
        await until(lambda: [u["email"] for u in app.screen.users] == ["keep@example.com"], pilot)
    with daemon.client() as c:
        assert [u["email"] for u in c.call("users.list", {"channel": 1})["users"]] == [
            "keep@example.com"
        ]
