"""What every screen shares: the connection banner and daemon calls run as workers.

``DaemonScreen.call`` runs one daemon call in a worker (exclusive per group, never
crashing the app) and posts the outcome as a typed message: ``Loaded``/``Saved`` or
``Failed`` with the daemon's message(s). ``on_failed`` shows them as a notification;
screens that show problems inline (the channel document) override it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Static
from textual.worker import Worker, WorkerState

from ..client import DaemonClient, DaemonError
from ..messages import DaemonEvent, Failed


def fill_table(table: DataTable, headers: tuple[str, ...], rows: list[tuple], keys: list[str] | None = None) -> None:
    """Replace a table's columns and rows, each column as wide as its widest cell.

    The widths are computed here, not left to DataTable's auto width, which was seen to
    keep a stale width now and then after ``clear()`` (snapshots differed between runs).
    """
    cursor = table.cursor_row
    table.clear(columns=True)
    for i, header in enumerate(headers):
        table.add_column(header, width=max([len(header), *(len(str(r[i])) for r in rows)]))
    for n, row in enumerate(rows):
        table.add_row(*row, key=keys[n] if keys else None)
    if rows and cursor > 0:
        table.move_cursor(row=min(cursor, len(rows) - 1))


class Banner(Static):
    """Says the daemon is unreachable, and that the TUI is reconnecting on its own."""

    DEFAULT_CSS = """
    Banner { dock: top; height: auto; display: none; background: $error; color: $text;
             text-style: bold; padding: 0 1; }
    Banner.-down { display: block; }
    """

    def on_mount(self) -> None:
        self.show_state(getattr(self.app, "down_reason", None))

    def show_state(self, reason: str | None) -> None:
        """The daemon unreachable (``reason``), else the daemon's store (``app.store_state``)."""
        store = getattr(self.app, "store_state", None) or {}
        if reason is not None:
            self.set_class(True, "-down")
            self.update(f"Daemon unreachable: {reason} — reconnecting…")
        elif store.get("state", "ok") != "ok":
            self.set_class(True, "-down")
            since = (f" since {store['since'][:19].replace('T', ' ')} UTC"
                     if store.get("since") else "")
            self.update(f"The daemon is waiting: {store.get('message') or store['state']}{since}. "
                        "Nothing is lost; work resumes when it is back.")
        else:
            self.set_class(False, "-down")


class DaemonScreen(Screen):
    """A screen whose content comes from the daemon; ``reload`` fetches it again."""

    @property
    def client(self) -> DaemonClient:
        return self.app.client  # type: ignore[attr-defined]

    @property
    def methods(self) -> set[str]:
        return set(self.client.server.get("methods", ()))

    def on_mount(self) -> None:
        if self.client.connected:
            self.reload()

    def reload(self) -> None:
        """Fetch what the screen shows (on mount, on reconnect, on refresh)."""

    def on_daemon_event(self, event: DaemonEvent) -> None:
        """A daemon event reached this screen; by default nothing to do."""

    def call(self, method: str, params: dict[str, Any] | None, done: Callable[[Any], Message] | None,
             *, group: str | None = None, exclusive: bool = True, seconds: float | None = None) -> Worker:
        async def run() -> None:
            try:
                result = await self.client.call(method, params, seconds=seconds)
            except DaemonError as exc:
                self.post_message(Failed(method, exc.problems))
                return
            if done is not None:
                self.post_message(done(result))

        return self.run_worker(run, group=group or method, exclusive=exclusive, exit_on_error=False,
                               name=method)

    def gather(self, name: str, fetch: Callable[[], Any], done: Callable[[Any], Message],
               *, group: str | None = None) -> Worker:
        """Like ``call`` for a coroutine function making several calls (a screen's load)."""

        async def run() -> None:
            try:
                result = await fetch()
            except DaemonError as exc:
                self.post_message(Failed(name, exc.problems))
                return
            self.post_message(done(result))

        return self.run_worker(run, group=group or name, exclusive=True, exit_on_error=False, name=name)

    def on_failed(self, message: Failed) -> None:
        self.app.notify("\n".join(message.problems), title=message.method, severity="error", timeout=8)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # A bug in a worker becomes a notification, never a traceback over the screen.
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.app.notify(f"{type(error).__name__}: {error}", title=event.worker.name or "error",
                            severity="error", timeout=8)
