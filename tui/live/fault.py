"""A fault watch: inject a fault (a tunnel taken down, charon restarted, a node rebooted) while
polling strongSwan every few milliseconds and pinging across the pair, then say what happened: how
long the tunnel was gone, what the data plane saw, and the new IKE SA.

Headless; the TUI's actions and the CLI's `tunnel-down`, `restart-ipsec` and `reboot` run the same
watch, so both report the same measured gap.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from ..lab import probes
from .reach import Reachability, pair_of
from .text import fmt_gap

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..lab.status import LabStatus

WATCH_SECONDS = 90  # a fault watch gives up after this long
PING_SECONDS = 3.0  # the fast ping waits this long for a reply before the fault and after it


@dataclass
class WatchResult:
    seen_down: bool  # a sample showed a watched end not ESTABLISHED/INSTALLED
    recovered: bool  # ... and a later sample showed all of them up again
    gap: float | None  # seconds from the first bad sample to the first good one (seen_down), or
    #                    the bound: the time between the last sample with the old SA and the first with the new
    samples: int
    states: list[tuple[float, str]]  # (at, "ike/child") transitions of the first watched end
    replaced: bool = False  # an end's IKE SA was replaced (new SPI) whether or not a sample caught it down
    old_spi: str = ""
    new_spi: str = ""

    @property
    def left_established(self) -> bool:
        return self.seen_down or self.replaced


def watch_tunnels(backend: "Backend", ends: Sequence[tuple[str, str]], *, until: float,
                  on_status: Callable[["LabStatus"], None] | None = None,
                  started: threading.Event | None = None, stop: threading.Event | None = None,
                  injected: threading.Event | None = None, quiet_after: float = 3.0,
                  interval: float = 0.0005, after_injected: float = 0.0) -> WatchResult:
    """Poll strongSwan as fast as status() allows around a fault on the tunnel `ends`.

    A tunnel taken down with `swanctl --terminate` is often back within 3 ms, less than one
    sample; so besides the states, each end's IKE SPI is compared with the one before the fault:
    a new SPI means the SA was torn down and a new one established in between.

    Ends when, after `injected` is set, all watched ends are up and either a sample showed one
    down or an SA was replaced; or `quiet_after` seconds after `injected` with neither; or at
    `until` (monotonic) or `after_injected` seconds after `injected`, whichever is later (a fault
    that takes long itself, a VM reboot, still gets its watch); or when `stop` is set. `on_status` gets every status whose watched
    states or SPIs changed (and the first one)."""
    seen_down, recovered, replaced, gap = False, False, False, None
    down_at: float | None = None
    injected_at: float | None = None
    last_key = None
    samples = 0
    states: list[tuple[float, str]] = []
    baseline: list[str] | None = None
    prev_sample_at = time.monotonic()
    old_spi = new_spi = ""
    while not (stop and stop.is_set()):
        if injected is not None and injected.is_set():  # (also when it was set during a sample)
            injected_at = injected_at or time.monotonic()
            until = max(until, injected_at + after_injected)
        if time.monotonic() >= until and (injected is None or injected.is_set()):
            break  # (never while the fault is still being injected: a VM reboot can outlast `until`)
        try:
            st = backend.status()
        except Exception:  # a node in the middle of a reboot: try again
            time.sleep(0.01)
            continue
        samples += 1
        if started is not None:
            started.set()
        now = time.monotonic()
        watched = [st.tunnel(n, c) for n, c in ends]
        spis = [t.detail.get("ike_spi_local", "") if t is not None and t.up else "" for t in watched]
        key = tuple((t.ike_state, t.child_state) if t else ("?", "?") for t in watched) + tuple(spis)
        all_up = all(t is not None and t.up for t in watched)
        if baseline is None:
            baseline = spis
        if key != last_key:
            states.append((time.time(), "/".join(key[0])))
            if on_status:
                on_status(st)
            last_key = key
        if not all_up and not seen_down:
            seen_down, down_at = True, now
        if all_up and not replaced and baseline is not None:
            changed = [i for i, (a, b) in enumerate(zip(baseline, spis)) if a and b and a != b]
            if changed:
                replaced = True
                old_spi, new_spi = baseline[changed[0]], spis[changed[0]]
                if not seen_down:
                    gap = now - prev_sample_at  # the SA changed between the previous sample and this one
        if all_up and seen_down:
            recovered = True
            gap = now - (down_at or now)
        if all_up and (seen_down or replaced) and (injected is None or injected.is_set()):
            recovered = True
            break
        if injected is not None and injected.is_set():
            injected_at = injected_at or now
            if not (seen_down or replaced) and now - injected_at > quiet_after:
                break
        prev_sample_at = now
        time.sleep(interval)
    return WatchResult(seen_down, recovered, gap, samples, states, replaced, old_spi, new_spi)




def probe_pairs(backend: "Backend", nodes: Sequence[tuple[str, str]], timeout: float = 0.8) -> dict[tuple[str, str], bool]:
    """From each node, ping every other node's cni0 once, all at once (probes.ping_many: one exec
    per node). `nodes` is [(name, cni0 ip)]. A pair is up when both directions answered."""
    results: dict[tuple[str, str], list[bool]] = {}
    for name, _ in nodes:
        targets = [(peer, ip) for peer, ip in nodes if peer != name]
        try:
            answered = probes.ping_many(backend, name, targets, wait=timeout)
        except Exception:  # a node mid-reboot: none of its pings count as answered
            answered = {}
        for peer, _ in targets:
            results.setdefault(pair_of(name, peer), []).append(answered.get(peer, False))
    return {pair: all(v) for pair, v in results.items()}


@dataclass(frozen=True)
class FaultPlan:
    """What to watch around a fault: the tunnel ends, and a ping from one node to another's cni0."""

    label: str
    ends: tuple[tuple[str, str], ...]
    ping_from: str | None = None
    ping_to: str | None = None
    pair: tuple[str, str] | None = None

    @classmethod
    def tunnel_down(cls, status: "LabStatus", node: str, conn: str) -> "FaultPlan":
        t = status.tunnel(node, conn)
        peer = t.peer if t else None
        peer_end = next(((x.node, x.name) for x in status.tunnels if x.node == peer and x.peer == node), None)
        target = next((n for n in status.nodes if n.name == node), None)
        return cls(f"{node} {conn}", ((node, conn),) + ((peer_end,) if peer_end else ()), peer,
                   target.cni0_ip if target and peer else None, pair_of(node, peer) if peer else None)

    @classmethod
    def node_fault(cls, status: "LabStatus", node: str, label: str) -> "FaultPlan":
        """A fault of a whole node (restart charon, reboot): every tunnel end to or from it."""
        ends = tuple((t.node, t.name) for t in status.tunnels if t.node == node or t.peer == node)
        other = next((n for n in status.nodes if n.name != node and n.state == "ready"), None)
        target = next((n for n in status.nodes if n.name == node), None)
        if other is None or target is None:
            return cls(label, ends)
        return cls(label, ends, other.name, target.cni0_ip, pair_of(other.name, node))


