"""Errors that the entry points turn into one-line messages and exit codes.

`InputError` is bad input — a spec field, a command-line flag or argument, an environment variable,
a file given as input: the message names it and the fix, and the CLI exits 2.
`LayerpilotError` is a runtime failure with a message a user can act on; the CLI exits 1.
`first_line` is the one way an error from a library becomes part of such a message.
"""

from __future__ import annotations


class LayerpilotError(Exception):
    """A failure at run time that the user can understand without a traceback."""

    exit_code = 1


class InputError(LayerpilotError):
    """Bad input: names the offending field and says how to fix it.

    >>> str(InputError("training.batchSize", "must be positive", "use 8"))
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


class UnsupportedArchitectureError(InputError):
    """The model's decoder layer stack could not be located."""


def first_line(error: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of an error's message, whitespace collapsed, at most `limit` long.

    Libraries raise messages of many lines (hints, tracebacks of their own); a one-line message
    keeps the line that says what went wrong. An error without a message gives its type's name.

    >>> first_line(ValueError("\\n  no such file:   x.json\\n  (hint: ...)"))
    'no such file: x.json'
    >>> first_line(KeyError()), first_line("a" * 10, limit=5)
    ('KeyError', 'aa...')
    """
    text = error if isinstance(error, str) else str(error)
    line = next((" ".join(part.split()) for part in text.splitlines() if part.strip()), "")
    if not line:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return line if len(line) <= limit else line[: max(limit - 3, 1)] + "..."
