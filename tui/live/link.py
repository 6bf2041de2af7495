"""Impair, cut and restore a node's underlay link, on any backend (the node commands of
tui/lab/linkshape.py through Backend.exec); read each node's link as the node reports it, so what
`status` and the Nodes screen show survives restarts of the app."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Sequence

from ..lab import linkshape
from ..lab.errors import LabError, UsageError
from ..lab.linkshape import Impairment, LinkState

if TYPE_CHECKING:
    from ..backends.base import Backend


def _address(backend: "Backend", node: str) -> str:
    return str(backend.spec().node(node).underlay_ip)  # an unknown node: one line (UsageError)


def probe(backend: "Backend", node: str, timeout: float = 10.0) -> LinkState:
    res = backend.exec(node, linkshape.probe_argv(_address(backend, node)), timeout=timeout)
    if not res.ok and "@@dev" not in res.stdout:
        raise LabError(f"could not read {node}'s underlay link: {(res.stderr or res.stdout).strip()[-200:]}")
    return linkshape.parse_probe(res.stdout)


def probe_all(backend: "Backend", nodes: Sequence[str], timeout: float = 5.0) -> dict[str, LinkState | None]:
    """Every node's link at once; None where the node could not be asked (down, rebooting)."""
    from ..backends.base import parallel_or_error

    found = parallel_or_error(lambda n: probe(backend, n, timeout), list(nodes))
    return {n: (s if isinstance(s, LinkState) else None) for n, s in zip(nodes, found)}


def netem_available(backend: "Backend", node: str) -> bool:
    res = backend.exec(node, linkshape.netem_probe_argv())
    return res.stdout.strip() == "yes"


def apply(backend: "Backend", node: str, imp: Impairment) -> LinkState:
    """Replace the impairment on `node`'s underlay with `imp` (an empty one clears it); returns the link
    as the node reports it afterwards. UsageError (nothing changed) when it needs netem and the
    node's kernel has none."""
    if imp.empty:
        return clear(backend, node)
    res = backend.exec(node, linkshape.apply_argv(imp, _address(backend, node)))
    if res.returncode == linkshape.NO_NETEM_EXIT:
        what = "--delay" if imp.delay_ms else "--jitter"
        raise UsageError(f"{what} {linkshape.NETEM_MISSING}; nothing was changed on {node}")
    if not res.ok:
        raise LabError(f"impairing {node}'s underlay failed: {(res.stderr or res.stdout).strip()[-300:]}")
    return probe(backend, node)


def clear(backend: "Backend", node: str) -> LinkState:
    """Remove every impairment from `node`'s underlay, and restore it if it is cut."""
    before = probe(backend, node)
    if before.cut:
        backend.set_underlay_link(node, True)
    res = backend.exec(node, linkshape.clear_argv(_address(backend, node)))
    if not res.ok:
        raise LabError(f"clearing {node}'s underlay failed: {(res.stderr or res.stdout).strip()[-300:]}")
    return probe(backend, node)


def cut(backend: "Backend", node: str, for_s: float | None = None) -> str:
    """Cut `node`'s underlay (as recover-underlay-outage does); with `for_s`, restore it after that
    many seconds. Returns what was done, in words."""
    if not backend.can_cut_link:
        raise UsageError(f"the {backend.name} backend cannot cut a node's link yet")
    _address(backend, node)
    backend.set_underlay_link(node, False)
    if for_s is None:
        return f"underlay of {node} cut (`ipsec-lab link {node} --clear` restores it)"
    try:
        time.sleep(for_s)
    finally:
        backend.set_underlay_link(node, True)
    return f"underlay of {node} cut for {for_s:g} s, then restored"
