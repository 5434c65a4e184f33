"""Helpers for the reward tests: a reward built the way the spec builds it, a chat-shaped completion."""

from __future__ import annotations

import select
import socket
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


def received(server: socket.socket, wait_s: float = 0.3) -> list[bytes]:
    """What reached a listening socket: one entry per connection (`b"(connected)"` when it sent nothing).

    The child has exited by the time this runs, so whatever it sent is already queued; `wait_s` is
    how long to wait for a connection before deciding there was none.
    """
    got = []
    while select.select([server], [], [], wait_s)[0]:
        conn, _ = server.accept()
        conn.settimeout(0.5)
        try:
            got.append(conn.recv(100) or b"(connected)")
        except OSError:
            got.append(b"(connected)")
        conn.close()
    return got
