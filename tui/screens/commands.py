"""The command palette's provider: every action of the app, with the node/tunnel/pod it acts on."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from ..app import IpsecLabApp


class LabCommands(Provider):
    """Lists app.palette_commands(): (title, help, callback)."""

    def _commands(self):
        app: "IpsecLabApp" = self.app  # type: ignore[assignment]  # Textual types self.app as App; ours is always IpsecLabApp
        return app.palette_commands()

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)


__all__ = ["LabCommands", "partial"]
