"""A user's profile: frequency, unsubscribed, add-to-CRM, names, promo tags (only the
channel's tags are offered), the CRM link, the bounce (with "Clear bounce", behind a
confirmation) and the audit trail. Also "Add user"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.segment import Segment
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.strip import Strip
from textual.widgets import (
    Button,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    Select,
    SelectionList,
    Static,
    Switch,
)
from textual.widgets._toggle_button import ToggleButton
from textual.widgets.option_list import OptionDoesNotExist

from ..messages import DaemonEvent, Loaded, Saved
from ..vocabulary import FREQUENCIES, SOURCES
from .base import SELL_WEB, Banner, DaemonScreen, link_text, literal, record_url
from .confirm import ConfirmScreen, TypeToConfirmScreen


class CheckList(SelectionList[str]):
    """A SelectionList whose boxes read ✓ (on) and ☐ (off), not only by colour."""

    ON, OFF = "✓", "☐"

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        segments = list(strip)
        if len(segments) < 3 or segments[1].text != ToggleButton.BUTTON_INNER:
            return strip
        try:
            option = self.get_option_at_index(self.scroll_offset.y + y)
        except OptionDoesNotExist:
            return strip
        mark = self.ON if option.value in self.selected else self.OFF
        segments[1] = Segment(mark, segments[1].style)
        return Strip(segments, strip.cell_length)


def crm_link(crm: dict[str, Any] | None, web_url: str = SELL_WEB) -> Text:
    """``lead 5 — <link>``: the record's page in the Sell web app (``[sell] web_url``)."""
    if not crm:
        return Text("not in Zendesk Sell")
    return Text.assemble(f"{crm['kind']} {crm['id']} — ", link_text(record_url(web_url, crm)))


