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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Static
from textual.worker import Worker, WorkerState

from ..client import DaemonClient, DaemonError
from ..messages import DaemonEvent, Failed


def literal(value: object) -> Text:
    """A table cell showing ``value`` as it is (one line, as DataTable draws a string); text
    cut by its column ends with "…", so a cut address never looks like a whole one."""
    return Text("" if value is None else str(value), no_wrap=True, overflow="ellipsis", end="")


SELL_WEB = "https://app.futuresimple.com"  # the daemon's ``[sell] web_url`` until ``status`` says


def record_url(web_url: str, crm: dict[str, Any]) -> str:
    """The Sell web app's page of a lead or contact (``crm`` = ``{"kind", "id"}``)."""
    path = "leads" if crm["kind"] == "lead" else "crm/contacts"
    return f"{web_url.rstrip('/')}/{path}/{int(crm['id'])}"


def link_text(url: str) -> Text:
    """``url`` shown as itself and as a terminal hyperlink (OSC 8): over SSH nothing opens a
    browser; a click in the admin's own terminal does."""
    return Text(url, style=Style(link=url, underline=True))


@dataclass(frozen=True)
class Col:
    """A column whose width comes from its content and the terminal (``fit_widths``)."""

    label: str
    keep: int = 5  # on a narrow terminal, the columns with the lowest ``keep`` give way first
    flex: bool = False  # takes the slack when there is room
    least: int = 0  # narrowest before it gives way (at least its label)
    most: int = 80  # widest it grows for its content
    shrink: int | None = None  # order in which columns are cut when too wide (default: ``keep``)
    want: int = 0  # narrower than this (or its content) it counts as cut (0: its content)

    @property
    def cut_order(self) -> int:
        return self.keep if self.shrink is None else self.shrink


def fit_widths(
    cols: Sequence[Col], rows: Sequence[Sequence[object]], width: int, padding: int = 1
) -> list[int | None]:
    """Each column's width for a table ``width`` cells wide, or None for one that gave way.

    Widths start from the content; a flex column takes what is left over. When the content
    is too wide, the columns shrink (the least kept first) down to ``least``, their text cut
    with "…"; when even that is too wide, the least kept columns give way, one at a time.
    """
    natural = [
        min(c.most, max([cell_len(c.label), *(cell_len(str(r[i])) for r in rows)]))
        for i, c in enumerate(cols)
    ]
    least = [min(natural[i], max(c.least, cell_len(c.label))) for i, c in enumerate(cols)]
    shown = list(range(len(cols)))

    def need(widths: Sequence[int]) -> int:
        return sum(widths[i] + 2 * padding for i in shown)

    while need(least) > width and len(shown) > 1:
        shown.remove(min(shown, key=lambda i: (cols[i].keep, -i)))

    def lay_out() -> list[int]:
        widths = list(natural)
        over = need(widths) - width
        if over < 0:
            flex = [i for i in shown if cols[i].flex]
            if flex:
                widths[flex[0]] += -over
        for i in sorted(shown, key=lambda i: (cols[i].cut_order, -i)):
            if over <= 0:
                break
            cut = min(over, widths[i] - least[i])
            widths[i] -= cut
            over -= cut
        return widths

    widths = lay_out()
    # A column whose text got cut (below what it ``want``s; not one meant to be cut first)
    # is worth more than a less kept column shown whole: that one gives way instead.
    while True:
        cut = [
            i
            for i in shown
            if cols[i].shrink is None and widths[i] < min(natural[i], cols[i].want or natural[i])
        ]
        spare = [
            i
            for i in shown
            if not cols[i].flex and cut and all(cols[i].keep < cols[j].keep for j in cut)
        ]
        if not spare or len(shown) == 1:
            break
        shown.remove(min(spare, key=lambda i: (cols[i].keep, -i)))
        widths = lay_out()
    return [widths[i] if i in shown else None for i in range(len(cols))]


