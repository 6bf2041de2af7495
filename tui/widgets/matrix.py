"""The N x N matrix of the IPsec mesh: row = the node holding the tunnel end, column = its peer."""

from __future__ import annotations

import time

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from ..lab.status import LabStatus, TunnelStatus

UP = Style(color="black", bgcolor="green")
DUP = Style(color="black", bgcolor="dark_green")
PENDING = Style(color="black", bgcolor="yellow")
DOWN = Style(color="white", bgcolor="red", bold=True)
NONE = Style(color="grey50")
HEAD = Style(bold=True)
CURSOR = Style(reverse=True, bold=True, underline=True)
BOUNCED_S = 10.0  # a cell that left ESTABLISHED in the last 10 s is marked


def state_style(t: TunnelStatus | None) -> Style:
    if t is None:
        return NONE
    if t.up:
        return DUP if t.ike_sas > 1 else UP
    if t.ike_state == "DOWN" and t.child_state == "DOWN":
        return DOWN
    return PENDING


def short_state(t: TunnelStatus | None) -> str:
    if t is None:
        return "?"
    if t.up:
        return "UP"
    if t.ike_state == "ESTABLISHED":
        return t.child_state[:5]
    return t.ike_state[:5]


def legend() -> Text:
    text = Text(no_wrap=True)
    text.append("■ up  ", Style(color="green"))
    text.append("■ connecting/rekeying  ", Style(color="yellow"))
    text.append("■ down\n", Style(color="red"))
    text.append("² duplicate IKE SA  ↻ SA went down or was replaced (<10 s)", NONE)
    return text


def short_node(name: str) -> str:
    return "n" + name.removeprefix("kube-node") if name.startswith("kube-node") else name[:4]


