"""Sync of a channel: the run history (counts, requests used) with "sync now", and the Sync
errors (record, email, reason) paged from ``sync.errors``. The error under the cursor is shown
whole below the list (its instructions are often longer than a row). Enter on an error opens
its user; an error without one (a shared email) gives the Sell record it names: its link
(``[sell] web_url``) shown as a terminal hyperlink and copied to the clipboard — over SSH
nothing could open a browser."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from ..messages import DaemonEvent, Loaded
from .base import SELL_WEB, Banner, Col, DaemonScreen, fill_table, link_text, record_url, show_rows

RUN_COLUMNS = ("Run", "Status", "Started", "Finished", "Counts")
# The problem is cut first (it is shown whole below the list), then the email.
ERROR_COLUMNS = (
    Col("Record", keep=6),
    Col("Email", keep=5, flex=True, least=16),
    Col("Problem", keep=9, least=16, most=400, shrink=0),
)


def when(iso: str | None) -> str:
    return (iso or "—").replace("T", " ")[:16]


def run_status(run: dict[str, Any]) -> str:
    """``partial (rate_limited, retry at 2026-12-07 15:00)``: the status, why, and when Sell
    takes requests again after a rate-limit lockout."""
    why = [run["reason"]] if run.get("reason") else []
    if run.get("retry_at"):
        why.append(f"retry at {when(run['retry_at'])}")
    return run["status"] + (f" ({', '.join(why)})" if why else "")


def counts_text(counts: dict[str, Any] | None) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in (counts or {}).items() if v) or "—"


class SyncScreen(DaemonScreen):
    BINDINGS = [
        Binding("s", "sync_now", "Sync now"),
        Binding("enter", "open_user", "User / Sell record"),
        Binding("m", "more", "More errors"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self, channel_id: int) -> None:
        super().__init__(name=f"sync-{channel_id}")
        self.channel_id = channel_id
        self.errors: list[dict[str, Any]] = []
        self.next: int | None = None
        self.opened_record: str | None = None  # the last Sell record link given (tests)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Banner()
        yield Static("Sync runs", classes="section-title")
        yield DataTable(id="sync-runs", cursor_type="row")
        yield Static("Sync errors", classes="section-title", id="errors-title", markup=False)
        yield DataTable(id="sync-errors", cursor_type="row", zebra_stripes=True)
        yield Static(id="error-detail", markup=False)  # the whole error under the cursor
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Sync"
        fill_table(self.query_one("#sync-runs", DataTable), RUN_COLUMNS, [])
        show_rows(self.query_one("#sync-errors", DataTable), ERROR_COLUMNS, [])
        self.query_one("#sync-errors", DataTable).focus()
        super().on_mount()

    def reload(self) -> None:
        if "sync.runs" not in self.methods:
            self.query_one("#errors-title", Static).update("This daemon has no sync yet.")
            return
        self.call(
            "sync.runs",
            {"channel": self.channel_id, "limit": 20},
            lambda r: Loaded("runs", r["runs"]),
        )
        self.call(
            "sync.errors",
            {"channel": self.channel_id, "limit": 100},
            lambda r: Loaded("errors", r),
            group="errors",
        )

    def action_more(self) -> None:
        if self.next is not None:
            self.call(
                "sync.errors",
                {"channel": self.channel_id, "limit": 100, "after": self.next},
                lambda r: Loaded("errors", r, append=True),
                group="errors",
            )

    def on_loaded(self, message: Loaded) -> None:
        if message.what == "runs":
            fill_table(
                self.query_one("#sync-runs", DataTable),
                RUN_COLUMNS,
                [
                    (
                        str(r["id"]),
                        run_status(r),
                        when(r.get("started_at")),
                        when(r.get("finished_at")),
                        counts_text(r.get("counts")),
                    )
                    for r in message.data
                ],
            )
        elif message.what == "errors":
            if not message.append:
                self.errors = []
            self.errors += message.data["errors"]
            self.next = message.data.get("next")
            if not message.append:
                self.query_one("#sync-errors", DataTable).move_cursor(row=0)
            self.show_errors()
            more = " (m: more)" if self.next is not None else ""
            self.query_one("#errors-title", Static).update(f"Sync errors: {len(self.errors)}{more}")

    def show_errors(self) -> None:
        rows = [
            (
                f"{e['crm']['kind']} {e['crm']['id']}" if e.get("crm") else "—",
                e.get("email") or "—",
                e.get("error") or e.get("code") or "",
            )
            for e in self.errors
        ]
        show_rows(self.query_one("#sync-errors", DataTable), ERROR_COLUMNS, rows)
        self.show_detail()

    def on_resize(self, event: events.Resize) -> None:
        self.call_after_refresh(self.show_errors)

    @property
    def selected(self) -> dict[str, Any] | None:
        table = self.query_one("#sync-errors", DataTable)
        if self.errors and 0 <= table.cursor_row < len(self.errors):
            return self.errors[table.cursor_row]
        return None

    def web_url(self) -> str:
        return str(getattr(self.app, "sell_web_url", SELL_WEB))

    def show_detail(self) -> None:
        """The whole error under the cursor, wrapped, with what Enter does for it."""
        error = self.selected
        detail = self.query_one("#error-detail", Static)
        if error is None:
            detail.update("")
            return
        crm = error.get("crm")
        text = Text.assemble(
            (f"{crm['kind']} {crm['id']}" if crm else "no Sell record", "bold"),
            f" · {error.get('email') or 'no email'}\n",
            error.get("error") or error.get("code") or "",
        )
        if error.get("user") is not None:
            text.append("\nEnter: open the user")
        elif crm:
            text.append("\nIn Sell: ")
            text.append_text(link_text(record_url(self.web_url(), crm)))
            text.append("  (Enter copies the link)")
        detail.update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "sync-errors":
            self.show_detail()

    def action_open_user(self) -> None:
        error = self.selected
        if error is None:
            return
        user = error.get("user")
        if user is not None:
            self.app.open_user(user, self.channel_id)  # type: ignore[attr-defined]  # a KulooApp
            return
        crm = error.get("crm")
        if not crm:
            self.app.notify(
                "This error names no Kuloo user and no Sell record.", severity="warning"
            )
            return
        # Over SSH nothing could open a browser here: the link goes to the clipboard (OSC 52)
        # and stays on screen as a hyperlink the admin's terminal can open.
        url = record_url(self.web_url(), crm)
        self.app.copy_to_clipboard(url)
        self.opened_record = url
        self.app.notify(
            f"Link to {crm['kind']} {crm['id']} in Sell copied to the clipboard: {url}",
            title="Sell record",
            timeout=10,
        )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "sync-errors":
            self.action_open_user()

    def action_sync_now(self) -> None:
        self.app.sync_now(self.channel_id)  # type: ignore[attr-defined]  # self.app is a KulooApp

    def on_daemon_event(self, event: DaemonEvent) -> None:
        if event.event.startswith("sync."):
            self.reload()
