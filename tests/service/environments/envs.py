"""Environments for the tests, importable as `tests.service.environments.envs:<Class>`."""

from __future__ import annotations

import threading
from typing import Any

from service.environments.gridworld import GridWorld


class Corridor:
    """Walk right to the end of a corridor of `length` cells; the state is the position."""

    def __init__(self, length: int = 3) -> None:
        self.length = length
        self.position = 0

    def reset(self, seed: int, row: dict[str, Any] | None = None) -> str:
        self.position = seed % 2  # two initial states, so groups that share a seed share a state
        return self.render()

    def render(self) -> str:
        return "".join("A" if i == self.position else "." for i in range(self.length + 1))

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        word = action.strip().split()[0] if action.strip() else ""
        if word not in ("right", "left"):
            return self.render(), 0.0, False, {"invalid": True}
        self.position = max(0, self.position + (1 if word == "right" else -1))
        done = self.position >= self.length
        return self.render(), 1.0 if done else 0.0, done, {}

    def state_key(self) -> str:
        return str(self.position)


class Hangs(Corridor):
    """Hangs forever in `step` for odd seeds."""

    def reset(self, seed: int, row: dict[str, Any] | None = None) -> str:
        self.seed = seed
        return super().reset(seed, row)

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        if self.seed % 2:
            threading.Event().wait()
        return super().step(action)


class Breaks(GridWorld):
    """A gridworld that raises in `step` once `Breaks.fail` is set (by the test)."""

    fail = False

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        if Breaks.fail:
            raise RuntimeError("the simulator crashed")
        return super().step(action)


class Resets(GridWorld):
    """A gridworld that keeps every (seed, first observation) it was reset with (read by the test)."""

    seen: list[tuple[int, str]] = []  # noqa: RUF012 - the test reads it and clears it first

    def reset(self, seed: int, row: dict[str, Any] | None = None) -> str:
        observation = super().reset(seed, row)
        Resets.seen.append((seed, observation))
        return observation


class NoStep:
    """Has reset but neither step nor tools."""

    def reset(self, seed: int, row: dict[str, Any] | None = None) -> str:
        return "nothing"


class Counter:
    """A TRL-style environment: tools as methods, `get_reward()` at the end."""

    def reset(self, **row: Any) -> str:
        self.count = 0
        return "count to 2"

    def increment(self, by: int = 1) -> str:
        """Add `by` to the count."""
        self.count += by
        return f"count {self.count}"

    def get_reward(self) -> float:
        return 1.0 if self.count == 2 else 0.0
