"""The reachability timeline: one line per node pair, one character per second, the last minute."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.widgets import Static

from ..live.reach import Reachability
from ..live.text import fmt_gap
from .matrix import short_node

GREEN, RED, YELLOW, DIM = Style(color="green"), Style(color="red", bold=True), Style(color="yellow"), Style(color="grey50")


def timeline_text(reach: Reachability, pairs: list[tuple[str, str]], now: float, total_pairs: int) -> Text:
    text = Text(no_wrap=True, overflow="crop")
    if not pairs:
        text.append("no observations yet", DIM)
        return text
    text.append(f"reachability per node pair, last {reach.window} s (█ up  ▁ down  ▄ both in that second)\n", DIM)
    for pair in pairs:
        label = f"{short_node(pair[0])}↔{short_node(pair[1])}".ljust(9)
        text.append(label, Style(bold=True))
        cells = reach.cells(pair, now)
        i = 0
        while i < len(cells):  # one span per run of equal cells, not one per second
            ch, j = cells[i], i
            while j < len(cells) and cells[j] == ch:
                j += 1
            text.append(cells[i:j], GREEN if ch == "█" else RED if ch == "▁" else YELLOW if ch == "▄" else DIM)
            i = j
        tl = reach.pairs.get(pair)
        up = tl.is_up if tl else None
        text.append("  ")
        text.append("UP  " if up else "DOWN" if up is False else "?   ", GREEN if up else RED if up is False else DIM)
        outage = tl.last_outage if tl else None
        if outage is not None:
            gap = fmt_gap(outage.seconds) if outage.end is not None else f"ongoing {fmt_gap(now - outage.start)}"
            text.append(f"  last gap {gap} [{outage.source}]", YELLOW)
        if tl is not None and tl.ping_note:
            text.append(f"  data-plane gap {fmt_gap(tl.last_ping_gap) if tl.last_ping_gap is not None else 'no reply'}",
                        YELLOW)
        text.append("\n")
    if total_pairs > len(pairs):
        text.append(f"({len(pairs)} of {total_pairs} pairs: those of the selected node)", DIM)
    return text


class Timeline(Static):
    DEFAULT_CSS = """
    Timeline { height: auto; padding: 0 1; }
    """
