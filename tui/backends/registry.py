"""Picks a backend by name; Vagrant is imported only when asked for."""

from __future__ import annotations

from ..lab.errors import UsageError
from ..lab.events import Reporter
from .base import Backend

BACKENDS = ("netns", "vagrant")


def get_backend(name: str, lab: str, reporter: Reporter | None = None) -> Backend:
    if name == "netns":
        from .netns import NetnsBackend

        return NetnsBackend(lab, reporter)
    if name == "vagrant":
        from .vagrant import VagrantBackend

        return VagrantBackend(lab, reporter)
    raise UsageError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
