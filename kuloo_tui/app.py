"""The Kuloo admin App, built by ``make_app(client)`` around a ``DaemonClient``.

The app owns the client's lifetime: a worker starts it and turns what it reports
(connected, disconnected, daemon events) into messages; the banner shows while the
daemon is unreachable, and every open screen reloads once the connection is back.
"""

from __future__ import annotations

from typing import Any

from textual.app import App
from textual.binding import Binding

from .client import Connected, DaemonClient, DaemonError, Disconnected, Event
from .commands import KulooCommands
from .messages import DaemonDown, DaemonEvent, DaemonUp
from .screens.articles import ArticlesScreen
from .screens.base import Banner, DaemonScreen
from .screens.channel import ChannelScreen
from .screens.dashboard import DashboardScreen
from .screens.outbox import OutboxScreen
from .screens.sync import SyncScreen
from .screens.user import UserScreen
from .screens.users import UsersScreen


class KulooApp(App):
    CSS_PATH = "kuloo.tcss"
    TITLE = "Kuloo Sync"
    COMMANDS = App.COMMANDS | {KulooCommands}
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("f2", "toggle_dark", "Light/dark"),
        Binding("ctrl+r", "refresh", "Refresh", show=False),
    ]

    def __init__(self, client: DaemonClient) -> None:
        super().__init__()
        self.client = client
        self.down_reason: str | None = None
        self.store_state: dict[str, Any] | None = None  # the daemon's database: status' store_state
        self.channels: list[dict[str, Any]] = []

    def on_mount(self) -> None:
        self.run_worker(self._watch_daemon(), name="daemon connection", group="connection", exit_on_error=False)
        self.push_screen(DashboardScreen())

    async def _watch_daemon(self) -> None:
        events = self.client.listen()
        self.client.start()
        try:
            while True:
                item = await events.get()
                if isinstance(item, Connected):
                    self.post_message(DaemonUp(item.server))
                elif isinstance(item, Disconnected):
                    self.post_message(DaemonDown(item.reason))
                elif isinstance(item, Event):
                    self.post_message(DaemonEvent(item.event, item.data))
        finally:
            await self.client.close()

    def _screens(self) -> list[DaemonScreen]:
        return [s for s in self.screen_stack if isinstance(s, DaemonScreen)]

    def on_daemon_up(self, message: DaemonUp) -> None:
        self.down_reason = None
        self._show_banners()
        for screen in self._screens():
            screen.reload()
        self.run_worker(self._load_store_state(), group="store-state", exclusive=True,
                        exit_on_error=False)

    async def _load_store_state(self) -> None:
        try:
            doc = await self.client.call("status")
        except Exception:  # noqa: BLE001 - gone again or refused: the banner says the rest
            return
        if isinstance(doc, dict) and isinstance(doc.get("store_state"), dict):
            self.store_state = doc["store_state"]
            self._show_banners()

    def _show_banners(self) -> None:
        for screen in self._screens():
            for banner in screen.query(Banner):
                banner.show_state(self.down_reason)

    def on_daemon_down(self, message: DaemonDown) -> None:
        self.down_reason = message.reason
        for screen in self._screens():
            for banner in screen.query(Banner):
                banner.show_state(message.reason)

    def on_daemon_event(self, message: DaemonEvent) -> None:
        if message.event == "store.state" and isinstance(message.data, dict):
            self.store_state = message.data
            self._show_banners()
        for screen in self._screens():
            screen.post_message(DaemonEvent(message.event, message.data))

    # ------------------------------------------------------------- navigation

    def open_dashboard(self) -> None:
        while len(self.screen_stack) > 2:
            self.pop_screen()

    def open_channel(self, channel_id: int) -> None:
        self.push_screen(ChannelScreen(channel_id))

    def open_users(self, channel_id: int) -> None:
        self.push_screen(UsersScreen(channel_id))

    def open_articles(self, channel_id: int) -> None:
        self.push_screen(ArticlesScreen(channel_id))

    def open_sync(self, channel_id: int) -> None:
        self.push_screen(SyncScreen(channel_id))

    def open_outbox(self, channel_id: int) -> None:
        self.push_screen(OutboxScreen(channel_id))

    def open_user(self, user_id: int, channel_id: int | None = None) -> None:
        self.push_screen(UserScreen(channel_id or self._channel_of_screen(), user_id))

    def add_user(self, channel_id: int) -> None:
        self.push_screen(UserScreen(channel_id))

    def _channel_of_screen(self) -> int:
        return getattr(self.screen, "channel_id", self.channels[0]["id"] if self.channels else 1)

    def sync_now(self, channel_id: int) -> None:
        if "sync.run" not in self.client.server.get("methods", ()):
            self.notify("This daemon has no sync.run yet.", severity="warning")
            return
        self.notify("Sync started…")
        self.run_worker(self._sync_now(channel_id), group=f"sync-{channel_id}", exclusive=True,
                        exit_on_error=False, name="sync.run")

    async def _sync_now(self, channel_id: int) -> None:
        try:
            run = await self.client.call("sync.run", {"channel": channel_id}, seconds=1800)
        except DaemonError as exc:
            self.notify("\n".join(exc.problems), title="sync.run", severity="error", timeout=8)
            return
        counts = ", ".join(f"{k} {v}" for k, v in (run.get("counts") or {}).items() if v)
        self.notify(f"Sync {run['status']}{': ' + counts if counts else ''}", title="sync.run",
                    severity="information" if run["status"] in ("ok", "partial") else "warning")

    def action_refresh(self) -> None:
        if isinstance(self.screen, DaemonScreen):
            self.screen.reload()

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"


def make_app(client: DaemonClient) -> KulooApp:
    return KulooApp(client)