class TunnelMatrix(Widget, can_focus=True):
    """Arrow keys move the cursor; the selected tunnel end is posted as TunnelMatrix.Selected."""

    BINDINGS = [
        Binding("up", "move(-1, 0)", "Up", show=False, id="matrix.up", tooltip="Select the row above"),
        Binding("down", "move(1, 0)", "Down", show=False, id="matrix.down", tooltip="Select the row below"),
        Binding("left", "move(0, -1)", "Left", show=False, id="matrix.left", tooltip="Select the column to the left"),
        Binding("right", "move(0, 1)", "Right", show=False, id="matrix.right", tooltip="Select the column to the right"),
    ]

    DEFAULT_CSS = """
    TunnelMatrix { height: auto; width: auto; padding: 0 1; }
    """

    class Selected(Message):
        def __init__(self, node: str, conn: str, peer: str) -> None:
            super().__init__()
            self.node, self.conn, self.peer = node, conn, peer

    cursor: reactive[tuple[int, int]] = reactive((0, 1), always_update=False)

    def __init__(self, *, id: str | None = None, clock=time.time) -> None:
        super().__init__(id=id)
        self.nodes: list[str] = []
        self.cells: dict[tuple[str, str], TunnelStatus] = {}
        self.bounced: dict[tuple[str, str], float] = {}  # (node, peer) -> when it last left ESTABLISHED
        self.clock = clock
        self._text: Text | None = None
        self._strips: list[Strip] | None = None

    # -- data ---------------------------------------------------------------------------------
    def set_status(self, status: LabStatus) -> None:
        nodes = [n.name for n in status.nodes]
        cells = {(t.node, t.peer): t for t in status.tunnels}
        now = self.clock()
        for key, t in cells.items():
            old = self.cells.get(key)
            if old is not None and old.up and (not t.up or old.detail.get("ike_spi_local") != t.detail.get("ike_spi_local")):
                self.bounced[key] = now  # left ESTABLISHED, or its IKE SA was replaced between two samples
        nodes_changed = nodes != self.nodes
        if nodes_changed:
            self.nodes = nodes
            r, c = self.cursor
            if r >= len(nodes) or c >= len(nodes) or r == c:
                self.cursor = (0, 1 if len(nodes) > 1 else 0)
        self.cells = cells
        self._text = None
        self._strips = None
        self.refresh(layout=nodes_changed)
        self._post_selected()

    @property
    def selected(self) -> TunnelStatus | None:
        if not self.nodes:
            return None
        r, c = self.cursor
        return self.cells.get((self.nodes[r], self.nodes[c]))

    def select(self, node: str, peer: str) -> None:
        if node in self.nodes and peer in self.nodes and node != peer:
            self.cursor = (self.nodes.index(node), self.nodes.index(peer))

    def watch_cursor(self, old, new) -> None:
        self._text = None
        self._strips = None
        self.refresh()
        self._post_selected()

    def _post_selected(self) -> None:
        t = self.selected
        if t is not None:
            self.post_message(self.Selected(t.node, t.name, t.peer))

    def action_move(self, dr: int, dc: int) -> None:
        n = len(self.nodes)
        if n < 2:
            return
        r, c = self.cursor
        r, c = (r + dr) % n, (c + dc) % n
        if r == c:  # skip the diagonal
            r, c = (r + dr) % n, (c + dc) % n
        self.cursor = (r, c)

    # -- rendering ----------------------------------------------------------------------------
    @property
    def wide(self) -> bool:
        return len(self.nodes) <= 4

    def cell_width(self) -> int:
        return 13 if self.wide else 5

    def label_width(self) -> int:
        return max((len(n) for n in self.nodes), default=4) + 1 if self.wide else 5

    def get_content_width(self, container, viewport) -> int:
        return self.label_width() + self.cell_width() * len(self.nodes) + 1

    def get_content_height(self, container, viewport, width) -> int:
        return len(self.nodes) + 1

    def render(self) -> Text:
        """The whole matrix as rich Text (for tests and plain-text export)."""
        if self._text is None:
            self._text = self.build_text()
        return self._text

    def render_line(self, y: int) -> Strip:
        """Line API: one strip per row, built once per status (Text -> Content conversion of 400
        styled cells per frame cost more than the rest of the screen)."""
        if self._strips is None:
            base = self.rich_style
            strips = []
            for line in self.render().split("\n", allow_blank=True):
                segs = [Segment(seg.text, base + seg.style if seg.style else base)
                        for seg in line.render(self.app.console) if seg.text != "\n"]
                strips.append(Strip(segs))
            self._strips = strips
        width = self.size.width
        if y < len(self._strips):
            return self._strips[y].crop_extend(0, width, self.rich_style)
        return Strip.blank(width, self.rich_style)

    def build_text(self) -> Text:
        nodes, w, lw = self.nodes, self.cell_width(), self.label_width()
        if not nodes:
            return Text("no tunnels yet", style=NONE)
        now = self.clock()
        name = (lambda n: n) if self.wide else short_node
        text = Text(no_wrap=True, overflow="crop")
        text.append("from \\ to".ljust(lw)[:lw], HEAD)
        for peer in nodes:
            text.append(name(peer).center(w)[:w], HEAD)
        text.append("\n")
        cr, cc = self.cursor
        focused = self.has_focus
        for r, node in enumerate(nodes):
            text.append(name(node).ljust(lw)[:lw], HEAD)
            for c, peer in enumerate(nodes):
                if r == c:
                    text.append(" · ".center(w), NONE)
                    continue
                t = self.cells.get((node, peer))
                style = state_style(t)
                if self.wide:
                    label = t.name if t else "?"
                    if t is not None and not t.up:
                        label = short_state(t)
                else:
                    label = short_state(t)
                mark = ""
                if t is not None and t.ike_sas > 1:
                    mark = "²"
                bounced = self.bounced.get((node, peer))
                if bounced is not None and now - bounced < BOUNCED_S:
                    mark += "↻"
                cell = (label + mark).center(w - 1)[: w - 1]
                if r == cr and c == cc:
                    style = style + (CURSOR if focused else Style(underline=True, bold=True))
                text.append(cell, style)
                text.append(" ")
            text.append("\n")
        return text

    def on_focus(self) -> None:
        self._text = None
        self._strips = None
        self.refresh()

    def on_blur(self) -> None:
        self._text = None
        self._strips = None
        self.refresh()

    def on_click(self, event) -> None:
        if not self.nodes:
            return
        row = event.y - 1
        col = (event.x - self.label_width()) // self.cell_width()
        if 0 <= row < len(self.nodes) and 0 <= col < len(self.nodes) and row != col:
            self.cursor = (row, col)
