"""Tutorial mode's lesson panel, docked beside every live screen.

It renders the app's TutorialSession (headless, tui/tutorial): the step's text, the commands it
runs, what "do it" printed, and the checks that must pass before "next" is offered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Markdown, Static

if TYPE_CHECKING:
    from ..app import IpsecLabApp

OUTPUT_LINES = 60


class LessonPanel(Vertical):
    DEFAULT_CSS = """
    LessonPanel { dock: right; width: 45%; min-width: 50; border-left: thick $accent; padding: 0 1; }
    LessonPanel #lesson-title { text-style: bold; color: $accent; height: auto; }
    LessonPanel #lesson-scroll { height: 1fr; }
    LessonPanel #lesson-commands { color: $text-muted; height: auto; margin: 1 0 0 0; }
    LessonPanel #lesson-note { color: $warning; height: auto; margin: 1 0 0 0; }
    LessonPanel #lesson-output { height: auto; margin: 1 0 0 0; }
    LessonPanel #lesson-checks { height: auto; margin: 1 0 0 0; }
    LessonPanel #lesson-buttons { height: 3; }
    LessonPanel Button { width: auto; min-width: 6; margin: 0 1 0 0; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="lesson-title")
        with VerticalScroll(id="lesson-scroll"):
            yield Markdown(id="lesson-text")
            yield Static(id="lesson-commands")
            yield Static(id="lesson-note")
            yield Static(id="lesson-output")
            yield Static(id="lesson-checks")
        with Horizontal(id="lesson-buttons"):
            yield Button("Do it F5", id="tutorial-do", variant="primary", tooltip="Run this step for real, then check it")
            yield Button("Check F6", id="tutorial-check", tooltip="Run the step's checks again")
            yield Button("◀ F7", id="tutorial-back", tooltip="The previous step")
            yield Button("Next F8 ▶", id="tutorial-next", variant="success", tooltip="Offered once the checks passed")
            yield Button("Skip F9", id="tutorial-skip", tooltip="Move on without passing the checks")
            yield Button("Restart", id="tutorial-restart", variant="error", tooltip="Start the tutorial over")

    def on_mount(self) -> None:
        self._shown_step: str | None = None
        for name in ("tutorial_busy", "tutorial_version"):
            self.watch(self.app, name, self.show, init=False)
        self.show()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {
            "tutorial-do": "tutorial_do", "tutorial-check": "tutorial_check", "tutorial-back": "tutorial_back",
            "tutorial-next": "tutorial_next", "tutorial-skip": "tutorial_skip", "tutorial-restart": "tutorial_restart",
        }
        if event.button.id in actions:
            event.stop()
            self.app.run_action(actions[event.button.id])

    def show(self) -> None:
        app: IpsecLabApp = self.app  # type: ignore[assignment]  # Textual types self.app as App; ours is always IpsecLabApp
        session = app.tutorial
        if session is None:
            return
        step, state = session.step, session.step_state()
        n = len(session.steps)
        passed = session.passed()
        title = Text()
        title.append(f"Tutorial {session.index + 1}/{n} · ", style="dim")
        title.append(step.title)
        if passed:
            title.append("  ✓ passed", style="bold green")
        self.query_one("#lesson-title", Static).update(title)
        if self._shown_step != step.id:
            self.query_one("#lesson-text", Markdown).update(step.text)
            self.query_one("#lesson-scroll", VerticalScroll).scroll_home(animate=False)
            self._shown_step = step.id
        cmds = Text("Runs: ", style="bold")
        for c in step.commands:
            cmds.append(f"\n  $ {c}", style="")
        self.query_one("#lesson-commands", Static).update(cmds)
        note = step.netns_note if step.netns_note and app.backend.pods_are_namespaces else ""
        self.query_one("#lesson-note", Static).update(f"On this backend: {note}" if note else "")
        out = Text()
        if app.tutorial_busy:
            out.append(f"⏳ {app.tutorial_busy}…\n", style="bold yellow")
        if state.error:
            out.append(f"✗ {state.error}\n", style="bold red")
        lines = state.output[-OUTPUT_LINES:]
        if lines:
            out.append("Output:\n", style="bold")
            out.append("\n".join(lines), style="")
        self.query_one("#lesson-output", Static).update(out)
        checks = Text()
        if state.results:
            checks.append("Checks:\n", style="bold")
            for r in state.results:
                mark, style = ("✓", "green") if r.passed else ("✗", "red")
                checks.append(f" {mark} {r.name}", style=f"bold {style}")
                checks.append(f": {r.detail}\n")
        elif step.checks:
            checks.append("Checks: " + ", ".join(step.checks) + " (not run yet)", style="dim")
        self.query_one("#lesson-checks", Static).update(checks)
        busy = bool(app.tutorial_busy)
        self.query_one("#tutorial-do", Button).disabled = busy
        self.query_one("#tutorial-check", Button).disabled = busy
        self.query_one("#tutorial-next", Button).disabled = busy or not session.can_next
        self.query_one("#tutorial-back", Button).disabled = busy or session.index == 0
        self.query_one("#tutorial-skip", Button).disabled = busy or session.index == n - 1
