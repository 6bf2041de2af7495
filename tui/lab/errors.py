"""Errors the user can act on. Each carries one line that says what is wrong and what to do."""


class LabError(Exception):
    """A failure with a one-line, human-readable reason (printed as-is, no traceback)."""


class UsageError(LabError):
    """Bad input: nothing was changed."""


class NotFoundError(UsageError):
    """An unknown lab, node, pod or connection."""
