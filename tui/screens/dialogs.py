"""Modal dialogs: confirm, error, prompt, choose, quit, help."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Markdown, OptionList, Static
from textual.widgets.option_list import Option


class ConfirmScreen(ModalScreen[bool]):
    """A destructive action asks first. Enter/y confirms, Escape/n cancels."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes", tooltip="Do it"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no", tooltip="Cancel, change nothing"),
    ]

    def __init__(self, title: str, body: str, confirm: str = "Do it", *, command: str | None = None) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text, self.body, self.confirm_label, self.command = title, body, confirm, command

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="confirm-dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.body, classes="dialog-body")
            if self.command:
                yield Static(Text(self.command, style="bold cyan"), classes="dialog-command", id="confirm-command")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.confirm_label} (y)", variant="error", id="yes")
                yield Button("Cancel (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class MessageScreen(ModalScreen[None]):
    """A message with one Close button (focused); escape, enter or q close it too."""

    def on_mount(self) -> None:
        self.query_one("#close", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)


class ErrorScreen(MessageScreen):
    BINDINGS = [Binding("escape,enter,q", "close", "Close", id="error.close", tooltip="Close this message")]

    def __init__(self, title: str, message: str) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text, self.message = title, message

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog error", id="error-dialog"):
            yield Label(f"✗ {self.title_text}", classes="dialog-title")
            with VerticalScroll(classes="dialog-scroll"):
                yield Static(Text(self.message), classes="dialog-body", id="error-message")
            yield Static("The app keeps running; the Logs screen has the full output.", classes="dim")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", variant="primary", id="close")



class PromptScreen(ModalScreen["str | None"]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel", tooltip="Cancel, change nothing")]

    def __init__(self, title: str, body: str, value: str = "", placeholder: str = "", restrict: str | None = None) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text, self.body, self.value, self.placeholder, self.restrict = title, body, value, placeholder, restrict

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="prompt-dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.body, classes="dialog-body")
            yield Input(self.value, placeholder=self.placeholder, restrict=self.restrict, id="prompt-input")
            yield Static("Enter to accept, Escape to cancel", classes="dim")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ChoiceScreen(ModalScreen["str | None"]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="choice.cancel", tooltip="Cancel, change nothing")]

    def __init__(self, title: str, body: str, choices: list[tuple[str, str]]) -> None:
        """choices: [(id, label)]"""
        super().__init__(classes="dialog-screen")
        self.title_text, self.body, self.choices = title, body, choices

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="choice-dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.body, classes="dialog-body")
            yield OptionList(*[Option(label, id=cid) for cid, label in self.choices], id="choices")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ReplyScreen(MessageScreen):
    """Shows what a command answered (curl from a node, and the like)."""

    BINDINGS = [Binding("escape,enter,q", "close", "Close", id="reply.close", tooltip="Close this message")]

    def __init__(self, title: str, body: Text | str) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text, self.body = title, body

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="reply-dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.body, classes="dialog-body", id="reply-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", variant="primary", id="close")



class QuitScreen(ModalScreen["str | None"]):
    """Quit, leaving the lab running (the default), or stop the lab first."""

    BINDINGS = [
        Binding("l", "choose('leave')", "Leave running", id="quit.leave", tooltip="Quit; the lab keeps running"),
        Binding("s", "choose('stop')", "Stop lab", id="quit.stop", tooltip="Stop the lab (remove everything), then quit"),
        Binding("escape", "choose(None)", "Cancel", id="quit.cancel", tooltip="Back to the app"),
    ]

    def __init__(self, lab: str) -> None:
        super().__init__(classes="dialog-screen")
        self.lab = lab

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="quit-dialog"):
            yield Label("Quit ipsec-lab", classes="dialog-title")
            yield Static(f"Lab {self.lab!r} keeps running unless you stop it. "
                         f"`ipsec-lab --lab {self.lab}` attaches to it again.", classes="dialog-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Quit, leave lab running (l)", variant="primary", id="leave")
                yield Button("Stop lab and quit (s)", variant="error", id="stop")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#leave", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)

    def action_choose(self, choice: str | None) -> None:
        self.dismiss(choice)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close", id="help.close", tooltip="Close help")]

    def __init__(self, markdown: str) -> None:
        super().__init__(classes="dialog-screen")
        self.markdown = markdown

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help", id="help-dialog"):
            with VerticalScroll(id="help-scroll"):
                yield Markdown(self.markdown, id="help-text")
            yield Static("Escape closes help · ctrl+p opens the command palette", classes="dim")

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)
