"""Exit codes of every ipsec-lab command (and of --run-checks, which CI reads)."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    """Everything asked for was done (for --run-checks: every check passed)."""

    CHECK_FAILED = 1
    """A check ran and failed, or a command on a node exited non-zero."""

    LAB_UNAVAILABLE = 2
    """The lab could not be brought up or reached; what was created was rolled back."""

    USAGE = 3
    """Bad input or a missing prerequisite: nothing was changed."""
