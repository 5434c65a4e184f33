"""Helpers for the reward tests: a reward built the way the spec builds it, a chat-shaped completion."""

from __future__ import annotations

from typing import Any

from service.rewards.base import RewardFunc
from service.rewards.registry import build_reward
from service.spec.models import RewardSpec

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"


def reward(name: str, **params: Any) -> RewardFunc:
    return build_reward(RewardSpec(name=name, params=params))


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]
