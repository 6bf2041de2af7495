"""Exit codes of every ipsec-lab command (and of --run-checks, which CI reads).

--run-checks exits with the worst outcome of its checks, by RUN_ORDER: 1 if any check FAILED
(its judge says a property does not hold); else 4 if any check ended in ERROR (it could not observe:
an exception, a timeout, a missing tool); else 0 (every check PASSED or was SKIPPED as not
applying). 2 and 3 come before any check runs.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Iterable


class ExitCode(IntEnum):
    OK = 0
    """Everything asked for was done (for --run-checks: every check passed or did not apply)."""

    CHECK_FAILED = 1
    """A check ran and failed, or a command on a node exited non-zero."""

    LAB_UNAVAILABLE = 2
    """The lab could not be brought up or reached; what was created was rolled back."""

    USAGE = 3
    """Bad input or a missing prerequisite: nothing was changed."""

    CHECK_ERROR = 4
    """No check failed, but at least one could not observe (ERROR): the run proves nothing about it."""


# One map from a check's outcome (tui.checks.base.Outcome's value) to the exit code it asks for.
OUTCOME_EXIT: dict[str, ExitCode] = {
    "passed": ExitCode.OK,
    "skipped": ExitCode.OK,
    "failed": ExitCode.CHECK_FAILED,
    "error": ExitCode.CHECK_ERROR,
}
# Which code wins when a run has several: a failed property first, then a check that could not look.
RUN_ORDER = (ExitCode.CHECK_FAILED, ExitCode.CHECK_ERROR, ExitCode.OK)


def run_exit_code(outcomes: Iterable[str]) -> ExitCode:
    """The exit code of a --run-checks run whose checks ended with these outcomes (values)."""
    codes = {OUTCOME_EXIT[o] for o in outcomes}
    return next((c for c in RUN_ORDER if c in codes), ExitCode.OK)
