"""What a check is: a name, a purpose, what to run (collect) and how to judge what came back.

collect() talks to the lab only through the Backend interface, so every check runs the same on
every backend; judge() is a pure function of what collect() observed (a typed, JSON-shaped
observation), so it is tested on observations recorded from real labs (tests/recordings/), and its
verdict explains itself in one line a human can act on.

Three ends: PASSED, FAILED (the judge says the property does not hold) and ERROR (the check could
not observe: collect raised, timed out, or a tool was missing). SKIPPED is for checks that do not
apply. A judge never returns ERROR; the runner does, for what collect could not do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Generic, Mapping, TypeVar

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..lab.events import Reporter
    from ..lab.model import LabSpec
    from ..lab.status import LabStatus


class Outcome(str, Enum):
    PASSED = "passed"
    FAILED = "failed"  # the judge says the property does not hold
    ERROR = "error"  # the check could not observe (an exception, a timeout, a missing tool)
    SKIPPED = "skipped"  # the check does not apply here


@dataclass(frozen=True)
class Measurement:
    name: str
    value: float
    unit: str


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    detail: str
    measurements: tuple[Measurement, ...] = ()

    @classmethod
    def passed(cls, detail: str, *measurements: Measurement) -> "Verdict":
        return cls(Outcome.PASSED, detail, measurements)

    @classmethod
    def failed(cls, detail: str, *measurements: Measurement) -> "Verdict":
        return cls(Outcome.FAILED, detail, measurements)

    @classmethod
    def error(cls, detail: str) -> "Verdict":
        return cls(Outcome.ERROR, detail)

    @classmethod
    def skipped(cls, detail: str) -> "Verdict":
        return cls(Outcome.SKIPPED, detail)


@dataclass(frozen=True)
class CheckResult:
    name: str
    purpose: str
    outcome: Outcome
    detail: str
    seconds: float
    measurements: tuple[Measurement, ...] = ()
    observation: Mapping[str, Any] | None = None  # what collect saw (None when it raised)

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASSED

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "purpose": self.purpose,
            "outcome": self.outcome.value,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
            "measurements": [{"name": m.name, "value": m.value, "unit": m.unit} for m in self.measurements],
            "observation": self.observation,
        }


@dataclass
class CheckContext:
    """What a check gets: the lab, its spec, and what the runner tells it about the run."""

    backend: "Backend"
    spec: "LabSpec"
    reporter: "Reporter"
    fault_capture: object | None = None  # a capture running across the faults (see FaultWatch)
    faults: list[str] = field(default_factory=list)  # the faults injected while it ran, in order

    def status(self) -> "LabStatus":
        return self.backend.status()


@dataclass(frozen=True)
class FaultWatch:
    """A check that observes the faults other checks inject declares this: the runner calls
    `start` before the first disruptive check it runs (and after none, if none runs), notes each
    fault in `ctx.faults`, and calls `stop` when the run ends, whatever happened (idempotent)."""

    start: Callable[[CheckContext], None]
    stop: Callable[[CheckContext], None]


O = TypeVar("O")


@dataclass(frozen=True)
class Check(Generic[O]):
    name: str
    purpose: str
    runs: str  # what it runs on which node, for humans (--list-checks, the TUI, the tutorial)
    collect: Callable[[CheckContext], O]  # O: a TypedDict of JSON types (recorded and replayed)
    judge: Callable[[O], Verdict]
    disruptive: bool = False  # injects a fault (the lab recovers by itself)
    watches_faults: FaultWatch | None = None  # runs across the other checks' faults