@dataclass
class FaultReport:
    """What a fault watch saw. `summary` is the one line the TUI's events list and the CLI print."""

    plan: FaultPlan
    ran: str
    watch: WatchResult | None = None
    ping: tuple[float | None, int] | None = None
    ping_error: str = ""
    parts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        w, parts = self.watch, [f"{self.plan.label}: {self.ran}"]
        if w is not None and w.seen_down:
            first_bad = next((s for _, s in w.states if s != "ESTABLISHED/INSTALLED"), "DOWN")
            if w.recovered:
                parts.append(f"left ESTABLISHED ({first_bad}) and came back ESTABLISHED/INSTALLED after "
                             f"{fmt_gap(w.gap)} ({w.samples} samples of strongSwan)")
            else:
                parts.append(f"left ESTABLISHED ({first_bad}) and is NOT back yet")
        elif w is not None and w.replaced:
            parts.append(f"left ESTABLISHED (IKE SA {w.old_spi[:8]}… deleted) and came back ESTABLISHED/INSTALLED "
                         f"(new IKE SA {w.new_spi[:8]}…) within {fmt_gap(w.gap)}, between two samples of strongSwan")
        elif w is not None:
            parts.append("no watched SA changed: strongSwan kept the tunnel up")
        if self.ping is not None and self.plan.pair is not None:
            parts.append(f"data plane: {self.ping_note}")
        self.parts = parts

    @property
    def ping_note(self) -> str:
        if self.ping is None:
            return ""
        gap, replies = self.ping
        if gap is None:
            return f"no ping reply within {PING_SECONDS:g} s after the fault was over"
        return f"largest gap between replies {fmt_gap(gap)} ({replies} replies, one ping every 10 ms)"

    @property
    def summary(self) -> str:
        return "; ".join(self.parts)

    @property
    def recovered(self) -> bool:
        return self.watch is not None and self.watch.left_established and self.watch.recovered

    @property
    def new_sa(self) -> str:
        """The IKE SPI (local) of the SA that replaced the old one, or "" if none was seen."""
        return self.watch.new_spi if self.watch is not None else ""

    def record(self, reach: Reachability) -> None:
        """Put the measured gaps on the reachability timeline."""
        w, pair = self.watch, self.plan.pair
        if pair is None:
            return
        if w is not None and w.left_established:
            reach.note_bounce(pair, w.gap, "watch" if w.seen_down else "spi")
        if self.ping is not None:
            reach.note_ping_gap(pair, self.ping[0], self.ping_note)


