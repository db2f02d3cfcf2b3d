"""Articles of a channel: the list, a preview (the text part in the terminal, with size and
warnings), and importing a folder (under the daemon's ``[articles] root``)."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Button, DataTable, Footer, Header, Input, Static

from ..messages import DaemonEvent, Loaded, Saved
from .base import Banner, DaemonScreen, literal

COLUMNS = (("Id", 5), ("Title", 30), ("Kind", 10), ("Tags", 16), ("Published", 16), ("State", 9))


def describe_preview(preview: dict[str, Any]) -> str:
    warnings = preview.get("warnings") or []
    head = [f"Subject: {preview.get('subject', '')}", f"Preview: {preview.get('preheader', '')}",
            f"HTML size: {preview.get('size_bytes', 0):,} bytes"]
    head += [f"Warning: {w}" for w in warnings]
    return "\n".join(head) + "\n\n" + (preview.get("text") or "")


class ArticlesScreen(DaemonScreen):
    BINDINGS = [
        Binding("enter", "preview", "Preview"),
        Binding("i", "focus_import", "Import"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self, channel_id: int) -> None:
        super().__init__(name=f"articles-{channel_id}")
        self.channel_id = channel_id
        self.articles: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Banner()
        with Horizontal(id="import-row"):
            yield Input(id="folder", placeholder="folder under [articles] root to import", compact=True)
            yield Button("Import", id="import", compact=True)
        yield DataTable(id="articles", cursor_type="row", zebra_stripes=True)
        yield Static(id="preview", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Articles"
        table = self.query_one("#articles", DataTable)
        for label, width in COLUMNS:
            table.add_column(label, width=width)
        table.focus()
        super().on_mount()

    def reload(self) -> None:
        if "articles.list" not in self.methods:
            self.query_one("#preview", Static).update("This daemon has no articles yet.")
            return
        self.call("articles.list", {"channel": self.channel_id}, lambda r: Loaded("articles", r["articles"]))

    def on_loaded(self, message: Loaded) -> None:
        if message.what == "preview":
            self.query_one("#preview", Static).update(describe_preview(message.data))
            return
        table = self.query_one("#articles", DataTable)
        table.clear()
        self.articles = list(message.data)
        for a in self.articles:
            table.add_row(*(literal(cell) for cell in (
                str(a["id"]), a["title"] or a["file"], a["kind"], ", ".join(a["tags"]),
                (a.get("published_at") or "")[:16].replace("T", " "),
                "withdrawn" if a.get("withdrawn_at") else "")), key=str(a["id"]))

    def action_preview(self) -> None:
        table = self.query_one("#articles", DataTable)
        if self.articles and 0 <= table.cursor_row < len(self.articles):
            article = self.articles[table.cursor_row]
            self.query_one("#preview", Static).update("Rendering…")
            self.call("articles.preview", {"id": article["id"]}, lambda r: Loaded("preview", r), group="preview")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_preview()

    def action_focus_import(self) -> None:
        self.query_one("#folder", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.start_import()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "import":
            self.start_import()

    def start_import(self) -> None:
        folder = self.query_one("#folder", Input).value.strip()
        if not folder:
            self.app.notify("Type the folder to import first.", severity="warning")
            return
        self.call("articles.import", {"channel": self.channel_id, "path": folder},
                  lambda r: Saved("import", r), group="import", seconds=600)

    def on_saved(self, message: Saved) -> None:
        report = message.doc
        summary = ", ".join(f"{k} {len(v) if isinstance(v, list) else v}" for k, v in report.items()
                            if isinstance(v, (int, list)))
        self.app.notify(f"Imported: {summary or report}")
        self.reload()

    def on_daemon_event(self, event: DaemonEvent) -> None:
        if event.event == "articles.changed" and isinstance(event.data, dict) and event.data.get("channel") == self.channel_id:
            self.reload()
