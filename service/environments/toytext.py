"""`gymnasium:<id>`: Gymnasium's toy-text environments behind a text wrapper.

The wrapper renders the state as text, reads the action as a word (`left`, `down`, …, or the
action's number) and passes Gymnasium's reward through. FrozenLake's maps are generated from the
episode's seed (`size`, default 4; `slippery`, default false), so every seed is a new lake;
CliffWalking's map is fixed; Taxi's seed places the taxi, passenger and destination.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from service.errors import InputError

ACTIONS: dict[str, list[str]] = {
    "FrozenLake-v1": ["left", "down", "right", "up"],
    "FrozenLake8x8-v1": ["left", "down", "right", "up"],
    "CliffWalking-v1": ["up", "right", "down", "left"],
    "Taxi-v4": ["south", "north", "east", "west", "pickup", "dropoff"],
}
"""The toy-text environments the wrapper knows, with their actions' names in Gymnasium's order."""

TAXI_PLACES = ["R", "G", "Y", "B"]


def check_toy_text(name: str) -> None:
    """Refuse an id the wrapper does not know, with a did-you-mean."""
    if name in ACTIONS:
        return
    close = difflib.get_close_matches(name, list(ACTIONS), n=1)
    hint = f"did you mean gymnasium:{close[0]}? " if close else ""
    raise InputError(
        "environment.uri",
        f"gymnasium:{name} is not one of the toy-text environments layerpilot wraps",
        f"{hint}use one of {', '.join('gymnasium:' + n for n in ACTIONS)}",
    )


class ToyText:
    """A Gymnasium toy-text environment that speaks text."""

    def __init__(self, name: str, size: int = 4, *, slippery: bool = False, **options: Any) -> None:
        check_toy_text(name)
        import gymnasium  # deferred: only environments of this kind need it

        self.name, self.size, self.slippery, self.options = name, size, slippery, options
        self.actions = ACTIONS[name]
        self._make: Callable[..., Any] = gymnasium.make
        self.env: Any = None
        self.state = 0

    def reset(self, seed: int, row: dict[str, Any] | None = None) -> str:
        options = dict(self.options)
        if self.name.startswith("FrozenLake"):
            from gymnasium.envs.toy_text.frozen_lake import generate_random_map

            size = 8 if self.name == "FrozenLake8x8-v1" else self.size
            options.update(desc=generate_random_map(size=size, seed=seed), is_slippery=self.slippery)
        try:
            self.env = self._make(self.name, **options)
        except TypeError as err:
            raise InputError(
                "environment.params", f"{self.name} refused them ({err})", "remove them"
            ) from None
        self.state, _ = self.env.reset(seed=seed)
        return self.render()

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        word = action.strip().split()[0].strip(".,!:;'\"").lower() if action.strip() else ""
        index = int(word) if word.isdigit() and int(word) < len(self.actions) else None
        if index is None and word in self.actions:
            index = self.actions.index(word)
        if index is None:
            return f"{self.render()}\nsay {', '.join(self.actions)}", 0.0, False, {"invalid": True}
        self.state, reward, terminated, truncated, _ = self.env.step(index)
        info: dict[str, Any] = {}
        if terminated or truncated:  # reaching the goal ends these; so do FrozenLake's holes
            info["success"] = bool(terminated) and (reward > 0 or self.name == "CliffWalking-v1")
        return self.render(), float(reward), bool(terminated or truncated), info

    def state_key(self) -> str:
        return str(int(self.state))

    def render(self) -> str:
        if self.name.startswith("FrozenLake"):
            desc = [[c.decode() for c in row] for row in self.env.unwrapped.desc]
            row, column = divmod(int(self.state), len(desc[0]))
            desc[row][column] = "A"
            return "\n".join("".join(r) for r in desc)
        if self.name == "CliffWalking-v1":
            row, column = divmod(int(self.state), 12)
            grid = [["." for _ in range(12)] for _ in range(4)]
            grid[3][1:11] = ["C"] * 10
            grid[3][11] = "G"
            grid[row][column] = "A"
            return "\n".join("".join(r) for r in grid)
        taxi_row, taxi_column, passenger, destination = self.env.unwrapped.decode(int(self.state))
        where = "in the taxi" if passenger == 4 else f"at {TAXI_PLACES[passenger]}"
        return (
            f"taxi at row {taxi_row}, column {taxi_column}; passenger {where}; "
            f"destination {TAXI_PLACES[destination]}"
        )
