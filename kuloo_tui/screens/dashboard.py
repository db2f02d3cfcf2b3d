"""Dashboard: every channel with its plan, connection, users, sync state; each channel's
deliverability over the last 30 days (a warning above 2 % bounces or 0.1 % complaints); the
last runs; the mail relay's words when it refuses us (every message then waits in the
queue)."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from ..messages import DaemonEvent, Loaded
from .base import Banner, DaemonScreen, fill_table

RUNS_SHOWN = 5
# Short headings so that 80 columns hold them all (Sell = the connection's status).
CHANNEL_COLUMNS = (
    "Id",
    "Channel",
    "Plan",
    "Sell",
    "Users",
    "Errors",
    "Mail q/f/u",
    "Last sync",
    "Next sync",
)
RUN_COLUMNS = ("Channel", "Run", "Status", "Started", "Counts")
DELIVERABILITY_COLUMNS = ("Channel", "Sent", "Bounced", "Bounce rate", "Complaints", "Compl. rate")
# Above these the mailbox providers start refusing a sender's mail (Gmail's hard line for
# complaints is 0.3 %): the dashboard warns.
BOUNCE_RATE_WARN = 0.02
COMPLAINT_RATE_WARN = 0.001
OUTBOX_SHOWN = ("queued", "failed", "uncertain")


def _percent(rate: float, sent: int, warn: float) -> Text:
    """A rate as ``2.50%``, bold red with a ⚠ above ``warn``; "—" when nothing was sent."""
    if not sent:
        return Text("—")
    if rate > warn:
        return Text(f"⚠ {rate * 100:.2f}%", style="bold red")
    return Text(f"{rate * 100:.2f}%")


def warnings(name: str, figures: dict[str, Any]) -> list[str]:
    """What to tell the channel owner about the channel's last 30 days, if anything."""
    out = []
    sent = figures.get("sent_30d") or 0
    bounce, complaint = figures.get("bounce_rate") or 0, figures.get("complaint_rate") or 0
    if sent and bounce > BOUNCE_RATE_WARN:
        out.append(
            f"⚠ {name}: {bounce * 100:.2f}% of the last 30 days' emails bounced "
            "(above 2%): mailbox providers may start refusing its mail. Its bounced "
            "users: u, filter bounced."
        )
    if sent and complaint > COMPLAINT_RATE_WARN:
        out.append(
            f"⚠ {name}: {complaint * 100:.2f}% of the last 30 days' emails were reported "
            "as spam (above 0.1%; Gmail refuses senders above 0.3%)."
        )
    return out


def _when(iso: str | None) -> str:
    """An ISO instant as ``11-28 12:05`` (UTC, as the daemon keeps it)."""
    if not iso:
        return "—"
    return iso.replace("T", " ")[5:16]


