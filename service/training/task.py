"""What a training learns from: prompts and rewards, or episodes of an environment.

`training_task` reads the spec before any model loads (bad data, rewards or environments fail
first); `build_trainer` takes the task as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from service.data import Row, check_chat_template, load_rows, unreadable_characters
from service.environments.episodes import EnvironmentFailed, call_with_timeout
from service.environments.registry import environment_factory
from service.environments.seeds import EpisodeStart, episode_starts
from service.errors import InputError
from service.rewards.base import RewardFunc
from service.rewards.registry import build_rewards
from service.spec.models import AdvantageEstimator, LayerAdaptationSpec
from service.training.config import gigpo_scales
from service.training.gigpo import GiGPO
from service.training.rollout import EpisodeRollout, episode_return

PROBE_OBSERVATIONS = 20  # first observations read for characters the tokenizer cannot read


@dataclass
class Task:
    """TRL's dataset rows, reward functions and weights, the rollout of an agent's episodes, and
    GiGPO's settings when its advantages replace GRPO's."""

    rows: list[Row]
    rewards: tuple[list[RewardFunc], list[float]]
    rollout: EpisodeRollout | None = None
    gigpo: GiGPO | None = None


def training_task(spec: LayerAdaptationSpec, *, held_out: int = 0) -> Task:
    """The task of a spec: its dataset's prompts, or its environment's training episodes, less the
    last `held_out` of them (the calibration items of `learningRateMultiplier: auto`)."""
    funcs, weights = build_rewards(spec.rewards) if spec.rewards else ([], [])
    if spec.environment is None:
        rows = load_rows(spec.prompts)[0]
        return Task(rows[: _kept(len(rows), held_out)], (funcs, weights))
    gigpo = spec.algorithm.advantage_estimator == AdvantageEstimator.gigpo
    factory = environment_factory(spec.environment, state_key=gigpo)
    starts = episode_starts(spec.environment, spec.dataset, "train")
    starts = starts[: _kept(len(starts), held_out)]
    settings = spec.algorithm.gigpo
    return Task(
        rows=[start.as_row(spec.environment.uri) for start in starts],
        rewards=([cast(RewardFunc, episode_return), *funcs], [1.0, *weights]),
        rollout=EpisodeRollout(spec, factory),
        gigpo=GiGPO(settings.step_weight, settings.gamma, gigpo_scales(spec)) if gigpo else None,
    )


def held_out_items(spec: LayerAdaptationSpec, count: int) -> list[Row] | list[EpisodeStart]:
    """The last `count` training items, which `training_task(spec, held_out=count)` leaves out: rows
    of the dataset, or an agent's episode starts."""
    if spec.environment is None:
        rows = load_rows(spec.prompts)[0]
        return rows[_kept(len(rows), count) :]
    starts = episode_starts(spec.environment, spec.dataset, "train")
    return starts[_kept(len(starts), count) :]


def _kept(total: int, held_out: int) -> int:
    """How many training items stay when `held_out` are set aside; at least as many as set aside."""
    if held_out and total < 2 * held_out:
        raise InputError(
            "training.calibration.items",
            f"{held_out} calibration items would leave {total - held_out} of the {total} training items",
            f"lower it to {max(1, total // 4)} or less, or train on a larger dataset",
        )
    return total - held_out


def check_task(task: Task, spec: LayerAdaptationSpec, tokenizer: Any) -> list[str]:
    """Refuse what the tokenizer cannot render; warnings about what it cannot read."""
    if task.rollout is None:
        check_chat_template(task.rows, tokenizer, spec.model.uri, spec.prompts)
        found = unreadable_characters(task.rows, tokenizer, spec.model.uri)
        return [found] if found else []
    environment = task.rollout.environment
    if environment.transcript == "chat" and not getattr(tokenizer, "chat_template", None):
        raise InputError(
            "environment.transcript",
            f"is chat, but the tokenizer of {spec.model.uri} has no chat template",
            "use transcript: plain (or auto)",
        )
    observations: list[Row] = []
    for row in task.rows[:PROBE_OBSERVATIONS]:
        start = EpisodeStart.from_row(row)
        try:
            first = call_with_timeout(
                _first_observation, task.rollout, start, timeout=environment.step_timeout
            )
        except EnvironmentFailed:  # the episodes report a broken environment, one by one
            break
        observations.append({"prompt": first})
    found = unreadable_characters(observations, tokenizer, spec.model.uri)
    return [found.replace("the prompts", "the observations")] if found else []


def _first_observation(rollout: EpisodeRollout, start: EpisodeStart) -> str:
    return str(rollout.factory().reset(start.seed, start.row))
