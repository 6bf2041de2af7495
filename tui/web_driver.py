"""The driver of an `ipsec-lab web` session: Textual's web driver, with the few glyphs no font the
page serves can draw replaced by ones it can (tui/web.py serves Roboto Mono and DejaVu Sans Mono).

tui/web.py names this class in TEXTUAL_DRIVER; a terminal session never loads it.
tests/test_web.py checks that every glyph the screens draw is in one of the two fonts after this.
"""

from __future__ import annotations

from textual.drivers.web_driver import WebDriver

# glyph -> a stand-in both fonts' coverage allows, of one cell, close in meaning
REPLACEMENTS = {
    "⛓": "∞",  # the header's chain: two links
    "⏳": "◔",  # busy, running
}
_TABLE = str.maketrans(REPLACEMENTS)


class GlyphSafeWebDriver(WebDriver):
    def write(self, data: str) -> None:
        super().write(data.translate(_TABLE))