class DashboardScreen(DaemonScreen):
    BINDINGS = [
        Binding("enter", "open_channel", "Channel", show=True),
        Binding("u", "users", "Users"),
        Binding("a", "articles", "Articles"),
        Binding("o", "outbox", "Outbox"),
        Binding("y", "sync", "Sync runs"),
        Binding("s", "sync_now", "Sync now"),
        Binding("r", "reload", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__(name="dashboard")
        self.channels: list[dict[str, Any]] = []
        self._pending_reload = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Banner()
        yield Static("Channels", classes="section-title")
        yield DataTable(id="channels", cursor_type="row", zebra_stripes=True)
        yield Static(id="relay", classes="relay-refusing")
        yield Static("Deliverability, last 30 days", classes="section-title", id="dlv-title")
        yield DataTable(id="deliverability", cursor_type="none")
        yield Static(id="reputation", classes="relay-refusing")
        yield Static("Last sync runs", classes="section-title")
        yield DataTable(id="runs", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "Kuloo Sync"
        self.sub_title = "Dashboard"
        fill_table(self.query_one("#channels", DataTable), CHANNEL_COLUMNS, [])
        fill_table(self.query_one("#runs", DataTable), RUN_COLUMNS, [])
        fill_table(self.query_one("#deliverability", DataTable), DELIVERABILITY_COLUMNS, [])
        self.query_one("#relay", Static).display = False
        self.query_one("#reputation", Static).display = False
        super().on_mount()

    def reload(self) -> None:
        self._pending_reload = False
        self.gather("dashboard", self._fetch, lambda data: Loaded("dashboard", data))

    async def _fetch(self) -> dict[str, Any]:
        channels = (await self.client.call("channels.list"))["channels"]
        # Every figure is a count or a short page from the daemon, asked all at once (the
        # client pipelines calls on its one connection).
        fetched = await asyncio.gather(*(self._channel_row(channel) for channel in channels))
        rows = [row for row, _runs in fetched]
        runs = [run for _row, channel_runs in fetched for run in channel_runs]
        runs.sort(key=lambda pair: pair[1].get("started_at") or "", reverse=True)
        status = await self.client.call("status")
        return {"rows": rows, "runs": runs[:RUNS_SHOWN], "relay": status.get("relay")}

    async def _channel_row(self, channel: dict[str, Any]) -> tuple[dict[str, Any], list]:
        methods, call, cid = self.methods, self.client.call, channel["id"]

        async def nothing() -> None:
            return None

        def ask(method: str, params: dict[str, Any]):
            return call(method, params) if method in methods else nothing()

        got, users, errors, runs, outbox = await asyncio.gather(
            ask("channels.get", {"id": cid}),  # it carries the sync schedule once sync is in
            ask("users.list", {"channel": cid, "limit": 1}),
            ask("sync.errors", {"channel": cid, "limit": 1}),
            ask("sync.runs", {"channel": cid, "limit": RUNS_SHOWN}),
            ask("outbox.counts", {"channel": cid}),  # counted by the daemon: exact however many
        )
        row = {
            "channel": got or channel,
            "users": users["total"] if users else None,
            "errors": f"{errors['total']:,}" if errors and "total" in errors else None,
            "outbox": "/".join(f"{outbox['counts'].get(state, 0):,}" for state in OUTBOX_SHOWN)
            if outbox
            else None,
        }
        return row, [((got or channel)["name"], r) for r in (runs or {}).get("runs", [])]

    def on_loaded(self, message: Loaded) -> None:
        if message.what != "dashboard":
            return
        self.channels = [row["channel"] for row in message.data["rows"]]
        self.app.channels = self.channels  # type: ignore[attr-defined]  # self.app is a KulooApp
        rows = []
        for row in message.data["rows"]:
            c = row["channel"]
            sync = c.get("sync") or {}
            rows.append(
                (
                    str(c["id"]),
                    c["name"],
                    c["plan"],
                    c["connection"]["status"].replace("_", " "),
                    "—" if row["users"] is None else f"{row['users']:,}",
                    "—" if row["errors"] is None else row["errors"],
                    "—" if row["outbox"] is None else row["outbox"],
                    _when(sync.get("last_sync_at")),
                    _when(sync.get("next_sync_at")),
                )
            )
        fill_table(
            self.query_one("#channels", DataTable),
            CHANNEL_COLUMNS,
            rows,
            [str(c["id"]) for c in self.channels],
        )
        runs = []
        for name, r in message.data["runs"]:
            counts = ", ".join(f"{k} {v}" for k, v in (r.get("counts") or {}).items() if v)
            runs.append(
                (name, str(r["id"]), r["status"], _when(r.get("started_at")), counts or "—")
            )
        fill_table(self.query_one("#runs", DataTable), RUN_COLUMNS, runs)
        self.show_deliverability()
        relay = message.data.get("relay") or {}
        box = self.query_one("#relay", Static)
        box.display = relay.get("state") == "refusing"
        if box.display:
            # The server's own words, shown literally (never read as markup).
            box.update(
                Text(
                    f"Mail relay refusing since {_when(relay.get('since'))}: every message waits "
                    f"in the queue; next try {_when(relay.get('retry_at'))}. "
                    f"{relay.get('error') or ''}"
                )
            )

    def show_deliverability(self) -> None:
        """Each channel's figures (from ``channels.get``), and a warning above the lines."""
        rows, warned = [], []
        for c in self.channels:
            figures = c.get("deliverability")
            if figures is None:  # a daemon from before bounces: nothing to show
                continue
            sent = figures["sent_30d"]
            rows.append(
                (
                    c["name"],
                    f"{sent:,}",
                    f"{figures['bounced_30d']:,}",
                    _percent(figures["bounce_rate"], sent, BOUNCE_RATE_WARN),
                    f"{figures['complaints_30d']:,}",
                    _percent(figures["complaint_rate"], sent, COMPLAINT_RATE_WARN),
                )
            )
            warned += warnings(c["name"], figures)
        # A daemon from before bounces has no figures: no section then. (Shown otherwise from
        # the start: a DataTable shown and filled at once was seen drawn empty now and then.)
        older = bool(self.channels) and not rows
        for wid in ("#dlv-title", "#deliverability"):
            self.query_one(wid).display = not older
        fill_table(self.query_one("#deliverability", DataTable), DELIVERABILITY_COLUMNS, rows)
        box = self.query_one("#reputation", Static)
        box.display = bool(warned)
        box.update(Text("\n".join(warned)))  # channel names drawn as typed

    def on_daemon_event(self, event: DaemonEvent) -> None:
        # Many events can come at once (a sync's batches): reload at most every half second.
        if not self._pending_reload:
            self._pending_reload = True
            self.set_timer(0.5, self.reload)

    @property
    def selected(self) -> dict[str, Any] | None:
        table = self.query_one("#channels", DataTable)
        if not self.channels or table.cursor_row < 0:
            return None
        return self.channels[min(table.cursor_row, len(self.channels) - 1)]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "channels":
            self.action_open_channel()

    def action_open_channel(self) -> None:
        if self.selected:
            self.app.open_channel(self.selected["id"])  # type: ignore[attr-defined]  # self.app is a KulooApp

    def action_users(self) -> None:
        if self.selected:
            self.app.open_users(self.selected["id"])  # type: ignore[attr-defined]  # self.app is a KulooApp

    def action_articles(self) -> None:
        if self.selected:
            self.app.open_articles(self.selected["id"])  # type: ignore[attr-defined]  # self.app is a KulooApp

    def action_sync(self) -> None:
        if self.selected:
            self.app.open_sync(self.selected["id"])  # type: ignore[attr-defined]  # self.app is a KulooApp

    def action_outbox(self) -> None:
        if self.selected:
            self.app.open_outbox(self.selected["id"])  # type: ignore[attr-defined]  # self.app is a KulooApp

    def action_sync_now(self) -> None:
        if self.selected:
            self.app.sync_now(self.selected["id"])  # type: ignore[attr-defined]  # self.app is a KulooApp

    def action_reload(self) -> None:
        self.reload()
