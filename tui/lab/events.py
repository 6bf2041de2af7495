"""Events a long operation reports while it runs: output lines and steps.

The CLI prints them with rich; the TUI posts them as messages from its workers. Both get the
same stream, so what a user sees in the terminal is what the Logs screen shows.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Callable, Literal, Union


@dataclass(frozen=True)
class OutputLine:
    source: str  # "provisioning", "charon", "checks", "actions", ...
    text: str
    stream: str = "stdout"  # or "stderr"
    node: str | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class StepStarted:
    step: str
    node: str | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class StepFinished:
    step: str
    ok: bool
    seconds: float
    detail: str = ""
    node: str | None = None
    at: float = field(default_factory=time.time)


Event = Union[OutputLine, StepStarted, StepFinished]
EventSink = Callable[[Event], None]


def discard(_event: Event) -> None:
    """A sink for callers that do not watch progress."""


class Reporter:
    """A thread-safe front for an EventSink with helpers for steps and lines."""

    def __init__(self, sink: EventSink | None = None, source: str = "provisioning") -> None:
        self._sink = sink or discard
        self._lock = threading.Lock()
        self.source = source

    def emit(self, event: Event) -> None:
        with self._lock:
            self._sink(event)

    def line(self, text: str, *, node: str | None = None, stream: str = "stdout", source: str | None = None) -> None:
        for part in text.splitlines() or [""]:
            self.emit(OutputLine(source or self.source, part, stream, node))

    def step(self, name: str, node: str | None = None) -> "_Step":
        return _Step(self, name, node)


class _Step:
    def __init__(self, reporter: Reporter, name: str, node: str | None) -> None:
        self.reporter, self.name, self.node = reporter, name, node
        self.detail = ""
        self.failed = False  # set by a step that ends without an exception but did not succeed (a check that failed)

    def __enter__(self) -> "_Step":
        self.t0 = time.monotonic()
        self.reporter.emit(StepStarted(self.name, self.node))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        ok = exc_type is None and not self.failed
        detail = self.detail if ok else str(exc)
        self.reporter.emit(StepFinished(self.name, ok, time.monotonic() - self.t0, detail, self.node))
        return False
