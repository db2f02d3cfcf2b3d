"""Articles of a channel: the list, a preview (the text part in the terminal, with size and
warnings), and importing a folder (under the daemon's ``[articles] root``)."""

from __future__ import annotations

from typing import Any

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Button, DataTable, Footer, Header, Input, Static

from ..messages import DaemonEvent, Loaded, Saved
from .base import Banner, Col, DaemonScreen, literal, show_rows
from .confirm import ConfirmScreen

# Widths from the content and the terminal: the State column stays at 80 columns.
COLUMNS = (
    Col("Id", keep=5),
    Col("Title", keep=9, flex=True, least=16, shrink=1),
    Col("Kind", keep=3, least=10),
    Col("Tags", keep=4, least=8, shrink=0),
    Col("Published", keep=6, least=16),
    Col("State", keep=8, least=9),
)
SHOWN = 8  # withdrawn articles and problems named one by one in a question or a toast


def _named(article: dict[str, Any]) -> str:
    return f"{article.get('title') or article.get('key')} ({article.get('file')})"


def describe_import(report: dict[str, Any]) -> str:
    """The toast after an import: counts, each withdrawn article, each problem's file and why."""
    counts = [f"{report.get(k, 0)} {k}" for k in ("imported", "updated", "unchanged", "withdrawn")]
    if report.get("cancelled"):
        counts.append(f"{report['cancelled']} queued emails cancelled")
    lines = ["Imported: " + ", ".join(counts)]
    withdrawn = report.get("withdrawn_articles") or []
    lines += [f"Withdrawn: {_named(a)}" for a in withdrawn[:SHOWN]]
    problems = report.get("problems") or []
    lines += [f"Not imported: {p.get('file')}: {p.get('problem')}" for p in problems[:SHOWN]]
    more = len(withdrawn[SHOWN:]) + len(problems[SHOWN:])
    if more:
        lines.append(f"… and {more} more (see the daemon's log)")
    return "\n".join(lines)


def withdraw_question(folder: str, report: dict[str, Any]) -> str:
    withdrawn = report.get("withdrawn_articles") or []
    lines = [
        f"Importing {folder} would withdraw {len(withdrawn)} article(s): their files are gone "
        "from it, and they will never be sent again (queued emails are cancelled)."
    ]
    lines += [f"  • {_named(a)}" for a in withdrawn[:SHOWN]]
    if len(withdrawn) > SHOWN:
        lines.append(f"  … and {len(withdrawn) - SHOWN} more")
    return "\n".join(lines)


def describe_preview(preview: dict[str, Any]) -> str:
    warnings = preview.get("warnings") or []
    head = [
        f"Subject: {preview.get('subject', '')}",
        f"Preview: {preview.get('preheader', '')}",
        f"HTML size: {preview.get('size_bytes', 0):,} bytes",
    ]
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
            yield Input(
                id="folder", placeholder="folder under [articles] root to import", compact=True
            )
            yield Button("Import", id="import", compact=True)
        yield DataTable(id="articles", cursor_type="row", zebra_stripes=True)
        yield Static(id="preview", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Articles"
        table = self.query_one("#articles", DataTable)
        show_rows(table, COLUMNS, [])
        table.focus()
        super().on_mount()

    def reload(self) -> None:
        if "articles.list" not in self.methods:
            self.query_one("#preview", Static).update("This daemon has no articles yet.")
            return
        self.call(
            "articles.list",
            {"channel": self.channel_id},
            lambda r: Loaded("articles", r["articles"]),
        )

    def on_loaded(self, message: Loaded) -> None:
        if message.what == "preview":
            self.query_one("#preview", Static).update(describe_preview(message.data))
            return
        self.articles = list(message.data)
        self.show()

    def show(self) -> None:
        rows = []
        for a in self.articles:
            withdrawn = bool(a.get("withdrawn_at"))
            cells = [
                literal(cell)
                for cell in (
                    str(a["id"]),
                    a["title"] or a["file"],
                    a["kind"],
                    ", ".join(a["tags"]),
                    (a.get("published_at") or "")[:16].replace("T", " "),
                    "withdrawn" if withdrawn else "active",
                )
            ]
            if withdrawn:  # still listed, dimmed: it is never sent again
                for cell in cells:
                    cell.stylize("dim")
            rows.append(cells)
        show_rows(
            self.query_one("#articles", DataTable),
            COLUMNS,
            rows,
            [str(a["id"]) for a in self.articles],
        )

    def on_resize(self, event: events.Resize) -> None:
        self.call_after_refresh(self.show)

    def action_preview(self) -> None:
        table = self.query_one("#articles", DataTable)
        if self.articles and 0 <= table.cursor_row < len(self.articles):
            article = self.articles[table.cursor_row]
            self.query_one("#preview", Static).update("Rendering…")
            self.call(
                "articles.preview",
                {"id": article["id"]},
                lambda r: Loaded("preview", r),
                group="preview",
            )

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
        # First a dry run (no clipping, no writes): an import that would withdraw anything
        # asks first.
        self.call(
            "articles.import",
            {"channel": self.channel_id, "path": folder, "dry_run": True},
            lambda r: Saved("dry-run", {"folder": folder, "report": r}),
            group="import",
            seconds=120,
        )

    def run_import(self, folder: str) -> None:
        self.call(
            "articles.import",
            {"channel": self.channel_id, "path": folder},
            lambda r: Saved("import", r),
            group="import",
            seconds=600,
        )

    def on_saved(self, message: Saved) -> None:
        if message.what == "dry-run":
            folder, report = message.doc["folder"], message.doc["report"]
            if not report.get("withdrawn_articles"):
                self.run_import(folder)
                return

            def answered(yes: bool | None) -> None:
                if yes:
                    self.run_import(folder)
                else:
                    self.app.notify(f"Nothing imported from {folder}.", markup=False)

            question = withdraw_question(folder, report)
            self.app.push_screen(ConfirmScreen(question, yes="Import and withdraw"), answered)
            return
        report = message.doc
        loud = bool(report.get("problems") or report.get("withdrawn"))
        self.app.notify(
            describe_import(report),
            severity="warning" if loud else "information",
            timeout=12 if loud else 5,
            markup=False,
        )
        self.reload()

    def on_daemon_event(self, event: DaemonEvent) -> None:
        if (
            event.event == "articles.changed"
            and isinstance(event.data, dict)
            and event.data.get("channel") == self.channel_id
        ):
            self.reload()
