"""A TRL `environment_factory` class, played as an environment of ours.

TRL's multi-turn environments (`GRPOTrainer(environment_factory=...)`) are classes whose public
methods are tools the model calls, with `reset(**row)` returning text for the prompt and an optional
`get_reward()` scoring the finished episode. Under layerpilot each action is one tool call, written as
JSON (`{"name": "move", "arguments": {"direction": "left"}}`) or as a call (`move(direction="left")`);
the tool's return value is the observation. An action that calls no tool is the agent's final
answer and ends the episode; the reward is `get_reward()` then (0 without one). Such classes have no
state key, so GiGPO cannot use them.
"""

from __future__ import annotations

import ast
import inspect
import json
from collections.abc import Callable
from typing import Any


class ToolEnvironment:
    """Our protocol over a TRL environment class: actions are tool calls, `get_reward()` the reward."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self.build = build
        self.inner: Any = None

    def reset(self, seed: int, row: dict[str, Any] | None = None) -> str:
        self.inner = self.build()
        observation = self.inner.reset(**(row or {}))
        tools = ", ".join(sorted(self.tools()))
        return f"{observation or ''}\ntools: {tools}".strip()

    def tools(self) -> dict[str, Callable[..., Any]]:
        return {name: getattr(self.inner, name) for name in tool_names(type(self.inner))}

    def state_key(self) -> Any:
        """The TRL class's own `state_key()`, if it has one (GiGPO's anchor states)."""
        method = getattr(self.inner, "state_key", None)
        return method() if callable(method) else None

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        call = parse_call(action)
        tools = self.tools()
        if call is None or call[0] not in tools:
            reward = self.inner.get_reward() if callable(getattr(self.inner, "get_reward", None)) else 0.0
            return "", float(reward), True, {}
        name, arguments = call
        try:
            observation = tools[name](**arguments)
        except TypeError as err:
            return f"{name}: {err}", 0.0, False, {"invalid": True}
        return str(observation), 0.0, False, {}


def tool_names(kind: type) -> list[str]:
    """The tools of a TRL environment class: its public methods but `reset` and `get_reward` (as TRL),
    and `state_key` (ours)."""
    return [
        name
        for name, _ in inspect.getmembers(kind, predicate=inspect.isfunction)
        if name not in ("reset", "get_reward", "state_key") and not name.startswith("_")
    ]


def parse_call(action: str) -> tuple[str, dict[str, Any]] | None:
    """`(tool, arguments)` from JSON or call syntax, or None when the action calls no tool.

    >>> parse_call('{"name": "move", "arguments": {"direction": "left"}}')
    ('move', {'direction': 'left'})
    >>> parse_call('move(direction="left")')
    ('move', {'direction': 'left'})
    >>> parse_call("I am done") is None
    True
    """
    text = action.strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        arguments = data.get("arguments") or {}
        return (data["name"], dict(arguments)) if isinstance(arguments, dict) else None
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)) or node.args:
        return None
    try:
        arguments = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
    except ValueError:
        return None
    return node.func.id, arguments
