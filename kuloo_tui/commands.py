"""The command palette offers every action of the TUI, per channel where it applies."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from .app import KulooApp


class KulooCommands(Provider):
    def actions(self) -> list[tuple[str, Callable[[], object], str]]:
        app = cast("KulooApp", self.app)
        out: list[tuple[str, Callable[[], object], str]] = [
            ("Dashboard", app.open_dashboard, "Every channel at a glance"),
            ("Refresh", app.action_refresh, "Fetch this screen again from the daemon"),
            (
                "Toggle light/dark theme",
                app.action_toggle_dark,
                "Switch between the light and dark themes",
            ),
        ]
        methods = set(app.client.server.get("methods", ()))
        for channel in app.channels:
            cid, name = channel["id"], channel["name"]
            out += [
                (
                    f"Channel {name}: document",
                    partial(app.open_channel, cid),
                    "Plan, tags, sender, API token",
                ),
                (
                    f"Channel {name}: users",
                    partial(app.open_users, cid),
                    "Search and filter the users",
                ),
                (f"Channel {name}: add user", partial(app.add_user, cid), "Add a user by email"),
            ]
            if "articles.list" in methods:
                out.append(
                    (
                        f"Channel {name}: articles",
                        partial(app.open_articles, cid),
                        "List, preview, import",
                    )
                )
            if "outbox.list" in methods:
                out.append(
                    (
                        f"Channel {name}: outbox",
                        partial(app.open_outbox, cid),
                        "Mail by state; resolve uncertain",
                    )
                )
            if "sync.run" in methods:
                out.append(
                    (f"Channel {name}: sync now", partial(app.sync_now, cid), "Run a sync now")
                )
            if "sync.runs" in methods:
                out.append(
                    (
                        f"Channel {name}: sync runs and errors",
                        partial(app.open_sync, cid),
                        "History, counts, the Sync errors",
                    )
                )
        return out

    async def discover(self) -> Hits:
        for name, action, help_text in self.actions():
            yield DiscoveryHit(name, action, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, action, help_text in self.actions():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), action, help=help_text)
