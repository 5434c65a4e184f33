"""How long-running work reports progress, without the engine ever printing it.

A caller passes a `Progress`; the engine announces each phase when it starts, updates it as the
work advances, and finishes it. The faces decide how that looks (the CLI draws a bar on a
terminal and writes a plain line every few seconds into logs). Phases and what they count:

- `probe`: probe units (`base`, `full`, one per candidate layer),
- `train`: optimizer steps,
- `eval`: evaluation items.

`note` is a line worth keeping (a unit's score, the layers selected); `update` is transient state
(a step count, the current reward) that a display may show or skip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

Phase = Literal["probe", "train", "eval"]

UNITS: dict[str, str] = {"probe": "units", "train": "steps", "eval": "items"}
"""What each phase counts, for displays."""

StepHook = Callable[[int, int, dict[str, float]], None]
"""`(step, max_steps, logs)` after each logged training step: TRL's metrics as plain floats."""


class Progress(Protocol):
    def start(self, phase: Phase, total: int | None = None) -> None:
        """`phase` begins; `total` is how many units, steps or items it will count."""

    def update(self, phase: Phase, done: int, info: str = "") -> None:
        """`done` of the total are finished; `info` is a short state (e.g. `reward 0.41`)."""

    def note(self, message: str) -> None:
        """A line worth keeping in the output, e.g. a finished unit's score."""

    def finish(self, phase: Phase, info: str = "") -> None:
        """`phase` is over; `info` is its outcome (e.g. `score 0.5233`)."""


class Silent:
    """A `Progress` that shows nothing: the default for library calls and tests."""

    def start(self, phase: Phase, total: int | None = None) -> None:
        pass

    def update(self, phase: Phase, done: int, info: str = "") -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def finish(self, phase: Phase, info: str = "") -> None:
        pass


SILENT: Progress = Silent()


def reward_info(logs: dict[str, float]) -> str:
    """The one training number a person watches: the mean reward of the step.

    >>> reward_info({"reward": 0.41234, "loss": 0.0}), reward_info({})
    ('reward 0.412', '')
    """
    return f"reward {logs['reward']:.3f}" if "reward" in logs else ""
