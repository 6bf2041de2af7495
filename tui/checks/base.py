"""What a check is: a name, a purpose, what to run (collect) and how to judge what came back.

collect() talks to the lab only through the Backend interface, so every check runs the same on
every backend; judge() is a pure function of what collect() observed, so it can be tested on
recorded observations and its verdict explains itself in one line a human can act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..lab.events import Reporter
    from ..lab.model import LabSpec
    from ..lab.status import LabStatus


class Outcome(str, Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


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
        }


@dataclass
class CheckContext:
    """What a check gets: the lab, its spec, and a place to leave things for later checks."""

    backend: "Backend"
    spec: "LabSpec"
    reporter: "Reporter"
    shared: dict[str, Any] = field(default_factory=dict)  # e.g. the fault-time capture

    def status(self) -> "LabStatus":
        return self.backend.status()


Observation = dict[str, Any]


@dataclass(frozen=True)
class Check:
    name: str
    purpose: str
    runs: str  # what it runs on which node, for humans (--list-checks, the TUI, the tutorial)
    collect: Callable[[CheckContext], Observation]
    judge: Callable[[Observation], Verdict]
    disruptive: bool = False  # injects a fault (the lab recovers by itself)
