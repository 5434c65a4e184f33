"""An environment of your own, in the shape layerpilot plays: copy it and change the world.

    PYTHONPATH=. layerpilot train examples/my_env.yaml --layers 3 --out runs/guess

A spec names it as `environment.uri: "examples.my_env:GuessNumber"`: a `module:Class` importable
where the job runs (on `PYTHONPATH`: here the repository root; in Kubernetes, in the job's image). Run this
file to play one episode by hand: `python examples/my_env.py`.
"""

from __future__ import annotations

import random
from typing import Any


class GuessNumber:
    """Guess a number from 1 to `high`; the environment says higher or lower. Reward 1 for the hit."""

    def __init__(self, high: int = 8) -> None:
        self.high = high
        self.secret = 0
        self.low, self.top = 1, high

    def reset(self, seed: int, row: dict[str, Any] | None = None) -> str:
        """The first observation. `seed` fixes the initial state: the G episodes of a group share it.
        `row` is a dataset row when the spec also has a dataset (None otherwise)."""
        self.secret = random.Random(seed).randint(1, self.high)
        self.low, self.top = 1, self.high
        return f"guess a number from 1 to {self.high}"

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        """(observation, reward, done, info): `info` may say `invalid` (the action could not be read;
        the observation is your feedback) and `success` (else: a positive return)."""
        words = action.strip().split()
        if not words or not words[0].isdigit():
            return "say a number", 0.0, False, {"invalid": True}
        guess = int(words[0])
        if guess == self.secret:
            return "right", 1.0, True, {"success": True}
        if guess < self.secret:
            self.low = max(self.low, guess + 1)
            return "higher", 0.0, False, {}
        self.top = min(self.top, guess - 1)
        return "lower", 0.0, False, {}

    def state_key(self) -> str:
        """What identifies the state (optional; GiGPO groups steps taken from equal states)."""
        return f"{self.low}-{self.top}"


if __name__ == "__main__":
    env = GuessNumber()
    print(env.reset(seed=0))
    done = False
    while not done:
        observation, reward, done, info = env.step(input("> "))
        print(observation)
