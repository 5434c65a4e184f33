"""The environment protocol and the one shape every step result takes here.

Environments return plain tuples, as Gymnasium's do; `as_step` turns any accepted shape into a
`Step`, so the episode loop reads one type and a user's environment needs no import from us.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from service.errors import LayerpilotError


@runtime_checkable
class Environment(Protocol):
    """What layerpilot needs from an environment (see `service.environments`)."""

    def reset(self, seed: int, row: dict[str, Any] | None = None) -> str: ...

    def step(self, action: str) -> Any: ...


@dataclass(frozen=True)
class Step:
    """One environment step as the episode loop reads it."""

    observation: str
    reward: float
    done: bool
    invalid: bool = False
    success: bool | None = None  # None: decided by the episode's return
    info: dict[str, Any] = field(default_factory=dict)


def as_step(raw: Any) -> Step:
    """A step from `(observation, reward, done)` or `(observation, reward, done, info)`.

    >>> as_step(("a wall", 0, False))
    Step(observation='a wall', reward=0.0, done=False, invalid=False, success=None, info={})
    >>> as_step(("?", 0.0, False, {"invalid": True})).invalid
    True
    """
    if isinstance(raw, Step):
        return raw
    if not isinstance(raw, tuple | list) or len(raw) not in (3, 4):
        raise LayerpilotError(
            f"an environment's step returned {type(raw).__name__} {str(raw)[:60]!r}; "
            "return (observation, reward, done) or (observation, reward, done, info)"
        )
    observation, reward, done = raw[0], raw[1], raw[2]
    info = dict(raw[3]) if len(raw) == 4 and raw[3] else {}
    success = info.get("success")
    return Step(
        observation=str(observation),
        reward=float(reward),
        done=bool(done),
        invalid=bool(info.get("invalid", False)),
        success=None if success is None else bool(success),
        info=info,
    )


def state_key_of(env: Any) -> Hashable | None:
    """The environment's `state_key()`, or None when it has none."""
    method = getattr(env, "state_key", None)
    return method() if callable(method) else None
