"""GiGPO (Feng et al. 2025, "Group-in-Group Policy Optimization for LLM Agent Training", arXiv 2505.10978).

GRPO gives every token of an episode one advantage: the episode's return normalised within its
group (the G episodes that start from one initial state). GiGPO adds credit per action. Across the
group's episodes, the actions taken from an equal environment state (equal `state_key()`, the
paper's anchor state) form a step group. Each action's discounted return from its step is normalised
within its step group. Each action's tokens then get

    A = A_episode + ω · A_step

and the environment's tokens get none. A step group of one contributes 0, so with all states
distinct, or ω = 0, GiGPO is GRPO. There is no critic and there are no extra rollouts: the
step groups come from the episodes the group played anyway.

TRL computes A_episode, exactly as it does for GRPO. `service.training.grpo` hands it here, with
the episodes' states, rewards and action spans, and gives TRL's loss the (B, T) result.

Three choices follow the paper and verl-agent's reference (`gigpo/core_gigpo.py`):
- A step group is matched by exact state key, within one episode group. An episode that returns to
  a state adds each of its visits.
- The step return is R_t = Σ_{k ≥ t} γ^(k−t) r_k over the rewards of the episode's own later actions.
- One normalisation setting governs both levels: `mean`, or `meanStd` with the sample standard
  deviation, as TRL's episode level uses.

Three differ from verl-agent:
- The episode level normalises over the group's episodes, as the paper's Eq. 3 and GRPO do.
  verl-agent's default normalises over the group's steps, which weights long episodes more.
- The ε guarding the division is TRL's 1e-4, the same at both levels.
- An episode that the environment broke off (raised or hung) takes no part in step groups.
  Its return measures the environment's failure, not the actions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

EPSILON = 1e-4
"""Guards the division by a standard deviation (TRL's, for its episode-level advantages)."""

GIGPO_METRICS: dict[str, str] = {
    "train/gigpo/grouped_actions": "share of the step's actions that share their state with another action "
    "of their group (the rest get no step-level advantage)",
    "train/gigpo/step_advantage": "mean absolute A_step over the step's grouped actions",
}
"""The per-step metrics of a GiGPO training (the reference lists them)."""


@dataclass(frozen=True)
class EpisodeSteps:
    """What GiGPO reads of one episode: per action, the state it was taken in and its reward."""

    state_keys: Sequence[Hashable | None]
    rewards: Sequence[float]
    failed: bool = False


@dataclass(frozen=True)
class StepAdvantages:
    """A_step of every action of every episode, and how many actions shared their state."""

    values: list[list[float]]
    grouped: int
    actions: int

    @property
    def grouped_share(self) -> float:
        return self.grouped / self.actions if self.actions else 0.0

    @property
    def mean_abs(self) -> float:
        """Mean |A_step| over the grouped actions."""
        total = sum(abs(v) for row in self.values for v in row)
        return total / self.grouped if self.grouped else 0.0


def discounted_returns(rewards: Sequence[float], gamma: float) -> list[float]:
    """R_t = r_t + γ · R_{t+1}, from the last action back.

    >>> discounted_returns([0.0, 0.0, 1.0], 0.5)
    [0.25, 0.5, 1.0]
    """
    returns = [0.0] * len(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        running = float(rewards[t]) + gamma * running
        returns[t] = running
    return returns


def normalised(values: Sequence[float], *, scale: bool) -> list[float]:
    """Values minus their mean, divided by their sample standard deviation (+ ε) when `scale`.

    A group of one has no one to compare with: its advantage is 0.

    >>> normalised([1.0, 0.0, 0.0, 1.0], scale=False)
    [0.5, -0.5, -0.5, 0.5]
    >>> normalised([3.0], scale=True)
    [0.0]
    """
    if len(values) < 2:
        return [0.0] * len(values)
    mean = sum(values) / len(values)
    centred = [v - mean for v in values]
    if not scale:
        return centred
    std = math.sqrt(sum(c * c for c in centred) / (len(values) - 1))
    return [c / (std + EPSILON) for c in centred]


def step_advantages(
    episodes: Sequence[EpisodeSteps], group_size: int, gamma: float, *, scale: bool
) -> StepAdvantages:
    """A_step for every action: its discounted return, normalised within its step group.

    Episodes come as TRL orders them: each run of `group_size` consecutive episodes is one group.
    Actions without a state key, and the actions of a failed episode, get 0.
    """
    values = [[0.0] * len(episode.state_keys) for episode in episodes]
    grouped = 0
    for first in range(0, len(episodes), group_size):
        step_groups: dict[Hashable, list[tuple[int, int, float]]] = defaultdict(list)
        for i in range(first, min(first + group_size, len(episodes))):
            episode = episodes[i]
            if episode.failed:
                continue
            returns = discounted_returns(episode.rewards, gamma)
            for t, (key, value) in enumerate(zip(episode.state_keys, returns, strict=True)):
                if key is not None:
                    step_groups[key].append((i, t, value))
        for members in step_groups.values():
            if len(members) > 1:
                grouped += len(members)
            advantages = normalised([value for _, _, value in members], scale=scale)
            for (i, t, _), advantage in zip(members, advantages, strict=True):
                values[i][t] = advantage
    return StepAdvantages(values, grouped, sum(len(row) for row in values))


def token_advantages(
    episode: torch.Tensor,
    steps: Sequence[Sequence[float]],
    spans: Sequence[Sequence[tuple[int, int]]],
    weight: float,
    width: int,
) -> torch.Tensor:
    """(B, width): each action's tokens get A_episode + ω · A_step; every other token gets 0.

    >>> token_advantages(torch.tensor([1.0]), [[0.5, -0.5]], [[(0, 2), (3, 4)]], 1.0, 5)
    tensor([[1.5000, 1.5000, 0.0000, 0.5000, 0.0000]])
    """
    out = torch.zeros((len(spans), width), dtype=episode.dtype, device=episode.device)
    for row, (row_steps, row_spans) in enumerate(zip(steps, spans, strict=True)):
        for value, (start, end) in zip(row_steps, row_spans, strict=True):
            out[row, start:end] = episode[row] + weight * value
    return out


@dataclass(frozen=True)
class GiGPO:
    """GiGPO's settings as a training applies them (`algorithm.gigpo` in the spec)."""

    weight: float
    gamma: float
    scale: bool

    def advantages(
        self,
        episode: torch.Tensor,
        episodes: Sequence[EpisodeSteps],
        first: int,
        spans: Sequence[Sequence[tuple[int, int]]],
        group_size: int,
        width: int,
    ) -> tuple[torch.Tensor, StepAdvantages]:
        """The (B, width) advantages of this process's episodes `first … first + B − 1` among all
        `episodes` of the batch (step groups may span processes), given their A_episode."""
        steps = step_advantages(episodes, group_size, self.gamma, scale=self.scale)
        mine = steps.values[first : first + len(spans)]
        return token_advantages(episode, mine, spans, self.weight, width), steps
