"""`builtin:gridworld`: a text gridworld, generated from a seed and solvable by construction.

    #..G.
    .#.#.
    A....

`A` is the agent, `G` the goal, `#` a wall, `.` floor; with `keys: true` a wall splits the grid and
its door `D` opens once the agent holds the key `k` (picked up by stepping on it). Actions are
`up`, `down`, `left`, `right` (the first word of the model's action counts). Reaching the goal ends
the episode with reward 1; everything else earns 0. Bumping into a wall or a closed door leaves the
agent where it was and says so; an action that is not a direction is invalid, and the observation
says which actions exist.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from service.errors import InputError

MOVES: dict[str, tuple[int, int]] = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
INVALID = "say up, down, left or right"
MIN_SIZE, MAX_SIZE = 3, 12
State = tuple[tuple[int, int], bool]


class GridWorld:
    """A text gridworld: walls, a goal, optionally a key and a door; solvable by construction.

    `size` is the side of the square grid, or a list of sides (a seed picks one); `walls` the share
    of cells that are walls; `keys` adds a key and a door that blocks the way to the goal.
    """

    def __init__(self, size: int | list[int] = 5, walls: float = 0.2, *, keys: bool = False) -> None:
        sizes = size if isinstance(size, list) else [size]
        if not sizes or any(not isinstance(s, int) or not MIN_SIZE <= s <= MAX_SIZE for s in sizes):
            raise InputError(
                "environment.params.size",
                f"{size!r} is not a side from {MIN_SIZE} to {MAX_SIZE}",
                "e.g. size: 5",
            )
        if not 0 <= walls <= 0.5:
            raise InputError("environment.params.walls", f"{walls} is outside [0, 0.5]", "e.g. walls: 0.2")
        self.sizes, self.walls, self.keys = sizes, float(walls), bool(keys)
        self.grid: list[list[str]] = []
        self.agent = (0, 0)
        self.has_key = False

    def reset(self, seed: int, row: dict[str, Any] | None = None) -> str:
        rng = random.Random(seed)
        size = self.sizes[rng.randrange(len(self.sizes))]
        while True:  # rejection sampling: few draws are unsolvable at these wall densities
            if self._generate(rng, size) and self.solution():
                return self.render()

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        word = action.strip().split()[0].strip(".,!:;'\"").lower() if action.strip() else ""
        if word not in MOVES:
            return f"{self.render()}\n{INVALID}", 0.0, False, {"invalid": True}
        target = _moved(self.agent, MOVES[word])
        cell = self._cell(target)
        if cell == "#" or (cell == "D" and not self.has_key):
            return f"{self.render()}\n{'locked' if cell == 'D' else 'wall'}", 0.0, False, {}
        self.agent = target
        if cell == "k":
            self.has_key = True
            self.grid[target[0]][target[1]] = "."
        if cell == "G":
            return self.render(), 1.0, True, {"success": True}
        return self.render(), 0.0, False, {}

    def state_key(self) -> str:
        return f"{self.agent[0]},{self.agent[1]},{int(self.has_key)}"

    def render(self) -> str:
        rows = [row[:] for row in self.grid]
        rows[self.agent[0]][self.agent[1]] = "A"
        return "\n".join("".join(row) for row in rows)

    def solution(self) -> list[str]:
        """A shortest list of actions from the current state to the goal ([] if none)."""
        start: State = (self.agent, self.has_key)
        parents: dict[State, tuple[State, str] | None] = {start: None}
        queue = deque([start])
        while queue:
            state = queue.popleft()
            position, key = state
            if self._cell(position) == "G":
                path: list[str] = []
                while (parent := parents[state]) is not None:
                    state, move = parent
                    path.append(move)
                return path[::-1]
            for move, delta in MOVES.items():
                target = _moved(position, delta)
                cell = self._cell(target)
                if cell == "#" or (cell == "D" and not key):
                    continue
                following = (target, key or cell == "k")
                if following not in parents:
                    parents[following] = (state, move)
                    queue.append(following)
        return []

    def _cell(self, position: tuple[int, int]) -> str:
        row, column = position
        if not (0 <= row < len(self.grid) and 0 <= column < len(self.grid)):
            return "#"  # the grid's edge is a wall
        return self.grid[row][column]

    def _generate(self, rng: random.Random, size: int) -> bool:
        cells = [(r, c) for r in range(size) for c in range(size)]
        self.grid = [["#" if rng.random() < self.walls else "." for _ in range(size)] for _ in range(size)]
        self.has_key = False
        if self.keys:
            split = rng.randrange(1, size - 1)
            for r in range(size):
                self.grid[r][split] = "#"
            self.grid[rng.randrange(size)][split] = "D"
            left = [(r, c) for r, c in cells if c < split]
            right = [(r, c) for r, c in cells if c > split]
            agent, key = rng.sample(left, 2)
            goal = rng.choice(right)
            self.grid[key[0]][key[1]] = "k"
        else:
            agent, goal = rng.sample(cells, 2)
        self.grid[goal[0]][goal[1]] = "G"
        self.grid[agent[0]][agent[1]] = "."
        self.agent = agent
        return True


def _moved(position: tuple[int, int], delta: tuple[int, int]) -> tuple[int, int]:
    return position[0] + delta[0], position[1] + delta[1]
