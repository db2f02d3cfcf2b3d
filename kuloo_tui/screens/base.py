"""What every screen shares: the connection banner and daemon calls run as workers.

Everything the daemon sends (names, emails, Sell's texts, error messages) is shown as
literal text, never as Rich or Textual markup: a user named ``[/]`` must not crash a
screen, and ``[link=file:///etc/passwd]y[/]`` must not become a link. Table cells go
through ``literal``, data-bearing ``Static`` widgets are built with ``markup=False``, and
the app's ``notify`` shows every notification without markup.

``DaemonScreen.call`` runs one daemon call in a worker (exclusive per group, never
crashing the app) and posts the outcome as a typed message: ``Loaded``/``Saved`` or
``Failed`` with the daemon's message(s). ``on_failed`` shows them as a notification;
screens that show problems inline (the channel document) override it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Static
from textual.worker import Worker, WorkerState

from ..client import DaemonClient, DaemonError
from ..messages import DaemonEvent, Failed


def literal(value: object) -> Text:
    """A table cell showing ``value`` as it is (one line, as DataTable draws a string)."""
    return Text("" if value is None else str(value), no_wrap=True, end="")


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
        cells = (literal(c) if isinstance(c, str) else c for c in row)
        table.add_row(*cells, key=keys[n] if keys else None)
    if rows and cursor > 0:
        table.move_cursor(row=min(cursor, len(rows) - 1))


class Banner(Static):
    """Says the daemon is unreachable, and that the TUI is reconnecting on its own."""

    DEFAULT_CSS = """
    Banner { dock: top; height: auto; display: none; background: $error; color: $text;
             text-style: bold; padding: 0 1; }
    Banner.-down { display: block; }
    """

    def __init__(self) -> None:
        super().__init__(markup=False)  # the reason quotes the socket path and the OS

    def on_mount(self) -> None:
        self.show_state(getattr(self.app, "down_reason", None))

    def show_state(self, reason: str | None) -> None:
        self.set_class(reason is not None, "-down")
        if reason is not None:
            # How to bring it back: the demo says it restarts its own daemon (its environment).
            hint = os.environ.get("KULOO_TUI_RESTART_HINT") or "under systemd: systemctl restart kuloo-daemon"
            self.update(Text(f"Daemon unreachable: {reason} — reconnecting… To bring it back: {hint}"))


class DaemonScreen(Screen):
    """A screen whose content comes from the daemon; ``reload`` fetches it again."""

    @property
    def client(self) -> DaemonClient:
        return self.app.client  # type: ignore[attr-defined]  # self.app is a KulooApp

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
        self.app.notify("\n".join(message.problems), title=message.method, severity="error",
                        timeout=8, markup=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # A bug in a worker becomes a notification, never a traceback over the screen.
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.app.notify(f"{type(error).__name__}: {error}", title=event.worker.name or "error",
                            severity="error", timeout=8, markup=False)
