"""Picks a backend by name; Vagrant is imported only when asked for."""

from __future__ import annotations

from ..lab.errors import LabError, UsageError
from ..lab.events import Reporter
from ..lab.state import LabPaths, load_state
from .base import Backend

BACKENDS = ("netns", "vagrant")


def get_backend(name: str, lab: str, reporter: Reporter | None = None, *, node_mode: str | None = None) -> Backend:
    """node_mode: `--kubernetes` (the Vagrant backend's none or kubeadm; netns runs no Kubernetes)."""
    if name == "netns":
        if node_mode not in (None, "none"):
            raise UsageError("the netns backend runs no Kubernetes (--kubernetes none); kubeadm needs "
                             "--backend vagrant and the internet")
        from .netns import NetnsBackend

        return NetnsBackend(lab, reporter)
    if name == "vagrant":
        from .vagrant import VagrantBackend

        return VagrantBackend(lab, reporter, node_mode=node_mode)
    raise UsageError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def lab_backend_name(lab: str, requested: str | None) -> str:
    """The backend a running lab was made with wins over the default."""
    if requested:
        return requested
    try:
        return str(load_state(LabPaths.of(lab)).get("backend", "netns"))
    except LabError:
        return "netns"
