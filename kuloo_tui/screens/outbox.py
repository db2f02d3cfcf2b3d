"""Outbox of a channel, by state; ``uncertain`` messages (a crash while sending: they may have
left) are highlighted and resolved as sent or resend behind a confirmation; a failed message is
resent with fresh attempts, one at a time or all of the channel's at once (after the relay is
fixed), also behind a confirmation."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Select, Static

from ..messages import DaemonEvent, Loaded, Saved
from ..vocabulary import OUTBOX_STATES
from .base import Banner, Col, DaemonScreen, literal, show_rows
from .confirm import ConfirmScreen

PAGE = 100
# Widths from the content and the terminal: the error is cut first (with "…"), and at 80
# columns Tries, Kind and Created give way before Email, State or Error would.
COLUMNS = (
    Col("Id", keep=6, least=4),
    Col("Email", keep=8, flex=True, least=16, want=30),
    Col("Kind", keep=3, least=8),
    Col("State", keep=9, least=9),
    Col("Tries", keep=1),
    Col("Created", keep=2, least=16),
    Col("Error", keep=10, least=16, most=400, shrink=0),
)


def state_cell(state: str) -> Text:
    if state == "uncertain":
        return Text(state.upper(), style="bold black on yellow")
    if state == "failed":
        return Text(state, style="bold red")
    return Text(state)


class OutboxScreen(DaemonScreen):
    BINDINGS = [
        Binding("s", "resolve('sent')", "It was sent"),
        Binding("e", "resolve('resend')", "Resend"),
        Binding("E", "resend_failed", "Resend all failed"),
        Binding("m", "more", "More"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self, channel_id: int) -> None:
        super().__init__(name=f"outbox-{channel_id}")
        self.channel_id = channel_id
        self.messages: list[dict[str, Any]] = []
        self.next_after: int | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Banner()
        yield Select(
            [(s, s) for s in OUTBOX_STATES], prompt="every state", id="state", compact=True
        )
        yield DataTable(id="outbox", cursor_type="row", zebra_stripes=True)
        yield Static(id="count", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Outbox"
        table = self.query_one("#outbox", DataTable)
        show_rows(table, COLUMNS, [])
        table.focus()
        super().on_mount()

    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"channel": self.channel_id, "limit": PAGE}
        state = self.query_one("#state", Select).value
        if state is not Select.NULL:
            p["state"] = state
        return p

    def reload(self) -> None:
        if "outbox.list" not in self.methods:
            self.query_one("#count", Static).update("This daemon has no outbox yet.")
            return
        self.call("outbox.list", self.params(), lambda r: Loaded("outbox", r), group="outbox")

    def action_more(self) -> None:
        if self.next_after is not None:
            self.call(
                "outbox.list",
                {**self.params(), "after": self.next_after},
                lambda r: Loaded("outbox", r, append=True),
                group="outbox",
            )

    def on_select_changed(self, event: Select.Changed) -> None:
        self.reload()

    def on_loaded(self, message: Loaded) -> None:
        if not message.append:
            self.messages = []
            self.query_one("#outbox", DataTable).move_cursor(row=0)
        self.messages += message.data["messages"]
        self.show()
        self.next_after = message.data.get("next_after")
        uncertain = sum(1 for m in self.messages if m["state"] == "uncertain")
        more = " — m loads more" if self.next_after is not None else ""
        self.query_one("#count", Static).update(
            f"{len(self.messages):,} shown, {uncertain} uncertain (s: it was sent, e: resend){more}"
        )

    def show(self) -> None:
        rows = [
            (
                literal(m["id"]),
                literal(m["email"]),
                literal(m["kind"]),
                state_cell(m["state"]),
                literal(m["attempts"]),
                literal((m.get("created_at") or "")[:16].replace("T", " ")),
                literal(m.get("last_error") or ""),
            )
            for m in self.messages
        ]
        show_rows(
            self.query_one("#outbox", DataTable),
            COLUMNS,
            rows,
            [str(m["id"]) for m in self.messages],
        )

    def on_resize(self, event: events.Resize) -> None:
        self.call_after_refresh(self.show)

    @property
    def selected(self) -> dict[str, Any] | None:
        table = self.query_one("#outbox", DataTable)
        if self.messages and 0 <= table.cursor_row < len(self.messages):
            return self.messages[table.cursor_row]
        return None

    def action_resolve(self, decision: str) -> None:
        message = self.selected
        if message is None:
            return
        if message["state"] == "failed" and decision == "resend":
            question = (
                f"Send message {message['id']} to {message['email']} again, with fresh attempts?"
            )
        elif message["state"] != "uncertain":
            self.app.notify(
                "Only an uncertain message can be marked sent, and only an uncertain or a "
                "failed one resent.",
                severity="warning",
            )
            return
        else:
            question = ""
        question = question or (
            f"Mark message {message['id']} to {message['email']} as sent? It will not be sent again."
            if decision == "sent"
            else f"Send message {message['id']} to {message['email']} again? If the first one did arrive, "
            "they get it twice."
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.call(
                    "outbox.resolve",
                    {"id": message["id"], "as": decision},
                    lambda doc: Saved("outbox", doc),
                    group="resolve",
                )

        self.app.push_screen(
            ConfirmScreen(question, yes="Mark sent" if decision == "sent" else "Resend"), answered
        )

    def action_resend_failed(self) -> None:
        question = (
            "Send every failed message of this channel again, each with fresh attempts? "
            "Do this once the relay or the addresses are fixed."
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.call(
                    "outbox.resend_failed",
                    {"channel": self.channel_id},
                    lambda doc: Saved("outbox-resend", doc),
                    group="resolve",
                )

        self.app.push_screen(ConfirmScreen(question, yes="Resend all failed"), answered)

    def on_saved(self, message: Saved) -> None:
        if message.what == "outbox-resend":
            self.app.notify(f"{message.doc['resent']:,} failed messages queued again.")
        else:
            self.app.notify(f"Message {message.doc['id']} is now {message.doc['state']}.")
        self.reload()

    def on_daemon_event(self, event: DaemonEvent) -> None:
        if event.event.startswith("outbox") or event.event.startswith("delivery"):
            self.reload()
