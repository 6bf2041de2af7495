"""The session's logs: a bounded, thread-safe store of every source, the bring-up progress, and the
charon log tails (read through the backend, so that VMs' logs come from the nodes)."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from ..lab.events import Event, OutputLine, StepFinished, StepStarted

if TYPE_CHECKING:
    from ..backends.base import Backend

LOG_CAP = 20_000  # lines kept in memory across all sources; older lines are dropped
CHARON_BACKLOG = 20  # lines of each node's charon log shown from before the session started


@dataclass(frozen=True)
class LogRecord:
    seq: int
    at: float
    source: str  # provisioning | charon | checks | actions | tutorial | app
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


@dataclass(frozen=True)
class Progress:
    """Where a bring-up is: total steps known from the spec, done grows with each finished step."""

    total: int
    done: int = 0
    current: str = ""
    failed: bool = False

    @property
    def label(self) -> str:
        what = "bring-up failed" if self.failed else ("lab is up" if self.done >= self.total else self.current)
        return f"{what} ({self.done}/{self.total})"


class ProgressCounter:
    """Counts the steps of a bring-up from the event stream; snapshot() is an immutable Progress."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.current, self.failed = total, 0, "", False

    def feed(self, event: Event) -> bool:
        """Take one event; True when the progress changed."""
        if isinstance(event, StepStarted):
            self.current = event.step
            return True
        if isinstance(event, StepFinished):
            self.done = min(self.total, self.done + 1)
            self.failed = self.failed or not event.ok
            return True
        return False

    def snapshot(self) -> Progress:
        return Progress(self.total, self.done, self.current, self.failed)


def bringup_steps(nodes: int) -> int:
    """detect data path, render, underlay, one boot per node, wait for the mesh."""
    return 4 + nodes


class CharonTails:
    """Follows each node's charon log through `backend.read_charon_log(node, offset)`.

    The first read of a node keeps only its last `backlog` lines; later reads return what came
    after the offset the previous read ended at, so each line is returned once (the backend reads
    a log that was started anew, shorter than the offset, from its start)."""

    def __init__(self, backend: "Backend", backlog: int = CHARON_BACKLOG) -> None:
        self.backend, self.backlog = backend, backlog
        self.offsets: dict[str, int] = {}

    def poll(self, nodes: Iterable[str]) -> list[tuple[str, str]]:
        """New (node, line) pairs of every node, in node order."""
        out: list[tuple[str, str]] = []
        for node in nodes:
            first = node not in self.offsets
            lines, self.offsets[node] = self.backend.read_charon_log(node, self.offsets.get(node, 0))
            if first:
                lines = lines[-self.backlog:] if self.backlog else []
            out.extend((node, line) for line in lines if line)
        return out

    def into(self, store: LogStore, nodes: Iterable[str]) -> int:
        new = self.poll(nodes)
        for node, line in new:
            store.add("charon", line, node=node)
        return len(new)


class EventSink:
    """The backend's reporter sink while the app runs: every event goes to the log store under the
    current source, and bring-up steps to `on_progress` (an immutable Progress, for the UI thread).
    It runs on whatever thread the backend runs on."""

    def __init__(self, store: LogStore, on_progress: Callable[[Progress], None]) -> None:
        self.store, self.on_progress = store, on_progress
        self.source = "provisioning"
        self.counter: ProgressCounter | None = None

    def __call__(self, event: Event) -> None:
        self.store.add_event(event, default_source=self.source)
        if self.counter is not None and self.source == "provisioning" and self.counter.feed(event):
            self.on_progress(self.counter.snapshot())