class UserScreen(DaemonScreen):
    BINDINGS = [
        Binding("ctrl+s", "save", "Save"),
        Binding("escape", "app.pop_screen", "Back"),
        Binding("f8", "reset_sequence", "Reset sequence"),
        Binding("ctrl+delete", "erase_user", "Erase"),
        Binding("f7", "clear_bounce", "Clear bounce"),  # shown only for a bounced user
    ]

    def __init__(self, channel_id: int, user_id: int | None = None) -> None:
        super().__init__(name=f"user-{user_id or 'new'}")
        self.channel_id = channel_id
        self.user_id = user_id
        self.doc: dict[str, Any] | None = None
        self.tags: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Banner()
        with VerticalScroll(id="form"):
            yield Label("Email")
            yield Input(id="email", compact=True)
            with Horizontal(classes="row"):
                yield Input(id="first_name", placeholder="first name", compact=True)
                yield Input(id="last_name", placeholder="last name", compact=True)
            with Horizontal(classes="row"):
                yield Label("Frequency", classes="inline")
                yield Select(
                    [(f, f) for f in FREQUENCIES],
                    id="frequency",
                    allow_blank=False,
                    value="weekly",
                    compact=True,
                )
                yield Label("Unsubscribed", classes="inline")
                yield Switch(id="unsubscribed")
                yield Label("Add to CRM", classes="inline")
                yield Switch(id="add_to_crm")
            yield Label("Promo tags (the channel's sequential tags)")
            yield CheckList(id="promo_tags", compact=True)
            yield Static(id="crm", markup=False)
            # The address bounced: the remote server's words, drawn as they came.
            yield Static(id="bounce", markup=False)
            yield Button("Clear bounce…", id="clear-bounce", variant="warning", compact=True)
            yield Button(
                "Add user" if self.user_id is None else "Save",
                id="save",
                variant="primary",
                compact=True,
            )
            if self.user_id is not None:
                yield Label("Sequence", classes="section-title")
                yield Static("—", id="progress", markup=False)
                yield Button("Reset sequence…", id="reset", variant="warning", compact=True)
                yield Label("Audit trail", classes="section-title")
                yield DataTable(id="audit", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Add user" if self.user_id is None else "User"
        self.show_bounce(None)
        if self.user_id is not None:
            audit = self.query_one("#audit", DataTable)
            for label, width in (("At", 16), ("Actor", 6), ("Field", 14), ("Old", 22), ("New", 22)):
                audit.add_column(label, width=width)
        super().on_mount()

    def reload(self) -> None:
        self.call("channels.get", {"id": self.channel_id}, lambda doc: Loaded("channel", doc))
        if self.user_id is not None:
            self.call("users.get", {"id": self.user_id}, lambda doc: Loaded("user", doc))
            self.call(
                "users.audit",
                {"id": self.user_id, "limit": 50},
                lambda r: Loaded("audit", r["entries"]),
            )
            self.load_progress()

    def load_progress(self) -> None:
        if self.user_id is not None and "users.progress" in self.methods:
            self.call("users.progress", {"id": self.user_id}, lambda r: Loaded("progress", r))

    def on_loaded(self, message: Loaded) -> None:
        if message.what == "channel":
            self.tags = list(message.data["sequential_tags"])
            self.fill_tags()
        elif message.what == "user":
            self.show(message.data)
        elif message.what == "progress":
            self.query_one("#progress", Static).update(describe_progress(message.data))
        elif message.what == "audit":
            table = self.query_one("#audit", DataTable)
            table.clear()
            for e in message.data:
                at = (e["at"] or "")[:16].replace("T", " ")
                table.add_row(
                    *(
                        literal(cell)
                        for cell in (
                            at,
                            e["actor"],
                            e["field"] or e.get("note") or "",
                            _short(e.get("old")),
                            _short(e.get("new")),
                        )
                    )
                )

    def fill_tags(self) -> None:
        chosen = set(self.doc["promo_tags"]) if self.doc else set()
        box = self.query_one("#promo_tags", SelectionList)
        box.clear_options()
        # Only the channel's tags are offered; a tag the user holds that the channel dropped
        # stays visible.
        for tag in [*self.tags, *sorted(chosen - set(self.tags))]:
            box.add_option((literal(tag), tag, tag in chosen))

    def show(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.sub_title = f"User {doc['email']}"
        self.query_one("#email", Input).value = doc["email"]
        self.query_one("#first_name", Input).value = doc.get("first_name") or ""
        self.query_one("#last_name", Input).value = doc.get("last_name") or ""
        self.query_one("#frequency", Select).value = doc["frequency"]
        self.query_one("#unsubscribed", Switch).value = doc["unsubscribed"]
        self.query_one("#add_to_crm", Switch).value = doc["add_to_crm"]
        self.fill_tags()
        source = SOURCES.get(doc["source"], doc["source"])
        error = f"\nSync error: {doc['sync_error']}" if doc.get("sync_error") else ""
        web = getattr(self.app, "sell_web_url", SELL_WEB)
        self.query_one("#crm", Static).update(
            Text.assemble("CRM: ", crm_link(doc.get("crm"), web), f"   Source: {source}{error}")
        )
        self.show_bounce(doc.get("bounce"))

    def show_bounce(self, bounce: dict[str, Any] | None) -> None:
        box = self.query_one("#bounce", Static)
        box.display = bounce is not None
        self.query_one("#clear-bounce", Button).display = bounce is not None
        if bounce is not None:
            box.update(Text(bounce_line(bounce)))
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "clear_bounce":
            return bool(self.doc and self.doc.get("bounce"))  # F7 only for a bounced user
        return True

    def form(self) -> dict[str, Any]:
        return {
            "email": self.query_one("#email", Input).value.strip(),
            "first_name": self.query_one("#first_name", Input).value.strip(),
            "last_name": self.query_one("#last_name", Input).value.strip(),
            "frequency": self.query_one("#frequency", Select).value,
            "unsubscribed": self.query_one("#unsubscribed", Switch).value,
            "add_to_crm": self.query_one("#add_to_crm", Switch).value,
            "promo_tags": list(self.query_one("#promo_tags", SelectionList).selected),
        }

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        elif event.button.id == "reset":
            self.action_reset_sequence()
        elif event.button.id == "clear-bounce":
            self.action_clear_bounce()

    def _on_yes(
        self, method: str, params: dict[str, Any], saved: str, group: str
    ) -> Callable[[bool | None], None]:
        """A confirmation's answer: on yes, ``method`` with ``params``; its answer is posted
        as ``Saved(saved, …)``."""

        def answered(yes: bool | None) -> None:
            if yes:
                self.call(method, params, lambda r: Saved(saved, r), group=group)

        return answered

    def action_clear_bounce(self) -> None:
        """users.update {"clear_bounce": true}, after a confirmation."""
        if self.user_id is None or self.doc is None or not self.doc.get("bounce"):
            return
        user_id, email, bounce = self.user_id, self.doc["email"], self.doc["bounce"]
        words = " ".join(w for w in (bounce.get("status"), bounce.get("reason")) if w)

        self.app.push_screen(
            ConfirmScreen(
                f"Clear the bounce of {email}?\n\n"
                f"Its mail server refused mail for good: {words}\n\n"
                "Kuloo sends to it again from now on (nothing that was skipped is sent). "
                "Clear it only if you know the address works again; the next bounce marks "
                "it again.",
                yes="Clear bounce",
            ),
            self._on_yes(
                "users.update",
                {"id": user_id, "clear_bounce": True},
                "bounce-cleared",
                "clear-bounce",
            ),
        )

    def action_reset_sequence(self) -> None:
        if self.user_id is None or self.doc is None:
            return
        if "users.reset_sequence" not in self.methods:
            self.app.notify("This daemon has no users.reset_sequence yet.", severity="warning")
            return
        user_id, email = self.user_id, self.doc["email"]

        self.app.push_screen(
            ConfirmScreen(
                f"Reset the sequence of {email}?\n\n"
                "The sequential articles start again from the first: "
                "articles already sent will be sent again when due.",
                yes="Reset",
            ),
            self._on_yes("users.reset_sequence", {"id": user_id}, "reset", "reset"),
        )

    def action_erase_user(self) -> None:
        """users.erase behind a confirmation where the user's email is typed out."""
        if self.user_id is None or self.doc is None or "users.erase" not in self.methods:
            return
        user_id, email = self.user_id, self.doc["email"]
        question = (
            f"Erase user {user_id} ({email})? Their profile, audit values and outbox leave "
            "Kuloo for good; their Sell record is not touched, only unlinked, and is not "
            "imported again. This cannot be undone. Type their email to go on."
        )

        self.app.push_screen(
            TypeToConfirmScreen(question, email, "Erase"),
            self._on_yes("users.erase", {"id": user_id, "confirm": email}, "erased", "erase"),
        )

    def action_save(self) -> None:
        values = self.form()
        if self.user_id is None:
            params = {
                "channel": self.channel_id,
                **{k: v for k, v in values.items() if v not in ("", [])},
            }
            self.call("users.add", params, lambda doc: Saved("user", doc), group="save")
            return
        if self.doc is None:
            return
        changes = {k: v for k, v in values.items() if _norm(v) != _norm(self.doc.get(k))}
        if not changes:
            self.app.notify("Nothing changed.")
            return
        self.call(
            "users.update",
            {"id": self.user_id, **changes},
            lambda doc: Saved("user", doc),
            group="save",
        )

    def on_saved(self, message: Saved) -> None:
        if message.what == "erased":
            self.app.notify(f"User {message.doc['id']} erased.")
            self.app.pop_screen()
            return
        if message.what == "bounce-cleared":
            self.show(message.doc)
            self.app.notify(f"Bounce cleared: mail to {message.doc['email']} resumes.")
            self.call(
                "users.audit",
                {"id": self.user_id, "limit": 50},
                lambda r: Loaded("audit", r["entries"]),
            )
            return
        if message.what == "reset":
            self.app.notify(f"Sequence reset ({message.doc['cleared']} sent article(s) forgotten).")
            self.load_progress()
            return
        if self.user_id is None:
            self.app.notify(f"Added {message.doc['email']}.")
            self.user_id = message.doc["id"]
            self.app.pop_screen()
            self.app.open_user(message.doc["id"])  # type: ignore[attr-defined]  # self.app is a KulooApp
            return
        self.show(message.doc)
        self.app.notify("Saved.")
        self.call(
            "users.audit",
            {"id": self.user_id, "limit": 50},
            lambda r: Loaded("audit", r["entries"]),
        )

    def on_daemon_event(self, event: DaemonEvent) -> None:
        if self.user_id is None or not isinstance(event.data, dict):
            return
        if (event.event == "user.updated" and event.data.get("id") == self.user_id) or (
            # the sync or the bounce mailbox changed users of the channel (a bounce, say)
            event.event == "users.changed" and self.user_id in (event.data.get("ids") or ())
        ):
            self.reload()


def bounce_line(bounce: dict[str, Any]) -> str:
    """The profile's bounce: when, the status and the remote server's words, and what it means."""
    at = (bounce.get("at") or "")[:16].replace("T", " ")
    words = " ".join(w for w in (bounce.get("status"), bounce.get("reason")) if w)
    when = f" on {at} UTC" if at else ""
    return (
        f"Bounced{when}: {words}\n"
        "No email of any kind goes to this address until the bounce is cleared or the "
        "email changes."
    )


def describe_progress(progress: dict[str, Any]) -> str:
    sent = progress.get("sent") or []
    lines = [
        f"Sent {(s.get('sent_at') or '')[:16].replace('T', ' ')}  {s.get('title') or s['article']}"
        for s in sent
    ] or ["No sequential article sent yet."]
    nxt = progress.get("next")
    if nxt:
        due = (nxt.get("due_at") or "")[:16].replace("T", " ")
        lines.append(f"Next {due}  {nxt.get('title') or nxt['article']}")
    else:
        lines.append("Nothing more is due.")
    return "\n".join(lines)


def _norm(value: Any) -> Any:
    """A field's value for comparison: None and "" alike, tags in any order alike."""
    if isinstance(value, list):
        return sorted(value)
    if isinstance(value, bool):
        return value
    return value or ""


def _short(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= 22 else text[:21] + "…"
