"""Users of a channel: paged from ``users.list`` with its cursor (never every user),
searched as you type, filtered by sync error, subscription, source, promo tag, lead/contact
and bounced. A bounced user's row carries the bounce's status in the Bounced column."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Input, Select, Static

from ..messages import DaemonEvent, Loaded
from ..vocabulary import CRM_KINDS, SOURCES, SUBSCRIPTIONS
from .base import Banner, Col, DaemonScreen, literal, show_rows

PAGE = 50
# Widths come from the content and the terminal; at 80 columns Source and CRM give way
# first, and the Sync error column always stays.
COLUMNS = (
    Col("Id", keep=6),
    Col("Email", keep=9, flex=True, least=20, want=30),
    Col("Name", keep=4, least=12),
    Col("Subscription", keep=5),
    Col("Source", keep=1),
    Col("CRM", keep=2),
    Col("Sync error", keep=8),
)
# Shown when a user listed has bounced: the bounce's status ("5.1.1"); no email goes to
# the address. Without one, the other columns keep the room.
WITH_BOUNCED = (*COLUMNS, Col("Bounced", keep=7))
LEGEND = (
    "Bounced: the address refused mail for good; nothing is sent to it until the bounce "
    "is cleared (its profile) or its email changes."
)


class SearchInput(Input):
    """The search box: Enter opens the highlighted (first) user, ↓ moves into the list."""

    BINDINGS = [
        Binding("enter", "open_highlighted", "Open highlighted", show=True),
        Binding("down", "into_list", "Into the list", show=True),
    ]

    def action_open_highlighted(self) -> None:
        if isinstance(self.screen, UsersScreen):
            self.screen.open_highlighted()

    def action_into_list(self) -> None:
        self.screen.query_one("#users", DataTable).focus()


def subscription(user: dict[str, Any]) -> str:
    return "unsubscribed" if user["unsubscribed"] else user["frequency"]


def crm(user: dict[str, Any]) -> str:
    return user["crm"]["kind"] if user.get("crm") else "—"


class UsersScreen(DaemonScreen):
    BINDINGS = [
        Binding("enter", "open_user", "Profile", show=True),
        Binding("a", "add_user", "Add user"),
        Binding("slash", "focus_search", "Search"),
        Binding("m", "more", "More"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self, channel_id: int) -> None:
        super().__init__(name=f"users-{channel_id}")
        self.channel_id = channel_id
        self.users: list[dict[str, Any]] = []
        self.next: int | None = None
        self.total = 0
        self.tags: list[str] = []
        self.shown_query: str | None = (
            None  # the search the rows shown answer (None before the first page)
        )
        self.open_when_shown = False  # Enter in the search box before its answer came

    def compose(self) -> ComposeResult:
        yield Header()
        yield Banner()
        yield SearchInput(id="search", placeholder="search email or name (type to filter)")
        with Horizontal(id="filters"):
            yield Select(
                [("yes", True), ("no", False)], prompt="sync error", id="f-error", compact=True
            )
            yield Select(
                [(s, s) for s in SUBSCRIPTIONS], prompt="subscription", id="f-sub", compact=True
            )
            yield Select(
                [(label, value) for value, label in SOURCES.items()],
                prompt="source",
                id="f-source",
                compact=True,
            )
            yield Select([], prompt="promo", id="f-promo", compact=True)
            yield Select(
                [(k, k) for k in CRM_KINDS], prompt="lead/contact", id="f-crm", compact=True
            )
            yield Select(
                [("yes", True), ("no", False)], prompt="bounced", id="f-bounced", compact=True
            )
        yield DataTable(id="users", cursor_type="row", zebra_stripes=True)
        yield Static(id="count", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Users"
        show_rows(self.query_one("#users", DataTable), COLUMNS, [])
        # The list has the focus, so its keys work; "/" moves to the search box.
        self.query_one("#users", DataTable).focus()
        super().on_mount()

    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"channel": self.channel_id, "limit": PAGE}
        query = self.query_one("#search", Input).value.strip()
        if query:
            p["query"] = query
        for wid, key in (
            ("f-error", "has_sync_error"),
            ("f-sub", "subscription"),
            ("f-source", "source"),
            ("f-promo", "promo"),
            ("f-crm", "crm_kind"),
            ("f-bounced", "bounced"),
        ):
            value = self.query_one(f"#{wid}", Select).value
            if value is not Select.NULL:
                p[key] = value
        return p

    def reload(self) -> None:
        if not self.tags:
            self.call("channels.get", {"id": self.channel_id}, lambda doc: Loaded("channel", doc))
        params = self.params()
        query = params.get("query", "")
        self.call(
            "users.list",
            params,
            lambda page: Loaded("users", {**page, "query": query}),
            group="users",
        )

    def action_more(self) -> None:
        if self.next is not None:
            self.call(
                "users.list",
                {**self.params(), "after": self.next},
                lambda page: Loaded("users", page, append=True),
                group="users",
            )

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "search":
            self.reload()  # exclusive: a newer keystroke cancels the older request's worker

    def on_select_changed(self, event: Select.Changed) -> None:
        self.reload()

    def on_loaded(self, message: Loaded) -> None:
        if message.what == "channel":
            self.tags = list(message.data["sequential_tags"])
            self.sub_title = f"Users of {message.data['name']}"
            self.query_one("#f-promo", Select).set_options([(literal(t), t) for t in self.tags])
            return
        if message.what == "user":
            self.replace(message.data)
            return
        if message.what != "users":
            return
        page = message.data
        if not message.append:
            self.users = []
            self.query_one("#users", DataTable).move_cursor(row=0)
        self.users += page["users"]
        self.show()
        self.next, self.total = page["next"], page["total"]
        if not message.append:
            self.shown_query = page.get("query", "")
            typed = self.query_one("#search", Input).value.strip()
            if self.open_when_shown and self.shown_query == typed:
                self.open_when_shown = False
                self.action_open_user()
        self.show_count()

    def show_count(self) -> None:
        more = " — m or the end of the list loads more" if self.next is not None else ""
        legend = f"\n{LEGEND}" if any(u.get("bounce") for u in self.users) else ""
        self.query_one("#count", Static).update(
            f"{len(self.users):,} of {self.total:,} shown{more}{legend}"
        )

    def show(self) -> None:
        bounced = any(u.get("bounce") for u in self.users)
        rows = [self.row(u) for u in self.users]
        show_rows(
            self.query_one("#users", DataTable),
            WITH_BOUNCED if bounced else COLUMNS,
            rows if bounced else [r[:-1] for r in rows],
            [str(u["id"]) for u in self.users],
        )

    def on_resize(self, event: events.Resize) -> None:
        self.call_after_refresh(self.show)

    @staticmethod
    def row(user: dict[str, Any]) -> tuple[Text, ...]:
        name = " ".join(p for p in (user.get("first_name"), user.get("last_name")) if p)
        source = SOURCES.get(user["source"], user["source"])
        bounced = literal((user.get("bounce") or {}).get("status", ""))
        bounced.style = "bold red"
        return (
            *(
                literal(cell)
                for cell in (
                    str(user["id"]),
                    user["email"],
                    name,
                    subscription(user),
                    source,
                    crm(user),
                    "yes" if user.get("sync_error") else "",
                )
            ),
            bounced,
        )

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.cursor_row == len(self.users) - 1 and self.next is not None:
            self.action_more()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_user()

    def open_highlighted(self) -> None:
        """Enter in the search box: the highlighted user of *this* search (once it answered)."""
        if self.shown_query == self.query_one("#search", Input).value.strip():
            self.action_open_user()
        else:
            self.open_when_shown = True

    def action_open_user(self) -> None:
        table = self.query_one("#users", DataTable)
        if self.users and 0 <= table.cursor_row < len(self.users):
            self.app.open_user(self.users[table.cursor_row]["id"])  # type: ignore[attr-defined]  # self.app is a KulooApp

    def action_add_user(self) -> None:
        self.app.add_user(self.channel_id)  # type: ignore[attr-defined]  # self.app is a KulooApp

    def action_focus_search(self) -> None:
        self.query_one("#search", Input).focus()

    def on_daemon_event(self, event: DaemonEvent) -> None:
        if event.event == "user.erased" and isinstance(event.data, dict):
            if any(shown["id"] == event.data.get("id") for shown in self.users):
                self.reload()  # an erased user leaves the list
            return
        if event.event == "users.changed" and isinstance(event.data, dict):
            # Users changed by the sync or the bounce mailbox: the rows shown are read again.
            if event.data.get("channel") == self.channel_id:
                ids = set(event.data.get("ids") or ())
                for shown in self.users:
                    if shown["id"] in ids:
                        self.call(
                            "users.get",
                            {"id": shown["id"]},
                            lambda doc: Loaded("user", doc),
                            group=f"user-{shown['id']}",
                        )
            return
        if event.event != "user.updated" or not isinstance(event.data, dict):
            return
        self.replace(event.data)

    def replace(self, user: dict[str, Any]) -> None:
        """A user's new document, in its row if it is shown."""
        for i, shown in enumerate(self.users):
            if shown["id"] == user["id"]:
                self.users[i] = user
                self.show()
                self.show_count()
                return
