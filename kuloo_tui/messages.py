"""The typed messages workers post back to the UI (docs/architecture.md, "The TUI").

None bubble: the app forwards daemon events to every screen, and a bubbling copy would
come back to the app and be forwarded again, for ever.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message


class DaemonUp(Message, bubble=False):
    """A connection to the daemon is up (again): screens reload what they show."""

    def __init__(self, server: dict[str, Any]) -> None:
        super().__init__()
        self.server = server


class DaemonDown(Message, bubble=False):
    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class DaemonEvent(Message, bubble=False):
    """An event the daemon published (``channel.updated``, ``user.updated``, …)."""

    def __init__(self, event: str, data: Any) -> None:
        super().__init__()
        self.event = event
        self.data = data


class Loaded(Message, bubble=False):
    """A worker's result: ``what`` names it (``channels``, ``users``, ``user``, …)."""

    def __init__(self, what: str, data: Any, append: bool = False) -> None:
        super().__init__()
        self.what = what
        self.data = data
        self.append = append


class Saved(Message, bubble=False):
    """A save went through: the document as the daemon returned it."""

    def __init__(self, what: str, doc: Any) -> None:
        super().__init__()
        self.what = what
        self.doc = doc


class Failed(Message, bubble=False):
    """A call failed: its method and the daemon's message(s), one problem per line."""

    def __init__(self, method: str, problems: list[str]) -> None:
        super().__init__()
        self.method = method
        self.problems = problems
