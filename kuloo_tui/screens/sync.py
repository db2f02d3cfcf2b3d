"""Sync of a channel: the run history (counts, requests used) with "sync now", and the Sync
errors (record, email, reason) paged from ``sync.errors``; Enter on an error opens its user."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from ..messages import DaemonEvent, Loaded
from .base import Banner, DaemonScreen, fill_table

RUN_COLUMNS = ("Run", "Status", "Started", "Finished", "Counts")
ERROR_COLUMNS = ("Record", "Email", "Problem")


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
        Binding("enter", "open_user", "User"),
        Binding("m", "more", "More errors"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self, channel_id: int) -> None:
        super().__init__(name=f"sync-{channel_id}")
        self.channel_id = channel_id
        self.errors: list[dict[str, Any]] = []
        self.next: int | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Banner()
        yield Static("Sync runs", classes="section-title")
        yield DataTable(id="sync-runs", cursor_type="row")
        yield Static("Sync errors", classes="section-title", id="errors-title", markup=False)
        yield DataTable(id="sync-errors", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Sync"
        fill_table(self.query_one("#sync-runs", DataTable), RUN_COLUMNS, [])
        fill_table(self.query_one("#sync-errors", DataTable), ERROR_COLUMNS, [])
        self.query_one("#sync-errors", DataTable).focus()
        super().on_mount()

    def reload(self) -> None:
        if "sync.runs" not in self.methods:
            self.query_one("#errors-title", Static).update("This daemon has no sync yet.")
            return
        self.call("sync.runs", {"channel": self.channel_id, "limit": 20}, lambda r: Loaded("runs", r["runs"]))
        self.call("sync.errors", {"channel": self.channel_id, "limit": 100}, lambda r: Loaded("errors", r),
                  group="errors")

    def action_more(self) -> None:
        if self.next is not None:
            self.call("sync.errors", {"channel": self.channel_id, "limit": 100, "after": self.next},
                      lambda r: Loaded("errors", r, append=True), group="errors")

    def on_loaded(self, message: Loaded) -> None:
        if message.what == "runs":
            fill_table(self.query_one("#sync-runs", DataTable), RUN_COLUMNS,
                       [(str(r["id"]), run_status(r),
                         when(r.get("started_at")), when(r.get("finished_at")), counts_text(r.get("counts")))
                        for r in message.data])
        elif message.what == "errors":
            if not message.append:
                self.errors = []
            self.errors += message.data["errors"]
            self.next = message.data.get("next")
            fill_table(self.query_one("#sync-errors", DataTable), ERROR_COLUMNS,
                       [(f"{e['crm']['kind']} {e['crm']['id']}" if e.get("crm") else "—", e.get("email") or "—",
                         e.get("error") or e.get("code") or "") for e in self.errors])
            more = " (m: more)" if self.next is not None else ""
            self.query_one("#errors-title", Static).update(f"Sync errors: {len(self.errors)}{more}")

    def action_open_user(self) -> None:
        table = self.query_one("#sync-errors", DataTable)
        if not self.errors or not 0 <= table.cursor_row < len(self.errors):
            return
        user = self.errors[table.cursor_row].get("user")
        if user is None:
            self.app.notify("This record has no Kuloo user (fix it in Sell).", severity="warning")
            return
        self.app.open_user(user, self.channel_id)  # type: ignore[attr-defined]  # self.app is a KulooApp

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "sync-errors":
            self.action_open_user()

    def action_sync_now(self) -> None:
        self.app.sync_now(self.channel_id)  # type: ignore[attr-defined]  # self.app is a KulooApp

    def on_daemon_event(self, event: DaemonEvent) -> None:
        if event.event.startswith("sync."):
            self.reload()
