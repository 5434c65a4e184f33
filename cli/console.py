"""Where output goes and how it reads: results on stdout, progress and errors on stderr.

Prose wraps at word boundaries to the terminal (80 columns in logs); commands and paths are never
broken, so they go on lines of their own (`command`, `field`) and can be copied whole. Errors are
one line on stderr, and also a JSON object on stdout when the command was asked for `--json`.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from service.errors import InputError, LayerpilotError, first_line

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


def say(text: str, console: Console = out) -> None:
    """Prose: wrapped at word boundaries, no markup."""
    console.print(text, markup=False)


def command(text: str, console: Console = out) -> None:
    """A command or path to copy: indented on its own line, never wrapped."""
    console.print(f"  {text}", soft_wrap=True, markup=False)


def field(label: str, value: str, console: Console = out) -> None:
    """`label value` on one line when it fits, else the value on its own line below the label."""
    line = f"{label:<13} {value}"
    if len(line) <= console.width:
        console.print(line, soft_wrap=True, markup=False)
    else:
        console.print(label, markup=False)
        command(value, console)


def warn(text: str) -> None:
    err.print(f"[yellow]warning:[/] {text}", soft_wrap=True)


def note(text: str) -> None:
    err.print(f"note: {text}", markup=False)


def emit(data: dict[str, Any], *, as_json: bool, render: Callable[[], None]) -> None:
    """The result: JSON on stdout for machines, or `render()` for people."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        render()


def print_json_error(message: str, *, exit_code: int, error: BaseException | None = None) -> None:
    """A failure as the JSON a `--json` caller parses: `{"error": {...}}` on stdout."""
    body: dict[str, Any] = {"message": message, "exitCode": exit_code}
    if isinstance(error, InputError):
        body.update(field=error.field, problem=error.problem, fix=error.fix)
    if error is not None:
        body["type"] = type(error).__name__
    sys.stdout.write(json.dumps({"error": body}, indent=2) + "\n")


def _fail(message: str, exit_code: int, *, as_json: bool, error: BaseException | None = None) -> typer.Exit:
    if as_json:
        print_json_error(message, exit_code=exit_code, error=error)
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    return typer.Exit(exit_code)


def guarded(func: F) -> F:
    """Our errors become one line on stderr (and JSON under `--json`) with the right exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except LayerpilotError as error:
            raise _fail(str(error), error.exit_code, as_json=as_json, error=error) from None
        except KeyboardInterrupt:
            raise _fail(
                "interrupted; finished work is kept (continue with --resume)", 130, as_json=as_json
            ) from None
        except Exception as error:
            if os.environ.get("LAYERPILOT_DEBUG"):
                raise
            message = (
                f"{type(error).__name__}: {first_line(error)} (set LAYERPILOT_DEBUG=1 for the traceback)"
            )
            raise _fail(message, 1, as_json=as_json, error=error) from None

    return wrapper  # type: ignore[return-value]


def score(value: float | None, digits: int = 4) -> str:
    """Scores always with the same number of decimals, so columns line up.

    >>> score(0.39), score(None)
    ('0.3900', '–')
    """
    return "–" if value is None else f"{value:.{digits}f}"
