"""The Kuloo admin App, built by ``make_app(client)`` around a ``DaemonClient``.

The app owns the client's lifetime: a worker starts it and turns what it reports
(connected, disconnected, daemon events) into messages; the banner shows while the
daemon is unreachable, and every open screen reloads once the connection is back.
"""

from __future__ import annotations

from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.notifications import SeverityLevel

from .client import Connected, DaemonClient, DaemonError, Disconnected, Event
from .commands import KulooCommands
from .messages import DaemonDown, DaemonEvent, DaemonUp
from .screens.articles import ArticlesScreen
from .screens.base import SELL_WEB, Banner, DaemonScreen
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
        self.sell_web_url = SELL_WEB  # the daemon's [sell] web_url, from ``status``

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Every notification here carries daemon or user text: literal, never markup."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def on_mount(self) -> None:
        self.run_worker(
            self._watch_daemon(), name="daemon connection", group="connection", exit_on_error=False
        )
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

    async def _learn_web_url(self) -> None:
        try:
            status = await self.client.call("status")
        except DaemonError:
            return
        web = (status.get("sell") or {}).get("web_url")
        if isinstance(web, str) and web.startswith(("http://", "https://")):
            self.sell_web_url = web

    def _screens(self) -> list[DaemonScreen]:
        return [s for s in self.screen_stack if isinstance(s, DaemonScreen)]

    def on_daemon_up(self, message: DaemonUp) -> None:
        self.down_reason = None
        self.run_worker(self._learn_web_url(), group="web-url", exclusive=True, exit_on_error=False)
        self._show_banners()
        for screen in self._screens():
            screen.reload()
        self.run_worker(
            self._load_store_state(), group="store-state", exclusive=True, exit_on_error=False
        )

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
        if not self.client.connected:  # never "started" when it cannot be
            reason = self.down_reason or ""
            self.notify(
                f"The daemon is not reachable: no sync started. {reason}".strip(),
                title="Sync",
                severity="error",
                timeout=8,
            )
            return
        if "sync.run" not in self.client.server.get("methods", ()):
            self.notify("This daemon has no sync yet.", severity="warning")
            return
        self.run_worker(
            self._sync_now(channel_id),
            group=f"sync-{channel_id}",
            exclusive=True,
            exit_on_error=False,
            name="Sync",
        )

    async def _sync_now(self, channel_id: int) -> None:
        # "Running" only once the run has really begun and takes a while: a run that fails at
        # once (Sell not reachable) is never preceded by a hopeful toast.
        running = self.set_timer(
            SYNC_RUNNING_AFTER, lambda: self.notify("Sync running…", title="Sync")
        )
        try:
            run = await self.client.call("sync.run", {"channel": channel_id}, seconds=1800)
        except DaemonError as exc:
            running.stop()
            self.notify("\n".join(exc.problems), title="Sync", severity="error", timeout=8)
            return
        running.stop()
        standing = None
        try:
            errors = await self.client.call("sync.errors", {"channel": channel_id, "limit": 1})
            standing = errors["total"]
        except (DaemonError, KeyError, TypeError):
            pass
        self.notify(
            describe_run(run, standing),
            title="Sync",
            severity="information"
            if run["status"] in ("ok", "partial") and not standing
            else "warning",
            timeout=8,
        )

    def action_refresh(self) -> None:
        if isinstance(self.screen, DaemonScreen):
            self.screen.reload()

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"


SYNC_RUNNING_AFTER = 1.0  # seconds before "Sync running…" is said


def describe_run(run: dict[str, Any], standing_errors: int | None) -> str:
    """``Sync ok · 3 sync errors: created 2``: the status, the errors still standing after it
    (a run can be ``ok`` while records wait for a fix), why it failed, and its counts."""
    head = f"Sync {run['status']}"
    if standing_errors:
        head += f" · {standing_errors:,} sync error{'s' if standing_errors != 1 else ''}"
    why = [str(run[k]) for k in ("reason", "error") if run.get(k)]
    counts = ", ".join(
        f"{k.replace('_', ' ')} {v}" for k, v in (run.get("counts") or {}).items() if v
    )
    return head + (f" ({'; '.join(why)})" if why else "") + (f": {counts}" if counts else "")


def make_app(client: DaemonClient) -> KulooApp:
    return KulooApp(client)
