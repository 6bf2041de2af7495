"""Checks: the check suite, run all or one; results appear as they finish; details on select."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from .base import LabScreen, sync_rows

COLUMNS = ("CHECK", "KIND", "RESULT", "TIME", "DETAIL")


def load_catalog() -> tuple[list[Any] | None, str]:
    """The check catalog, or None and why not (the suite may not be installed in this build)."""
    try:
        from ..checks.catalog import CATALOG  # noqa: PLC0415
        from ..checks import runner  # noqa: F401, PLC0415
    except Exception as exc:  # ImportError, or a half-written catalog
        return None, f"check suite not available ({type(exc).__name__}: {exc})"
    return list(CATALOG), ""


class ChecksScreen(LabScreen):
    HELP = """# Checks
The check suite: each check says what it runs on which node and how it judges the result. **a** runs
all, **enter** runs the selected one; results appear as each check finishes. Disruptive checks inject a
fault (the lab recovers by itself). The same suite runs headless with `ipsec-lab --run-checks`."""

    BINDINGS = [
        Binding("a", "app.run_checks", "Run all", id="checks.run_all", tooltip="Run the whole check suite"),
        Binding("enter", "run_selected", "Run selected", id="checks.run_one", tooltip="Run the selected check"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static("Checks", classes="screen-title")
        yield Static("", id="checks-summary")
        table = DataTable(id="checks-table", cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS)
        yield table
        with VerticalScroll(id="check-detail-box"):
            yield Static("", id="check-detail", classes="detail")

    def on_mount(self) -> None:
        catalog, why = self.lab_app.load_catalog()
        self.catalog = catalog or []
        self.unavailable = why
        self.query_one(DataTable).focus()
        self.show_results()
        for name in ("check_results", "checks_running"):
            self.watch(self.lab_app, name, self.show_results, init=False)

    def on_screen_resume(self) -> None:
        self.show_results()

    def show_results(self) -> None:
        app = self.lab_app
        if self.unavailable:
            self.query_one("#checks-summary", Static).update(Text(self.unavailable, style="yellow"))
            return
        results = app.check_results
        rows = {}
        for c in self.catalog:
            r = results.get(c.name)
            kind = Text("disruptive", style="yellow") if c.disruptive else Text("read-only", style="dim")
            if r is None:
                running = app.checks_running and c.name in app.checks_pending
                res = Text("running…" if running else "—", style="yellow" if running else "dim")
                rows[c.name] = (c.name, kind, res, "", Text(c.purpose, style="dim"))
            else:
                style = {"passed": "bold green", "failed": "bold red", "error": "bold magenta"}.get(r.outcome.value, "yellow")
                rows[c.name] = (c.name, kind, Text(r.outcome.value.upper(), style=style), f"{r.seconds:.2f} s",
                                r.detail.splitlines()[0] if r.detail else "")
        sync_rows(self.query_one(DataTable), rows, len(COLUMNS))
        counts = Counter(r.outcome.value for r in results.values())
        s = Text(f"{len(self.catalog)} checks · ")
        s.append(f"{counts.pop('passed', 0)} passed", style="green")
        failed = counts.pop("failed", 0)
        s.append(" · ")
        s.append(f"{failed} failed", style="red" if failed else "")
        errors = counts.pop("error", 0)  # could not observe: not a verdict
        s.append(" · ")
        s.append(f"{errors} errors", style="magenta" if errors else "")
        skipped = counts.pop("skipped", 0)
        for outcome, n in sorted(counts.items()):  # any other outcome by its own name
            s.append(f" · {n} {outcome}", style="bold yellow")
        s.append(f" · {skipped} skipped")
        if app.checks_running:
            s.append("  ⏳ running", style="bold yellow")
        if not app.read_only:
            s.append("   a run all · enter run selected", style="dim")
        self.query_one("#checks-summary", Static).update(s)
        self._show_detail()

    @property
    def selected_check(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_run_selected()

    def _show_detail(self) -> None:
        name = self.selected_check
        check = next((c for c in self.catalog if c.name == name), None)
        t = Text()
        if check is not None:
            t.append(check.name + "\n", style="bold")
            t.append("purpose  ", style="dim")
            t.append(check.purpose + "\n")
            t.append("runs     ", style="dim")
            t.append(check.runs + "\n")
            r = self.lab_app.check_results.get(check.name)
            if r is not None:
                t.append("result   ", style="dim")
                t.append(f"{r.outcome.value} in {r.seconds:.2f} s\n",
                         style={"passed": "green", "failed": "red", "error": "magenta"}.get(r.outcome.value, "yellow"))
                t.append(r.detail + "\n")
                for m in r.measurements:
                    t.append(f"  {m.name}: {m.value:g} {m.unit}\n", style="cyan")
        self.query_one("#check-detail", Static).update(t)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action == "run_selected" and self.lab_app.read_only)

    def action_run_selected(self) -> None:
        name = self.selected_check
        if name:
            self.lab_app.action_run_checks(name)
