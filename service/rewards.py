"""Reward functions in TRL's shape: `fn(completions, **columns) -> list[float]`."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from service.errors import SpecError
from service.spec import RewardSpec

RewardFunc = Callable[..., list[float | None]]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def completion_text(completion: Any) -> str:
    """Plain text of a completion, plain or conversational.

    >>> completion_text([{"role": "assistant", "content": "42"}])
    '42'
    """
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


def _first_number(text: str) -> str | None:
    match = _NUMBER.search(text)
    return match.group(0).replace(",", "") if match else None


def exact_answer(completions: list[Any], answer: list[Any] | None = None, **_: Any) -> list[float | None]:
    """1.0 when the first number in the completion equals the reference answer.

    >>> exact_answer(["82", "8 2", "81"], answer=["82", "82", "82"])
    [1.0, 0.0, 0.0]
    """
    if answer is None:
        raise SpecError("dataset.answerField", "exact_answer needs an answer column", "set dataset.answerField")
    scores: list[float | None] = []
    for completion, ref in zip(completions, answer, strict=True):
        found = _first_number(completion_text(completion))
        try:
            ok = found is not None and float(found) == float(str(ref).replace(",", ""))
        except ValueError:
            ok = found == str(ref).strip()
        scores.append(1.0 if ok else 0.0)
    return scores


REGISTRY: dict[str, tuple[Callable[..., RewardFunc], str]] = {
    "exact_answer": (lambda: exact_answer, "1 if the first number in the completion equals `answer`"),
}


def available_rewards() -> dict[str, str]:
    return {name: doc for name, (_, doc) in REGISTRY.items()}


def build_reward(spec: RewardSpec, index: int = 0) -> RewardFunc:
    if spec.name in REGISTRY:
        func = REGISTRY[spec.name][0](**spec.params)
    elif ":" in spec.name:
        module, _, attr = spec.name.partition(":")
        try:
            func = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise SpecError(f"rewards[{index}].name", f"cannot import {spec.name} ({err})", "check the path") from None
    else:
        raise SpecError(
            f"rewards[{index}].name", f"unknown reward '{spec.name}'", f"use one of {', '.join(REGISTRY)}"
        )
    return func


def build_rewards(specs: list[RewardSpec]) -> tuple[list[RewardFunc], list[float]]:
    return [build_reward(s, i) for i, s in enumerate(specs)], [s.weight for s in specs]
