"""GiGPO's advantages, pinned by hand and against the paper's formulas as verl-agent lays them out.

The trainer-level checks (TRL's own episode advantages, ω = 0 equals GRPO, no gradient on the
environment's tokens) are in tests/service/environments/test_agent_training.py.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
import torch

from service.training.gigpo import EPSILON, EpisodeSteps, GiGPO, step_advantages, token_advantages

GAMMA = 0.9

# Two groups of three episodes. Group one: e0 succeeds at its third action, e1 never does and
# bumps into a wall at s1 (visits it twice), e2 succeeds at its second. Group two: e4 broke off
# in the environment (its step raised: no reward for its action), e5's last state has no key.
BATCH = [
    EpisodeSteps(["s0", "s1", "s2"], [0.0, 0.0, 1.0]),
    EpisodeSteps(["s0", "s1", "s1"], [0.0, 0.0, 0.0]),
    EpisodeSteps(["s0", "s4"], [0.0, 1.0]),
    EpisodeSteps(["t0", "t1"], [0.0, 1.0]),
    EpisodeSteps(["t0"], [], failed=True),
    EpisodeSteps(["t0", None], [0.0, 0.0]),
]


def test_step_advantages_by_hand_normalised_by_the_mean() -> None:
    steps = step_advantages(BATCH, 3, GAMMA, scale=False)
    # Discounted returns: e0 [0.81, 0.9, 1], e1 [0, 0, 0], e2 [0.9, 1], e3 [0.9, 1], e5 [0, 0].
    # Step group s0: {0.81, 0, 0.9}, mean 0.57. s1: {0.9, 0, 0} (e1 twice), mean 0.3.
    # t0: {0.9, 0} without the failed e4, mean 0.45. s2, s4, t1: one member each. e5's None: no group.
    expected = [[0.24, 0.6, 0.0], [-0.57, -0.3, -0.3], [0.33, 0.0], [0.45, 0.0], [0.0], [-0.45, 0.0]]
    for got, want in zip(steps.values, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-9)
    # grouped: 3 (s0) + 3 (s1) + 2 (t0) of 13 actions
    assert (steps.grouped, steps.actions) == (8, 13)
    assert steps.mean_abs == pytest.approx((0.24 + 0.57 + 0.33 + 0.6 + 0.3 + 0.3 + 0.45 + 0.45) / 8)


def test_step_advantages_by_hand_normalised_by_mean_and_standard_deviation() -> None:
    steps = step_advantages(BATCH, 3, GAMMA, scale=True)
    s0 = math.sqrt((0.24**2 + 0.57**2 + 0.33**2) / 2)  # sample standard deviations
    s1 = math.sqrt((0.6**2 + 0.3**2 + 0.3**2) / 2)
    t0 = math.sqrt((0.45**2 + 0.45**2) / 1)
    expected = [
        [0.24 / (s0 + EPSILON), 0.6 / (s1 + EPSILON), 0.0],
        [-0.57 / (s0 + EPSILON), -0.3 / (s1 + EPSILON), -0.3 / (s1 + EPSILON)],
        [0.33 / (s0 + EPSILON), 0.0],
        [0.45 / (t0 + EPSILON), 0.0],
        [0.0],
        [-0.45 / (t0 + EPSILON), 0.0],
    ]
    for got, want in zip(steps.values, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-9)


def test_a_step_group_needs_the_same_episode_group() -> None:
    # the same state keys in two different groups are different anchor states
    twins = [EpisodeSteps(["a"], [1.0]), EpisodeSteps(["a"], [0.0])]
    assert step_advantages(twins, 1, GAMMA, scale=False).values == [[0.0], [0.0]]
    assert step_advantages(twins, 2, GAMMA, scale=False).values == [[0.5], [-0.5]]


def test_all_states_distinct_leaves_no_step_term() -> None:
    distinct = [EpisodeSteps([f"{i}-{t}" for t in range(3)], [0.0, 0.0, float(i)]) for i in range(4)]
    steps = step_advantages(distinct, 4, GAMMA, scale=True)
    assert steps.values == [[0.0] * 3] * 4 and steps.grouped == 0
    episode = torch.tensor([1.5, -0.5, -0.5, -0.5])
    spans = [[(0, 2), (3, 5), (6, 7)]] * 4
    combined = token_advantages(episode, steps.values, spans, 1.0, 8)
    assert torch.equal(combined, token_advantages(episode, steps.values, spans, 0.0, 8))


def test_tokens_get_episode_plus_weighted_step_advantage_and_the_environments_get_none() -> None:
    episode = torch.tensor([0.7, -1.2, 0.4, 0.0, 1.0, -1.0])
    spans = [
        [(0, 2), (4, 5), (7, 9)],
        [(0, 1), (3, 4), (6, 8)],
        [(1, 3), (5, 6)],
        [(0, 1), (2, 3)],
        [(0, 2)],
        [],
    ]
    rows = [
        EpisodeSteps(e.state_keys, e.rewards, e.failed) if spans[i] else EpisodeSteps([], [])
        for i, e in enumerate(BATCH)
    ]
    steps = step_advantages(rows, 3, GAMMA, scale=False)
    advantages = token_advantages(episode, steps.values, spans, 0.5, 10)
    assert advantages.shape == (6, 10)
    action = torch.zeros_like(advantages, dtype=torch.bool)
    for row, row_spans in enumerate(spans):
        for k, (start, end) in enumerate(row_spans):
            action[row, start:end] = True
            want = float(episode[row]) + 0.5 * steps.values[row][k]
            assert advantages[row, start:end].tolist() == pytest.approx([want] * (end - start))
    assert advantages[~action].abs().max() == 0  # the environment's tokens and the padding


def test_with_no_step_weight_the_advantages_are_the_episodes_exactly() -> None:
    episode = torch.tensor([0.7, -1.2, 0.4, 0.3, -0.3, 0.0])
    spans = [[(2 * t, 2 * t + 1) for t in range(len(e.state_keys))] for e in BATCH]
    got, _ = GiGPO(weight=0.0, gamma=GAMMA, scale=True).advantages(episode, BATCH, 0, spans, 3, 8)
    for row, row_spans in enumerate(spans):
        for start, end in row_spans:
            assert torch.equal(got[row, start:end], episode[row].expand(end - start))


def test_a_process_keeps_its_own_rows_of_a_group_that_spans_processes() -> None:
    # groups of four over two processes of six rows: rows 4-7 are one group, split 4-5 | 6-7
    batch = [EpisodeSteps(["a"], [0.0])] * 4
    batch += [EpisodeSteps(["s"], [reward]) for reward in (1.0, 1.0, 0.0, 0.0)]
    batch += [EpisodeSteps(["b"], [0.0])] * 4
    gigpo = GiGPO(weight=1.0, gamma=GAMMA, scale=False)
    second, _ = gigpo.advantages(torch.zeros(6), batch, 6, [[(0, 1)]] * 6, 4, 2)
    assert second[:, 0].tolist() == [-0.5, -0.5, 0.0, 0.0, 0.0, 0.0]


# --- The paper's formulas, laid out as verl-agent lays out its batch: one row per action. ----------


def _paper_gigpo(rows: list[dict[str, Any]], gamma: float, omega: float, mode: str) -> list[float]:
    """GiGPO's advantage of every row (one action), re-derived from arXiv 2505.10978.

    Each row holds its episode group `uid`, its trajectory `traj`, its anchor observation `anchor`,
    its own reward and the episode's return. Eq. 3 normalises episode returns over the group's
    trajectories; Eq. 5 discounts the rewards of a trajectory's later actions; Eq. 6 groups
    rows by (uid, anchor); Eq. 7 normalises the discounted returns within each such group; Eq. 8
    adds them up with weight ω. `mode` is "mean_norm" (F_norm = 1) or "mean_std_norm".
    """

    def norm(values: np.ndarray) -> np.ndarray:
        if len(values) == 1:
            return np.zeros(1)
        centred = values - values.mean()
        return centred / (values.std(ddof=1) + EPSILON) if mode == "mean_std_norm" else centred

    episode = np.zeros(len(rows))
    returns = {}
    by_uid: dict[Any, dict[Any, float]] = defaultdict(dict)
    for row in rows:
        by_uid[row["uid"]][row["traj"]] = row["episode_return"]
    for uid, trajectories in by_uid.items():
        names = list(trajectories)
        scores = dict(zip(names, norm(np.array([trajectories[n] for n in names])), strict=True))
        for i, row in enumerate(rows):
            if row["uid"] == uid:
                episode[i] = scores[row["traj"]]
    for traj in {row["traj"] for row in rows}:
        indices = [i for i, row in enumerate(rows) if row["traj"] == traj]
        running = 0.0
        for i in reversed(indices):
            running = rows[i]["reward"] + gamma * running
            returns[i] = running
    step = np.zeros(len(rows))
    clusters: dict[tuple[Any, Any], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        clusters[(row["uid"], row["anchor"])].append(i)
    for members in clusters.values():
        step[members] = norm(np.array([returns[i] for i in members]))
    return list(episode + omega * step)


@pytest.mark.parametrize("mode", ["mean_norm", "mean_std_norm"])
@pytest.mark.parametrize("omega", [0.0, 0.5, 1.0])
def test_the_same_batch_through_the_papers_formulas_gives_the_same_advantages(
    mode: str, omega: float
) -> None:
    rng = np.random.default_rng(7)
    episodes: list[EpisodeSteps] = []
    for _ in range(4 * 5):  # four groups of five: a random walk over few states, reward at state 3
        turns = int(rng.integers(1, 6))
        states = [int(s) for s in rng.integers(0, 4, size=turns)]
        episodes.append(EpisodeSteps([f"x{s}" for s in states], [float(s == 3) for s in states]))
    rows = []
    for e, episode in enumerate(episodes):
        for key, reward in zip(episode.state_keys, episode.rewards, strict=True):
            row = {"uid": e // 5, "traj": e, "anchor": key, "reward": reward}
            rows.append({**row, "episode_return": sum(episode.rewards)})
    scale = mode == "mean_std_norm"
    returns = torch.tensor([sum(e.rewards) for e in episodes])
    grouped = returns.view(-1, 5)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    episode_adv = (centred / (grouped.std(dim=1, keepdim=True) + EPSILON) if scale else centred).flatten()
    spans = [[(t, t + 1) for t in range(len(e.state_keys))] for e in episodes]
    ours, _ = GiGPO(weight=omega, gamma=GAMMA, scale=scale).advantages(episode_adv, episodes, 0, spans, 5, 6)
    per_action = [
        float(ours[e, t]) for e, episode in enumerate(episodes) for t in range(len(episode.state_keys))
    ]
    assert per_action == pytest.approx(_paper_gigpo(rows, GAMMA, omega, mode), abs=1e-5)
