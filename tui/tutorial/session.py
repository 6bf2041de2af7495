"""A learner's walk through the tutorial: the current step, "do it", the checks, back/next/skip.

Headless; the TUI's lesson panel drives one from its workers, and tests drive one directly.
"next" is offered only once the step's checks passed (skip moves on without them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..backends.base import Backend
from ..checks.base import CheckResult
from ..checks.runner import run_checks
from ..lab.errors import LabError
from ..lab.events import Reporter
from .actions import ACTIONS
from .progress import Progress
from .steps import Step, load_steps


@dataclass
class StepState:
    output: list[str] = field(default_factory=list)
    results: list[CheckResult] = field(default_factory=list)
    error: str = ""


class TutorialSession:
    def __init__(self, backend: Backend, steps: list[Step] | None = None, progress: Progress | None = None) -> None:
        self.backend = backend
        self.steps = steps or load_steps()
        unknown = [s.action for s in self.steps if s.action not in ACTIONS]
        if unknown:
            raise LabError(f"tutorial step action {unknown[0]!r} is not defined")
        self.progress = progress or Progress.load(backend.lab)
        self.progress.current = max(0, min(self.progress.current, len(self.steps) - 1))
        self.state: dict[str, StepState] = {}

    # -- where we are ------------------------------------------------------------------------
    @property
    def index(self) -> int:
        return self.progress.current

    @property
    def step(self) -> Step:
        return self.steps[self.index]

    def step_state(self, step: Step | None = None) -> StepState:
        return self.state.setdefault((step or self.step).id, StepState())

    def passed(self, step: Step | None = None) -> bool:
        return (step or self.step).id in self.progress.passed

    @property
    def can_next(self) -> bool:
        return self.passed() and self.index < len(self.steps) - 1

    @property
    def finished(self) -> bool:
        return self.index == len(self.steps) - 1 and self.passed()

    # -- doing ------------------------------------------------------------------------------
    def do_it(self, reporter: Reporter | None = None) -> list[str]:
        st = self.step_state()
        st.error = ""
        try:
            st.output = ACTIONS[self.step.action](self.backend, reporter or Reporter(source="tutorial"))
        except LabError as exc:
            st.error = str(exc)
            raise
        return st.output

    def check(self, reporter: Reporter | None = None) -> list[CheckResult]:
        step = self.step
        results = run_checks(self.backend, list(step.checks), reporter or Reporter(source="checks"),
                             prepare_workload=False)
        self.step_state(step).results = results
        if results and all(r.passed for r in results):
            self.progress.passed.add(step.id)
        else:
            self.progress.passed.discard(step.id)
        self.progress.save()
        return results

    # -- moving -----------------------------------------------------------------------------
    def _go(self, index: int) -> Step:
        self.progress.current = max(0, min(index, len(self.steps) - 1))
        self.progress.save()
        return self.step

    def next(self) -> Step:
        if not self.passed():
            raise LabError(f"step {self.index + 1} ({self.step.title}) has not passed its check yet")
        return self._go(self.index + 1)

    def back(self) -> Step:
        return self._go(self.index - 1)

    def skip(self) -> Step:
        return self._go(self.index + 1)

    def restart(self) -> Step:
        self.progress.reset()
        self.state.clear()
        return self.step
