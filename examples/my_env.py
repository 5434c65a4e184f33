"""An environment of your own, in the shape layerpilot plays: copy it and change the world.

    PYTHONPATH=. layerpilot train examples/my_env.yaml --layers 3 --out runs/hallway

A spec names it as `environment.uri: "examples.my_env:Hallway"`: a `module:Class` importable where
the job runs (on `PYTHONPATH`: here the repository root; in Kubernetes, in the job's image). Run
this file to play one episode by hand: `python examples/my_env.py`.
"""

from __future__ import annotations

import random
from typing import Any


class Hallway:
    """A one-row world, `A....G`: walk `left` or `right` to the goal. Reward 1 on reaching it."""

    def __init__(self, length: int = 6) -> None:
        self.length = length
        self.agent = self.goal = 0

    def reset(self, seed: int, row: dict[str, Any] | None = None) -> str:
        """The first observation. `seed` fixes the initial state: the G episodes of a group share it.
        `row` is a dataset row when the spec also has a dataset (None otherwise)."""
        self.agent, self.goal = random.Random(seed).sample(range(self.length), 2)
        return self.render()

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        """(observation, reward, done, info): `info` may say `invalid` (the action could not be read;
        the observation is your feedback) and `success` (else: a positive return)."""
        word = action.strip().split()[0].lower() if action.strip() else ""
        if word not in ("left", "right"):
            return f"{self.render()}\nsay left or right", 0.0, False, {"invalid": True}
        self.agent = min(max(self.agent + (1 if word == "right" else -1), 0), self.length - 1)
        if self.agent == self.goal:
            return self.render(), 1.0, True, {"success": True}
        return self.render(), 0.0, False, {}

    def state_key(self) -> str:
        """What identifies the state (optional; GiGPO groups steps taken from equal states)."""
        return str(self.agent)

    def render(self) -> str:
        cells = ["." for _ in range(self.length)]
        cells[self.goal] = "G"
        cells[self.agent] = "A"
        return "".join(cells)


if __name__ == "__main__":
    env = Hallway()
    print(env.reset(seed=0))
    done = False
    while not done:
        observation, reward, done, info = env.step(input("> "))
        print(observation)
