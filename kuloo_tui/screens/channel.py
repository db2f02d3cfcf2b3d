"""Channel document: plan, add-all-users, sequential tags, sender, postal address, API token.

The token is typed into a password input (masked as typed); the daemon only ever returns it
masked (``****abcd``), which is what the screen shows after. On save the daemon checks the
token and the Sell fields: every problem it reports is shown, one per line.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static, Switch

from ..messages import DaemonEvent, Failed, Loaded, Saved
from ..vocabulary import PLANS
from .base import Banner, DaemonScreen
from .confirm import TypeToConfirmScreen


def parse_tags(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


class ChannelScreen(DaemonScreen):
    BINDINGS = [
        Binding("ctrl+s", "save", "Save"),
        Binding("escape", "app.pop_screen", "Back"),
        Binding("f5", "reload", "Reload"),
        Binding("ctrl+delete", "delete_channel", "Delete channel"),
    ]

    def __init__(self, channel_id: int) -> None:
        super().__init__(name=f"channel-{channel_id}")
        self.channel_id = channel_id
        self.doc: dict[str, Any] | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Banner()
        with VerticalScroll(id="form"):
            yield Label("Name")
            yield Input(id="name", compact=True)
            with Horizontal(classes="row"):
                yield Label("Plan", classes="inline")
                yield Select([(p, p) for p in PLANS], id="plan", allow_blank=False, compact=True)
                yield Label("Add all users to CRM", classes="inline")
                yield Switch(id="add_all")
            yield Label("Sequential tags (comma-separated; the Promo choices in Sell)")
            yield Input(id="tags", compact=True)
            yield Label("Sender")
            yield Input(id="sender", placeholder="News <news@example.com>", compact=True)
            yield Label("Postal address")
            yield Input(id="postal", compact=True)
            yield Label("Zendesk Sell API token", id="token-label")
            yield Input(
                id="token",
                password=True,
                placeholder="type a new token to replace it",
                compact=True,
            )
            yield Static(id="connection", markup=False)
            yield Static(id="problems", markup=False)  # Sell's own texts among them
            yield Button("Save", id="save", variant="primary", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Channel"
        super().on_mount()

    def reload(self) -> None:
        self.call("channels.get", {"id": self.channel_id}, lambda doc: Loaded("channel", doc))

    def action_reload(self) -> None:
        self.reload()

    def on_loaded(self, message: Loaded) -> None:
        if message.what == "channel":
            self.show(message.data)

    def show(self, doc: dict[str, Any], problems: list[str] | None = None) -> None:
        self.doc = doc
        self.sub_title = f"Channel {doc['name']}"
        self.query_one("#name", Input).value = doc["name"]
        self.query_one("#plan", Select).value = doc["plan"]
        self.query_one("#add_all", Switch).value = bool(doc["add_all_users_to_crm"])
        self.query_one("#tags", Input).value = ", ".join(doc["sequential_tags"])
        self.query_one("#sender", Input).value = doc.get("sender") or ""
        self.query_one("#postal", Input).value = doc.get("postal_address") or ""
        token = self.query_one("#token", Input)
        token.value = ""
        token.placeholder = (
            f"saved: {doc['api_token']} — type a new token to replace it"
            if doc.get("api_token")
            else "no token yet — paste the Sell API token"
        )
        conn = doc["connection"]
        self.query_one("#connection", Static).update(
            f"Connection: {conn['status'].replace('_', ' ')}"
            + (
                f" (verified {conn['verified_at'][:16].replace('T', ' ')})"
                if conn.get("verified_at")
                else ""
            )
        )
        self.show_problems(problems if problems is not None else conn.get("problems") or [])

    def show_problems(self, problems: list[str]) -> None:
        box = self.query_one("#problems", Static)
        box.set_class(bool(problems), "-problems")
        box.update("\n".join(f"• {p}" for p in problems))

    def changes(self) -> dict[str, Any]:
        """The fields that differ from the document as loaded (and a typed token)."""
        assert self.doc is not None
        now = {
            "name": self.query_one("#name", Input).value.strip(),
            "plan": self.query_one("#plan", Select).value,
            "add_all_users_to_crm": self.query_one("#add_all", Switch).value,
            "sequential_tags": parse_tags(self.query_one("#tags", Input).value),
            "sender": self.query_one("#sender", Input).value.strip(),
            "postal_address": self.query_one("#postal", Input).value,
        }
        out = {
            k: v
            for k, v in now.items()
            if v != (self.doc.get(k) if k != "sender" else self.doc.get(k) or "")
        }
        token = self.query_one("#token", Input).value.strip()
        if token:
            out["api_token"] = token
        return out

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()

    def action_save(self) -> None:
        if self.doc is None:
            return
        changes = self.changes()
        if not changes:
            self.app.notify("Nothing changed.")
            return
        self.query_one("#problems", Static).update("Saving and checking with Zendesk Sell…")
        self.call(
            "channels.update",
            {"id": self.channel_id, **changes},
            lambda doc: Saved("channel", doc),
            group="save",
        )

    def on_saved(self, message: Saved) -> None:
        if message.what == "channel-deleted":
            self.app.notify(
                f"Channel {message.doc['id']} ({message.doc['name']}) deleted, "
                f"with {message.doc['users']:,} user(s)."
            )
            self.app.pop_screen()
            return
        self.show(message.doc)
        problems = message.doc["connection"].get("problems") or []
        if problems:
            self.app.notify(
                f"Saved; Zendesk Sell setup has {len(problems)} problem(s).", severity="warning"
            )
        else:
            self.app.notify("Saved.")

    def action_delete_channel(self) -> None:
        if self.doc is None or "channels.delete" not in self.methods:
            return
        name = self.doc["name"]
        question = (
            f"Delete channel {self.channel_id} ({name}) and everything of it: its users, articles, "
            "outbox, sync history and audit log? Its Sell records are not touched. This cannot be "
            "undone. Type the channel's name to go on."
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.call(
                    "channels.delete",
                    {"id": self.channel_id, "confirm": name},
                    lambda doc: Saved("channel-deleted", doc),
                    group="delete",
                )

        self.app.push_screen(TypeToConfirmScreen(question, name, "Delete channel"), answered)

    def on_failed(self, message: Failed) -> None:
        if message.method == "channels.update":
            self.show_problems(message.problems)
        super().on_failed(message)

    def on_daemon_event(self, event: DaemonEvent) -> None:
        if (
            event.event == "channel.updated"
            and isinstance(event.data, dict)
            and event.data.get("id") == self.channel_id
        ):
            if not self.changes() if self.doc else True:  # never overwrite what is being typed
                self.show(event.data)