def show_rows(
    table: DataTable,
    cols: Sequence[Col],
    rows: Sequence[Sequence[object]],
    keys: Sequence[str] | None = None,
    width: int | None = None,
) -> list[int | None]:
    """Fill ``table`` with ``rows`` (every column's cell), fitted to its width (``fit_widths``);
    the cursor stays on the same row. Columns are keyed by their label."""
    if width is None:
        width = table.size.width or table.screen.size.width or table.app.size.width
        height = table.size.height
        if table.styles.height is None or table.styles.height.is_auto:
            # It grows with its rows (its height now is the old one): a scroll bar only
            # once they outgrow about the screen.
            height = max(height, table.screen.size.height - 4)
        if len(rows) + 1 > height:
            width -= table.styles.scrollbar_size_vertical  # room for the scroll bar
    widths = fit_widths(cols, rows, max(width, 10), table.cell_padding)
    # Nothing to do when the same rows would be drawn at the same widths (a resize that
    # changed nothing, an event about a row not shown): no flicker, the cursor stays.
    signature = (
        tuple(widths),
        tuple(keys or ()),
        tuple(tuple((str(c), str(getattr(c, "style", ""))) for c in r) for r in rows),
    )
    if getattr(table, "_kuloo_shown", None) == signature:
        return widths
    table._kuloo_shown = signature  # type: ignore[attr-defined]  # our own mark on the widget
    cursor = table.cursor_row
    table.clear(columns=True)
    for col, w in zip(cols, widths, strict=True):
        if w is not None:
            table.add_column(col.label, width=w, key=col.label)
    for n, row in enumerate(rows):
        cells = [
            c if isinstance(c, Text) else literal(c)
            for c, w in zip(row, widths, strict=True)
            if w is not None
        ]
        table.add_row(*cells, key=keys[n] if keys else None)
    if rows and cursor > 0:
        table.move_cursor(row=min(cursor, len(rows) - 1))
    return widths


def fill_table(
    table: DataTable, headers: tuple[str, ...], rows: list[tuple], keys: list[str] | None = None
) -> None:
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


# What an admin was doing when the daemon refused: a toast's title, never a method name.
_DOING = {
    "articles.import": "Import",
    "articles.preview": "Preview",
    "users.update": "Saving the user",
    "users.add": "Adding the user",
    "users.reset_sequence": "Reset sequence",
    "outbox.resolve": "Outbox",
    "outbox.resend_failed": "Outbox",
    "channels.update": "Saving the channel",
    "channels.create": "Adding the channel",
    "channels.verify": "Checking the Sell token",
    "sync.run": "Sync",
}
_AREAS = {
    "articles": "Articles",
    "users": "Users",
    "outbox": "Outbox",
    "channels": "Channel",
    "sync": "Sync",
    "delivery": "Delivery",
}


def failure_title(method: str) -> str:
    return _DOING.get(method) or _AREAS.get(method.split(".", 1)[0], "The daemon refused")


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
        """The daemon unreachable (``reason``), else the daemon's store (``app.store_state``)."""
        store = getattr(self.app, "store_state", None) or {}
        if reason is not None:
            self.set_class(True, "-down")
            # How to bring it back: the demo says it restarts its own daemon (its environment).
            hint = (
                os.environ.get("KULOO_TUI_RESTART_HINT")
                or "under systemd: systemctl restart kuloo-daemon"
            )
            self.update(
                Text(f"Daemon unreachable: {reason} — reconnecting… To bring it back: {hint}")
            )
        elif store.get("state", "ok") != "ok":
            self.set_class(True, "-down")
            since = (
                f" since {store['since'][:19].replace('T', ' ')} UTC" if store.get("since") else ""
            )
            self.update(
                Text(
                    f"The daemon is waiting: {store.get('message') or store['state']}{since}. "
                    "Nothing is lost; work resumes when it is back."
                )
            )
        else:
            self.set_class(False, "-down")


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

    def call(
        self,
        method: str,
        params: dict[str, Any] | None,
        done: Callable[[Any], Message] | None,
        *,
        group: str | None = None,
        exclusive: bool = True,
        seconds: float | None = None,
    ) -> Worker:
        async def run() -> None:
            try:
                result = await self.client.call(method, params, seconds=seconds)
            except DaemonError as exc:
                self.post_message(Failed(method, exc.problems))
                return
            if done is not None:
                self.post_message(done(result))

        return self.run_worker(
            run, group=group or method, exclusive=exclusive, exit_on_error=False, name=method
        )

    def gather(
        self,
        name: str,
        fetch: Callable[[], Any],
        done: Callable[[Any], Message],
        *,
        group: str | None = None,
    ) -> Worker:
        """Like ``call`` for a coroutine function making several calls (a screen's load)."""

        async def run() -> None:
            try:
                result = await fetch()
            except DaemonError as exc:
                self.post_message(Failed(name, exc.problems))
                return
            self.post_message(done(result))

        return self.run_worker(
            run, group=group or name, exclusive=True, exit_on_error=False, name=name
        )

    def on_failed(self, message: Failed) -> None:
        self.app.notify(
            "\n".join(message.problems),
            title=failure_title(message.method),
            severity="error",
            timeout=8,
            markup=False,
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # A bug in a worker becomes a notification, never a traceback over the screen.
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.app.notify(
                f"{type(error).__name__}: {error}",
                title="Unexpected error",
                severity="error",
                timeout=8,
                markup=False,
            )