def run_fault(backend: "Backend", plan: FaultPlan, inject: Callable[[], str], *,
              on_status: Callable[["LabStatus"], None] | None = None,
              stop: threading.Event | None = None) -> FaultReport:
    """Start the ping, start watching, inject the fault (`inject` returns what it ran), wait for
    the watch to see the tunnels back (or give up) and the ping to end; report."""
    results: dict = {}
    started, injected = threading.Event(), threading.Event()

    def watcher() -> None:
        results["watch"] = watch_tunnels(backend, plan.ends, until=time.monotonic() + WATCH_SECONDS,
                                         on_status=on_status, started=started, stop=stop, injected=injected,
                                         after_injected=WATCH_SECONDS)

    # The fast ping runs from before the fault until traffic is back after the watch saw the mesh
    # whole: the gap covers the whole fault, however long (a VM reboot takes tens of seconds).
    loop: probes.PingLoop | None = None
    if plan.ping_from and plan.ping_to:
        try:
            # Bounded by a count that outlasts any fault's watch; stopped as soon as it is over.
            loop = probes.PingLoop(backend, plan.ping_from, plan.ping_to, max_seconds=3600)
            loop.wait_reply_after(0, PING_SECONDS)  # running before the fault
        except Exception as exc:
            results["ping_error"] = str(exc)
    tw = threading.Thread(target=watcher, daemon=True, name="fault-watch")
    tw.start()
    started.wait(2.0)
    try:
        ran = inject()
    finally:
        injected.set()
        tw.join(WATCH_SECONDS + 5)
        if loop is not None:
            back = loop.wait_reply_after(time.time(), PING_SECONDS)  # a reply after the mesh is whole again
            loop.stop()
            gap = loop.gap()
            # None: no reply once the fault was over (the gap would only be the one before it).
            results["ping"] = (gap if back is not None and math.isfinite(gap) else None, len(loop.replies()))
    return FaultReport(plan, ran, results.get("watch"), results.get("ping"), results.get("ping_error", ""))
