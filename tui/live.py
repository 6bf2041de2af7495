"""What the TUI keeps while it runs, without Textual: the log store, the per-pair reachability
timeline, fault watches (fast polling around an injected fault) and charon log tails.

Everything here is plain Python and thread-safe where threads touch it, so it can be tested
and benchmarked without a terminal. The TUI (tui/app.py, tui/screens/) renders from it.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

from .lab.events import Event, OutputLine, StepFinished, StepStarted

if TYPE_CHECKING:
    from .backends.base import Backend
    from .lab.status import LabStatus

LOG_CAP = 20_000  # lines kept in memory across all sources; older lines are dropped
TIMELINE_SECONDS = 60

Clock = Callable[[], float]


# --------------------------------------------------------------------------------------- logs
@dataclass(frozen=True)
class LogRecord:
    seq: int
    at: float
    source: str  # provisioning | charon | checks | actions | app
    node: str | None
    text: str
    stream: str = "stdout"


class LogStore:
    """A bounded, thread-safe log of every source; readers ask for what came after a sequence number."""

    def __init__(self, cap: int = LOG_CAP) -> None:
        self.cap = cap
        self._lines: deque[LogRecord] = deque(maxlen=cap)
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self.sources: set[str] = set()
        self.nodes: set[str] = set()

    def add(self, source: str, text: str, *, node: str | None = None, stream: str = "stdout",
            at: float | None = None) -> None:
        with self._lock:
            rec = LogRecord(next(self._seq), time.time() if at is None else at, source, node, text, stream)
            self._lines.append(rec)
            self.sources.add(source)
            if node:
                self.nodes.add(node)

    def add_event(self, event: Event, default_source: str = "provisioning") -> None:
        if isinstance(event, OutputLine):
            self.add(event.source or default_source, event.text, node=event.node, stream=event.stream, at=event.at)
        elif isinstance(event, StepStarted):
            self.add(default_source, f"▶ {event.step}", node=event.node, at=event.at)
        elif isinstance(event, StepFinished):
            mark = "✓" if event.ok else "✗"
            detail = f" — {event.detail}" if event.detail else ""
            self.add(default_source, f"{mark} {event.step} ({event.seconds:.2f} s){detail}", node=event.node,
                     stream="stdout" if event.ok else "stderr", at=event.at)

    def after(self, seq: int) -> list[LogRecord]:
        with self._lock:
            if not self._lines or self._lines[-1].seq <= seq:
                return []
            return [r for r in self._lines if r.seq > seq]

    def all(self) -> list[LogRecord]:
        with self._lock:
            return list(self._lines)

    def __len__(self) -> int:
        return len(self._lines)


class ProgressCounter:
    """Counts steps of a bring-up: total is known from the spec, done grows with StepFinished."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.current, self.failed = total, 0, "", False

    def feed(self, event: Event) -> None:
        if isinstance(event, StepStarted):
            self.current = event.step
        elif isinstance(event, StepFinished):
            self.done = min(self.total, self.done + 1)
            self.failed = self.failed or not event.ok


def bringup_steps(nodes: int) -> int:
    """detect data path, render, underlay, one boot per node, wait for the mesh."""
    return 4 + nodes


# ------------------------------------------------------------------------------ reachability
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


def fmt_gap(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


# -------------------------------------------------------------------------------- fault watch
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
                  interval: float = 0.0005) -> WatchResult:
    """Poll strongSwan as fast as status() allows around a fault on the tunnel `ends`.

    A tunnel taken down with `swanctl --terminate` is often back within 3 ms, less than one
    sample; so besides the states, each end's IKE SPI is compared with the one before the fault:
    a new SPI means the SA was torn down and a new one established in between.

    Ends when, after `injected` is set, all watched ends are up and either a sample showed one
    down or an SA was replaced; or `quiet_after` seconds after `injected` with neither; or at
    `until` (monotonic); or when `stop` is set. `on_status` gets every status whose watched
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
    while time.monotonic() < until and not (stop and stop.is_set()):
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


_PING_TS = re.compile(r"^\[(\d+\.\d+)\].*bytes from")


def ping_gap(backend: "Backend", node: str, ip: str, seconds: int = 3, interval: float = 0.01) -> tuple[float | None, int]:
    """Ping `ip` from `node` every `interval` for `seconds`; the largest gap between replies
    (None when no reply came at all) and the number of replies."""
    res = backend.exec(node, ["ping", "-n", "-D", "-i", str(interval), "-W", "0.5", "-w", str(max(1, round(seconds))), ip],
                       timeout=seconds + 10)
    stamps = [float(m.group(1)) for line in res.stdout.splitlines() if (m := _PING_TS.match(line))]
    if not stamps:
        return None, 0
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return (max(gaps) if gaps else 0.0), len(stamps)


def probe_pairs(backend: "Backend", nodes: Sequence[tuple[str, str]], timeout: float = 0.8) -> dict[tuple[str, str], bool]:
    """From each node, ping every other node's cni0 once in parallel (one exec per node).

    `nodes` is [(name, cni0 ip)]. A pair is up when both directions answered.
    """
    results: dict[tuple[str, str], list[bool]] = {}
    for name, _ in nodes:
        targets = [(peer, ip) for peer, ip in nodes if peer != name]
        script = "\n".join(
            f"(ping -n -q -c 1 -W {timeout} {ip} >/dev/null 2>&1 && echo '{peer} up' || echo '{peer} down') &"
            for peer, ip in targets
        ) + "\nwait"
        try:
            res = backend.exec(name, ["sh", "-c", script], timeout=timeout + 5)
            lines = res.stdout.split("\n")
        except Exception:
            lines = []
        answered = {ln.split()[0]: ln.split()[1] == "up" for ln in lines if len(ln.split()) == 2}
        for peer, _ in targets:
            results.setdefault(pair_of(name, peer), []).append(answered.get(peer, False))
    return {pair: all(v) for pair, v in results.items()}


# ------------------------------------------------------------------------------- charon tails
class FileTail:
    """Follows a file like `tail -F`: new lines since the last poll; survives truncation and re-creation."""

    def __init__(self, path: str | os.PathLike, from_end_lines: int = 50) -> None:
        self.path = str(path)
        self._pos: int | None = None
        self._ino: int | None = None
        self._partial = ""
        self._backlog = from_end_lines

    def poll(self, max_bytes: int = 1 << 20) -> list[str]:
        try:
            st = os.stat(self.path)
        except OSError:
            return []
        if self._pos is None or self._ino != st.st_ino or st.st_size < self._pos:
            first = self._pos is None
            self._ino = st.st_ino
            self._pos = max(0, st.st_size - 64 * 1024) if first else 0
            self._partial = ""
            skip_partial_line = first and self._pos > 0
        else:
            skip_partial_line = False
        if st.st_size == self._pos:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._pos)
            data = f.read(max_bytes)
        self._pos += len(data)
        text = self._partial + data.decode("utf-8", "replace")
        lines = text.split("\n")
        self._partial = lines.pop()
        if skip_partial_line and lines:
            lines = lines[1:]
        if self._backlog is not None:
            lines = lines[-self._backlog:] if self._backlog else []
            self._backlog = None
        return lines


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


def chunks(items: Iterable, n: int) -> Iterator[list]:
    buf: list = []
    for it in items:
        buf.append(it)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf
