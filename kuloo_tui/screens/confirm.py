"""Confirmations in front of destructive actions: a yes/no one (Reset sequence, resolve, …)
and, for what cannot be undone at all (deleting a channel), one where a name is typed out."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Static


class ConfirmScreen(ModalScreen[bool]):
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 60; max-width: 90%; height: auto; border: thick $warning;
                               background: $surface; padding: 1 2; }
    ConfirmScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    ConfirmScreen Button { margin-left: 2; }
    """
    BINDINGS = [Binding("escape", "answer(False)", "Cancel"), Binding("y", "answer(True)", "Yes")]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, id="question", markup=False)  # it quotes an email
            with Horizontal():
                yield Button("Cancel", id="no")
                yield Button(self.yes, id="yes", variant="error")
        yield Footer()  # its own keys, not the screen's behind it

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class TypeToConfirmScreen(ModalScreen[bool]):
    """Goes on only when ``expected`` (a channel's name, say) is typed out exactly."""

    DEFAULT_CSS = """
    TypeToConfirmScreen { align: center middle; }
    TypeToConfirmScreen > Vertical { width: 70; max-width: 90%; height: auto; border: thick $error;
                                     background: $surface; padding: 1 2; }
    TypeToConfirmScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    TypeToConfirmScreen Button { margin-left: 2; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, expected: str, yes: str) -> None:
        super().__init__()
        self.question = question
        self.expected = expected
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, id="question", markup=False)
            yield Input(id="typed", placeholder="type it here", compact=True)
            with Horizontal():
                yield Button("Cancel", id="no")
                yield Button(self.yes, id="yes", variant="error", disabled=True)

    def on_mount(self) -> None:
        self.query_one("#typed", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#yes", Button).disabled = event.value != self.expected

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value == self.expected:
            self.dismiss(True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(
            event.button.id == "yes" and self.query_one("#typed", Input).value == self.expected
        )

    def action_cancel(self) -> None:
        self.dismiss(False)
