"""One line under the header: the lab at a glance and what the app is doing."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class LabBar(Static):
    DEFAULT_CSS = """
    LabBar { height: 1; background: $boost; color: $text; padding: 0 1; }
    """

    def show(self, app) -> None:
        st = app.status
        t = Text(no_wrap=True, overflow="ellipsis")
        if st is None:
            t.append(f"lab {app.lab_name}: ", style="bold")
            t.append(app.phase_text or "no status yet", style="yellow")
        else:
            up = sum(1 for x in st.tunnels if x.up)
            colour = "green" if st.tunnels and up == len(st.tunnels) else "red"
            t.append(f"{len(st.nodes)} nodes", style="bold")
            t.append(" · tunnel ends ")
            t.append(f"{up}/{len(st.tunnels)} ESTABLISHED", style=colour)
            t.append(f" · {len(st.pods)} pods")
            if st.services:
                t.append(f" · NodePort {st.services[0].node_port}")
            t.append(f" · refreshed {app.status_age_text()}", style="dim")
        if app.busy:
            t.append("  ⏳ ", style="yellow")
            t.append(app.busy, style="bold yellow")
        self.update(t)
