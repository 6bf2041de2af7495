"""Logs: every source live (provisioning, each node's charon, checks, actions), filtered, bounded."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar, RichLog, Select, Static, Switch

from ..live.logs import LOG_CAP, LogRecord
from .base import LabScreen

SOURCES = ("provisioning", "charon", "actions", "checks", "tutorial", "app")
ALL = "all"
SOURCE_STYLE = {"provisioning": "cyan", "charon": "magenta", "actions": "yellow", "checks": "blue", "tutorial": "bright_cyan", "app": "green"}


def format_record(r: LogRecord, timestamps: bool) -> Text:
    t = Text(no_wrap=False)
    if timestamps:
        t.append(time.strftime("%H:%M:%S", time.localtime(r.at)) + f".{int(r.at * 1000) % 1000:03d} ", style="dim")
    t.append(f"{r.source:<12}", style=SOURCE_STYLE.get(r.source, ""))
    if r.node:
        t.append(f"[{r.node}] ", style="bold")
    t.append(r.text, style="red" if r.stream == "stderr" else "")
    return t


class LogsScreen(LabScreen):
    HELP = """# Logs
Every source in one place, newest last: **provisioning** (bring-up), **charon** (each node's strongSwan
log, tailed), **actions** (what you did and what it ran), **checks**, **app**. Filter by source and by
node; **f** toggles follow (stay at the newest line), **t** timestamps. At most %d lines are kept.""" % LOG_CAP

    BINDINGS = [
        Binding("f", "toggle_follow", "Follow", id="logs.follow", tooltip="Follow the newest line on/off"),
        Binding("t", "toggle_timestamps", "Timestamps", id="logs.timestamps", tooltip="Show timestamps on/off"),
        Binding("s", "cycle_source", "Source", id="logs.source", tooltip="Cycle the source filter"),
        Binding("n", "cycle_node", "Node", id="logs.node", tooltip="Cycle the node filter"),
        Binding("a", "clear_filters", "All", id="logs.all", tooltip="Show every source and node"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.source_filter = ALL
        self.node_filter = ALL
        self.follow = True
        self.timestamps = True
        self._seq = 0
        self._shown = 0

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="logs-progress-box"):
            yield Label("", id="progress-label")
            yield ProgressBar(total=100, show_eta=False, id="progress")
        with Horizontal(id="logs-filters"):
            yield Label("source")
            yield Select([(s, s) for s in (ALL, *SOURCES)], value=ALL, allow_blank=False, id="source-filter")
            yield Label("node")
            yield Select([(ALL, ALL)], value=ALL, allow_blank=False, id="node-filter")
            yield Label("follow")
            yield Switch(value=True, id="follow")
            yield Label("timestamps")
            yield Switch(value=True, id="timestamps")
        yield RichLog(max_lines=LOG_CAP, wrap=False, id="log", auto_scroll=True)
        yield Static("", id="logs-count", classes="dim")

    def on_mount(self) -> None:
        self.set_interval(0.2, self.drain)
        self.update_progress()
        self.watch(self.lab_app, "progress", self.update_progress, init=False)
        self.query_one(RichLog).focus()

    def on_screen_resume(self) -> None:
        self.update_progress()
        self.drain()

    # -- feeding ------------------------------------------------------------------------------
    def matches(self, r: LogRecord) -> bool:
        return (self.source_filter == ALL or r.source == self.source_filter) and (
            self.node_filter == ALL or r.node == self.node_filter)

    def drain(self) -> None:
        if not self.is_current:
            return
        store = self.lab_app.logs
        new = store.after(self._seq)
        if new:
            self._seq = new[-1].seq
            log = self.query_one(RichLog)
            for r in new:
                if self.matches(r):
                    log.write(format_record(r, self.timestamps), scroll_end=self.follow)
                    self._shown += 1
            self._refresh_nodes()
        self.query_one("#logs-count", Static).update(
            f"{self._shown} lines shown · {len(store)} kept (cap {store.cap})"
            f" · source {self.source_filter} · node {self.node_filter} · follow {'on' if self.follow else 'off'}")

    def rebuild(self) -> None:
        log = self.query_one(RichLog)
        log.clear()
        self._shown = 0
        records = self.lab_app.logs.all()
        for r in records:
            if self.matches(r):
                log.write(format_record(r, self.timestamps), scroll_end=False)
                self._shown += 1
        self._seq = records[-1].seq if records else 0
        if self.follow:
            log.scroll_end(animate=False)
        self.drain()

    def _refresh_nodes(self) -> None:
        sel = self.query_one("#node-filter", Select)
        nodes = sorted(self.lab_app.logs.nodes, key=lambda n: (len(n), n))
        options = [(ALL, ALL)] + [(n, n) for n in nodes]
        if len(options) != getattr(self, "_node_options", 0):
            self._node_options = len(options)
            with self.prevent(Select.Changed):
                sel.set_options(options)
                sel.value = self.node_filter if self.node_filter in (ALL, *nodes) else ALL

    def update_progress(self) -> None:
        app = self.lab_app
        box = self.query_one("#logs-progress-box")
        prog = app.progress
        box.display = prog is not None
        if prog is not None:
            self.query_one(ProgressBar).update(total=prog.total, progress=prog.done)
            self.query_one("#progress-label", Label).update(prog.label)

    # -- controls -----------------------------------------------------------------------------
    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "source-filter":
            self.source_filter = str(event.value)
        elif event.select.id == "node-filter":
            self.node_filter = str(event.value)
        self.rebuild()

    def on_switch_changed(self, event: Switch.Changed) -> None:
        if event.switch.id == "follow":
            self.follow = event.value
            self.query_one(RichLog).auto_scroll = event.value
            if event.value:
                self.query_one(RichLog).scroll_end(animate=False)
        elif event.switch.id == "timestamps" and event.value != self.timestamps:
            self.timestamps = event.value
            self.rebuild()

    def action_toggle_follow(self) -> None:
        sw = self.query_one("#follow", Switch)
        sw.value = not sw.value

    def action_toggle_timestamps(self) -> None:
        sw = self.query_one("#timestamps", Switch)
        sw.value = not sw.value

    def set_filters(self, source: str | None = None, node: str | None = None) -> None:
        if source is not None:
            self.query_one("#source-filter", Select).value = source
        if node is not None:
            self._refresh_nodes()
            self.query_one("#node-filter", Select).value = node

    def action_cycle_source(self) -> None:
        order = [ALL, *SOURCES]
        self.set_filters(source=order[(order.index(self.source_filter) + 1) % len(order)])

    def action_cycle_node(self) -> None:
        order = [ALL] + sorted(self.lab_app.logs.nodes, key=lambda n: (len(n), n))
        cur = order.index(self.node_filter) if self.node_filter in order else 0
        self.set_filters(node=order[(cur + 1) % len(order)])

    def action_clear_filters(self) -> None:
        self.set_filters(source=ALL, node=ALL)
