"""Formatting shared by the faces: gaps and kubectl-style ages."""

from __future__ import annotations

from ..lab import commands


def fmt_gap(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


def age(seconds: float | None) -> str:
    """kubectl's compact ages: 45s, 3m, 2h, 4d."""
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


# The commands the faces show for a tunnel, as a person would type them (tui/lab/commands.py
# builds what the backends run).
def take_down_command(conn: str) -> str:
    return commands.shown(commands.swanctl_terminate_ike(conn))


def bring_up_command(conn: str) -> str:
    return commands.shown(commands.swanctl_initiate_child(conn))


def seed_command(conn: str) -> str:
    """What the seed ran for the same thing (strongSwan's stroke tool)."""
    return commands.shown(commands.ipsec_down(conn))
