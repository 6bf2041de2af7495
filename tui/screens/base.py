"""What every mode screen shares: header, lab bar, footer, and rendering from the latest status."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header

from ..widgets.labbar import LabBar

if TYPE_CHECKING:
    from ..app import IpsecLabApp
    from ..lab.status import LabStatus


class LabScreen(Screen):
    """A mode. Subclasses implement compose_body() and show_status().

    Each screen watches the app's reactives it shows (status, busy, phase_text here; more in
    subclasses) and paints itself while it is on the app's screen stack; a screen that comes back
    (mode switch, a dialog closed) paints itself from the latest state. Nothing pushes into it."""

    HELP = ""  # Markdown shown by `?` above the key list

    @property
    def lab_app(self) -> "IpsecLabApp":
        return self.app  # type: ignore[return-value]  # Textual types self.app as App; ours is always IpsecLabApp

    def compose(self) -> ComposeResult:
        yield Header(icon="⛓")
        yield LabBar(id="labbar")
        if self.lab_app.tutorial is not None:
            from .lesson import LessonPanel

            yield LessonPanel(classes="lesson")
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        return iter(())

    def on_mount(self) -> None:
        app = self.lab_app
        self.watch(app, "status", self._status_changed, init=False)
        for name in ("busy", "phase_text"):
            self.watch(app, name, self.refresh_bar, init=False)
        self.set_interval(1.0, self._tick)

    @property
    def showing(self) -> bool:
        """On the app's screen stack (perhaps under a dialog), not a suspended mode."""
        return self in self.app.screen_stack

    def _status_changed(self, status: "LabStatus | None") -> None:
        if status is not None and self.showing:
            self.show_status(status)
            self.refresh_bar()

    def _tick(self) -> None:
        if self.showing:
            self.refresh_bar()
            self.tick()

    def tick(self) -> None:
        """Once a second while showing (the status age, the timeline)."""

    def on_screen_resume(self) -> None:
        self.refresh_bar()
        if self.lab_app.status is not None:
            self.show_status(self.lab_app.status)

    def refresh_bar(self) -> None:
        self.query_one(LabBar).show(self.lab_app)

    def show_status(self, status: "LabStatus") -> None:
        """Render from a status (called on the UI thread)."""

    # What the app's actions act on when no argument names it: this screen's selection.
    @property
    def selected_node(self) -> str | None:
        return None

    @property
    def selected_tunnel(self) -> tuple[str, str] | None:
        return None

    @property
    def selected_pod(self) -> str | None:
        return None


def sync_rows(table: DataTable, rows: dict[str, tuple], columns: int) -> None:
    """Make `table` hold exactly `rows` (key -> cells) in order, touching only what changed,
    so the cursor stays where the user put it."""
    existing = list(table.rows.keys())
    existing_keys = [k.value for k in existing]
    wanted = list(rows.keys())
    if existing_keys != wanted:
        cursor_key = existing_keys[table.cursor_row] if existing_keys and 0 <= table.cursor_row < len(existing_keys) else None
        table.clear()
        for key, cells in rows.items():
            table.add_row(*cells, key=key)
        if cursor_key in rows:
            table.move_cursor(row=wanted.index(cursor_key), animate=False)
        elif wanted:
            table.move_cursor(row=min(table.cursor_row, len(wanted) - 1), animate=False)
        return
    col_keys = list(table.columns.keys())
    for key, cells in rows.items():
        current = table.get_row(key)
        for i in range(min(columns, len(cells))):
            if current[i] != cells[i]:
                table.update_cell(key, col_keys[i], cells[i])
