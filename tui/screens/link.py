"""The Nodes screen's link impairment: the dialog (the same words as `ipsec-lab link`), the action
that applies it on an action worker, and the poller that reads every node's link from the node
(tui/live/link.py), so the LINK column shows what is really set, also after the app restarted.

A mixin of IpsecLabApp, as LabActions is; the app holds the `links` reactive the screen watches.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from textual import work
from textual.worker import get_current_worker

from ..lab.errors import UsageError
from ..lab.linkshape import Impairment, LinkState
from ..live import link
from ..messages import LinksUpdated
from .dialogs import PromptScreen

if TYPE_CHECKING:
    from ..app import IpsecLabApp

    _Base = IpsecLabApp
else:
    _Base = object

LINK_ACTIONS = frozenset({"impair_link"})  # change the lab: hidden in a read-only view
LINK_POLL_S = 3.0  # how often the nodes' links are read while the Nodes screen shows (one tc + iptables per node)
_KEYS = {"delay": "delay_ms", "jitter": "jitter_ms", "loss": "loss_pct", "rate": "rate_mbit"}


def parse_link_request(text: str) -> Impairment | str:
    """The dialog's words, as `ipsec-lab link` takes them (with or without the dashes): "loss 20
    rate 10", "delay 50 jitter 5", "cut", "clear" (or nothing). An Impairment, or "cut"/"clear";
    UsageError for anything else (one line)."""
    words = [w.removeprefix("--") for w in text.replace("=", " ").split()]
    if not words or words == ["clear"]:
        return "clear"
    if words == ["cut"]:
        return "cut"
    values: dict[str, float] = {}
    i = 0
    while i < len(words):
        key = words[i]
        if key not in _KEYS:
            raise UsageError(f"{key!r}: say delay MS, jitter MS, loss PCT, rate MBIT, cut or clear")
        try:
            values[_KEYS[key]] = float(words[i + 1].rstrip("%"))
        except (IndexError, ValueError):
            raise UsageError(f"{key} needs a number") from None
        i += 2
    return Impairment(**values)


def link_text(state: LinkState | None) -> str:
    """The LINK column: "" when clean, "?" when the node could not be asked."""
    return "?" if state is None else state.describe()


class LinkActions(_Base):
    """action_impair_link and the links poller; `self` is the IpsecLabApp."""

    def action_impair_link(self, node: str | None = None, request: str | None = None) -> None:
        node = self._node(node)
        if not node or not self._need_lab() or self.refuse_if_read_only("impair a link"):
            return

        def done(value: str | None) -> None:
            if value is None:
                return
            try:
                what = parse_link_request(value)
            except UsageError as exc:
                self.notify(str(exc), severity="error")
                return
            if what == "cut":
                title, fn = f"cut {node}'s underlay", lambda: self._apply_link(node, None, cut=True)
            elif what == "clear":
                title, fn = f"clear {node}'s underlay", lambda: self._apply_link(node, None)
            else:
                assert isinstance(what, Impairment)
                title, fn = f"impair {node}'s underlay: {value.strip()}", lambda: self._apply_link(node, what)
            self.start_action(title, fn)

        if request is not None:
            done(request)
            return
        now = self.links.get(node, "")
        self.push_screen(PromptScreen(
            f"Impair {node}'s underlay link (ipsec-lab link {node} ...)",
            f"Now: {now or 'no impairment'}. Say what to set, as the command takes it: delay MS, jitter MS "
            "(netem), loss PCT (netem, else an iptables random drop), rate MBIT (tbf); or cut (until cleared); "
            "or clear. It acts on what leaves the node; the reachability timeline shows the effect.",
            "", placeholder="loss 20 rate 10 · delay 50 jitter 5 · cut · clear"), done)

    def _apply_link(self, node: str, imp: Impairment | None, *, cut: bool = False) -> str:
        """On the action worker: apply, then post the link as the node reports it."""
        if cut:
            outcome = link.cut(self.backend, node)
            state = link.probe(self.backend, node)
        else:
            state = link.apply(self.backend, node, imp) if imp is not None else link.clear(self.backend, node)
            outcome = f"{node} {state.dev}: {state.describe() or 'no impairment'}"
        self.post_message(LinksUpdated({node: link_text(state)}))
        return outcome

    @work(thread=True, exclusive=True, group="links", exit_on_error=False, name="links poller")
    def poll_links(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled and not self._stop.is_set():
            t0 = time.monotonic()
            st = self.status
            if st is not None and self.current_mode == "nodes":  # only the Nodes screen shows it
                found = link.probe_all(self.backend, [n.name for n in st.nodes if n.state == "ready"])
                self.post_message(LinksUpdated({n: link_text(s) for n, s in found.items()}))
            self._stop.wait(max(0.5, LINK_POLL_S - (time.monotonic() - t0)))

    def on_links_updated(self, message: LinksUpdated) -> None:
        self.links = {**self.links, **message.links}
