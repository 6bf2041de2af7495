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
    """A mode. Subclasses implement compose_body() and show_status(); the app calls show_status
    with every new status while the screen is active, and once when it becomes active."""

    HELP = ""  # Markdown shown by `?` above the key list

    @property
    def lab_app(self) -> "IpsecLabApp":
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header(icon="⛓")
        yield LabBar(id="labbar")
        if getattr(self.lab_app, "tutorial", None) is not None:
            from .lesson import LessonPanel

            yield LessonPanel(classes="lesson")
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        return iter(())

    def on_screen_resume(self) -> None:
        self.refresh_bar()
        for panel in self.query("LessonPanel"):
            panel.show()  # type: ignore[attr-defined]
        if self.lab_app.status is not None:
            self.show_status(self.lab_app.status)

    def refresh_bar(self) -> None:
        for bar in self.query(LabBar):
            bar.show(self.lab_app)

    def show_status(self, status: "LabStatus") -> None:
        """Render from a status (called on the UI thread)."""


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
