"""One source for a JSON result: each field's name, what it means, and where its value comes from.

Every file layerpilot writes and every `--json` output is declared once, as `Fields`: the keys in
their order, the sentence the reference prints for each (`docs/reference.md` is generated from
these), and how the value is read from the object the result describes. `Fields.json` writes
exactly the documented keys, so a file and its documentation cannot drift apart.

>>> from dataclasses import dataclass
>>> @dataclass
... class Point:
...     x: float
...     y: float
>>> POINT = Fields({"x": ("across", lambda p: p.x), "y": ("up", lambda p: round(p.y, 1))})
>>> POINT.json(Point(1.0, 2.25)), POINT.help["y"]
({'x': 1.0, 'y': 2.2}, 'up')
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")
OMIT: Any = object()
"""What a reader returns for a field that this result leaves out (e.g. intervals a proxy has not)."""


class Fields(Generic[T]):
    """The fields of one kind of JSON result: key -> (what it means, how to read it from a T)."""

    def __init__(self, fields: Mapping[str, tuple[str, Callable[[T], Any]]]) -> None:
        self._fields = dict(fields)

    def __getitem__(self, key: str) -> tuple[str, Callable[[T], Any]]:
        return self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    @property
    def help(self) -> dict[str, str]:
        """Key -> what it means, in order (what the reference prints)."""
        return {key: meaning for key, (meaning, _) in self._fields.items()}

    def json(self, source: T, only: Collection[str] | None = None) -> dict[str, Any]:
        """The result as JSON: every field (or those in `only`), in order."""
        values = {key: read(source) for key, (_, read) in self._fields.items() if only is None or key in only}
        return {key: value for key, value in values.items() if value is not OMIT}
