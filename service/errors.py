"""Errors that the entry points turn into one-line messages and exit codes.

`SpecError` is bad input: the message names the field and the fix, and the CLI exits 2.
`LayerpilotError` is a runtime failure with a message a user can act on; the CLI exits 1.
"""

from __future__ import annotations


class LayerpilotError(Exception):
    """A failure at run time that the user can understand without a traceback."""

    exit_code = 1


class SpecError(LayerpilotError):
    """Bad input: names the offending field and says how to fix it.

    >>> str(SpecError("training.batchSize", "must be positive", "use 8"))
    'training.batchSize: must be positive; use 8'
    """

    exit_code = 2

    def __init__(self, field: str, problem: str, fix: str | None = None) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        message = f"{field}: {problem}"
        if fix:
            message += f"; {fix}"
        super().__init__(message)


class UnsupportedArchitectureError(SpecError):
    """The model's decoder layer stack could not be located."""
