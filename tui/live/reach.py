"""Per node pair: up or down second by second over the last minute, outages per source, and the gaps
a fault watch or a fast ping measured. Thread-safe: the status poller, the pinger and fault watches
write, the UI thread reads."""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from .text import fmt_gap

if TYPE_CHECKING:
    from ..lab.status import LabStatus

TIMELINE_SECONDS = 60

Clock = Callable[[], float]


def pair_of(a: str, b: str) -> tuple[str, str]:
    return (a, b) if _node_sort_key(a) <= _node_sort_key(b) else (b, a)


def _node_sort_key(name: str) -> tuple[int, str]:
    m = re.search(r"(\d+)$", name)
    return (int(m.group(1)) if m else 0, name)


@dataclass
class Outage:
    pair: tuple[str, str]
    start: float
    end: float | None = None
    source: str = "state"  # state (strongSwan SAs over vici) | ping (data plane)
    cause: str = ""

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else self.end - self.start


@dataclass
class PairTimeline:
    pair: tuple[str, str]
    # per whole second: [seen up, seen down], from any source; about the last minute is kept
    buckets: dict[int, list[bool]] = field(default_factory=dict)
    up: dict[str, bool] = field(default_factory=dict)  # per source: state | ping | watch
    since: dict[str, float] = field(default_factory=dict)
    outages: dict[str, Outage] = field(default_factory=dict)  # the last outage seen by each source
    last_ping_gap: float | None = None  # seconds, the largest gap of a fast ping during the last fault
    ping_note: str = ""

    @property
    def is_up(self) -> bool | None:
        states = list(self.up.values())
        return None if not states else all(states)

    @property
    def last_outage(self) -> Outage | None:
        done = [o for o in self.outages.values()]
        return max(done, key=lambda o: o.start) if done else None


class Reachability:
    """Per node pair: was it up or down, second by second, over the last minute; and the gaps.

    Observations come from the status poller (source "state": both ends ESTABLISHED/INSTALLED),
    from fault watches that poll strongSwan every few milliseconds around an injected fault
    (source "watch"), and from pings between the nodes' cni0 addresses (source "ping"). Each
    source keeps its own up/down and outage record, so a slow source never hides a fast one.
    """

    def __init__(self, clock: Clock = time.time, window: int = TIMELINE_SECONDS) -> None:
        self.clock, self.window = clock, window
        self.pairs: dict[tuple[str, str], PairTimeline] = {}
        self.transitions: deque[tuple[float, str]] = deque(maxlen=200)  # (at, human text)
        self._lock = threading.RLock()
        self.version = 0

    def _timeline(self, pair: tuple[str, str]) -> PairTimeline:
        tl = self.pairs.get(pair)
        if tl is None:
            tl = self.pairs[pair] = PairTimeline(pair)
        return tl

    def observe(self, pair: tuple[str, str], up: bool, at: float | None = None, *, source: str = "state",
                why: str = "") -> None:
        at = self.clock() if at is None else at
        with self._lock:
            tl = self._timeline(pair)
            b = tl.buckets.setdefault(int(at), [False, False])
            b[0 if up else 1] = True
            before = tl.up.get(source)
            if before is not None and up != before:
                a, c = pair
                if not up:
                    tl.outages[source] = Outage(pair, at, source=source, cause=why)
                    self.transitions.append((at, f"{a} ↔ {c} DOWN [{source}] {why}".rstrip()))
                else:
                    o = tl.outages.get(source)
                    if o is not None and o.end is None:
                        o.end = at
                        self.transitions.append((at, f"{a} ↔ {c} UP again [{source}] after {fmt_gap(at - o.start)}"))
            if before != up:
                tl.since[source] = at
            tl.up[source] = up
            self.version += 1
            if len(tl.buckets) > self.window + 10:
                horizon = int(at) - self.window - 5
                for k in [k for k in tl.buckets if k < horizon]:
                    del tl.buckets[k]

    def observe_status(self, status: "LabStatus", at: float | None = None, *, source: str = "state") -> None:
        """Both ends of a pair up = the pair is up; anything else is down (the bad ends say why)."""
        ends: dict[tuple[str, str], list] = {}
        for t in status.tunnels:
            ends.setdefault(pair_of(t.node, t.peer), []).append(t)
        for pair, ts in ends.items():
            bad = [t for t in ts if not t.up]
            why = ", ".join(f"{t.node} {t.name} {t.ike_state}/{t.child_state}" for t in bad)
            self.observe(pair, not bad, at, source=source, why=why)

    def note_bounce(self, pair: tuple[str, str], gap: float | None, how: str) -> None:
        """A fault watch saw the pair's SAs torn down and re-established (perhaps between samples)."""
        at = self.clock()
        with self._lock:
            tl = self._timeline(pair)
            b = tl.buckets.setdefault(int(at), [False, False])
            b[0] = b[1] = True
            start = at - (gap or 0.0)
            tl.outages[how] = Outage(pair, start, at, source=how, cause="fault")
            self.version += 1
            self.transitions.append((at, f"{pair[0]} ↔ {pair[1]} left ESTABLISHED and came back ESTABLISHED "
                                         f"after {'≤ ' if how == 'spi' else ''}{fmt_gap(gap)} [{how}]"))

    def note_ping_gap(self, pair: tuple[str, str], gap: float | None, note: str) -> None:
        with self._lock:
            tl = self._timeline(pair)
            tl.last_ping_gap, tl.ping_note = gap, note
            self.version += 1
            self.transitions.append((self.clock(), f"{pair[0]} ↔ {pair[1]} data plane: {note}"))

    def cells(self, pair: tuple[str, str], now: float | None = None) -> str:
        """One character per second, oldest first: '█' up, '▁' down, '▄' both in that second, ' ' no data."""
        now = self.clock() if now is None else now
        tl = self.pairs.get(pair)
        end = int(now)
        out = []
        for sec in range(end - self.window + 1, end + 1):
            b = tl.buckets.get(sec) if tl else None
            if not b:
                out.append(" ")
            elif b[0] and b[1]:
                out.append("▄")
            elif b[1]:
                out.append("▁")
            else:
                out.append("█")
        return "".join(out)

    def recent_transitions(self, n: int = 8) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.transitions)[-n:]
