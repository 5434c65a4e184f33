"""Multi-turn episodes as TRL's `rollout_func`: TRL does the RL, the episodes are ours.

TRL 1.16's `GRPOTrainer(rollout_func=...)` hands the function the prompts of a batch (each of a
group's G copies in a row, as its sampler repeats them) and takes back token ids: the prompt, the
completion, and an `env_mask` that keeps the environment's tokens out of the loss. Every other key
reaches the reward functions as a column; `episode_return` reads the return from there and logs the
episode metrics. The trainer subclass in `service.training.grpo` keeps the batch's rows, so each
episode starts from its row's seed: a group's G episodes share their initial state.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.environments.episodes import Episode, play_episodes
from service.environments.registry import Factory
from service.environments.seeds import EpisodeStart
from service.environments.transcript import TurnFormat, turn_format
from service.errors import LayerpilotError
from service.spec.models import LayerAdaptationSpec

EPISODE_METRICS: dict[str, str] = {
    "train/episode/success": "share of the step's episodes that reached their goal",
    "train/episode/return": "mean return of the step's episodes",
    "train/episode/turns": "mean actions per episode",
    "train/episode/invalid_actions": "mean actions per episode the environment could not parse",
    "train/episode/env_errors": "episodes the environment broke off (raised or hung) in the step",
}
"""The per-step metrics of an agent's training (the reference lists them)."""

TRANSCRIPTS = "transcripts.jsonl"
SAMPLE_EPISODES = 8


class EpisodeRollout:
    """TRL's `rollout_func` for a spec with an environment."""

    def __init__(self, spec: LayerAdaptationSpec, factory: Factory) -> None:
        assert spec.environment is not None
        self.environment = spec.environment
        self.max_action_tokens = spec.algorithm.max_completion_length
        self.factory = factory
        self.format: TurnFormat | None = None
        self.last_episodes: list[Episode] = []

    def __call__(self, prompts: Sequence[Any], trainer: Any) -> dict[str, Any]:
        rows = trainer.batch_rows
        if len(rows) != len(prompts):
            raise LayerpilotError(f"the rollout got {len(prompts)} prompts for {len(rows)} rows")
        if self.format is None:
            self.format = turn_format(
                trainer.processing_class, self.environment.transcript, self.environment.instructions
            )
        starts = [EpisodeStart.from_row(row) for row in rows]
        episodes = play_episodes(
            trainer.accelerator.unwrap_model(trainer.model),
            self.format,
            [(self.factory(), start.seed, start.row) for start in starts],
            max_turns=self.environment.max_turns,
            max_action_tokens=self.max_action_tokens,
            temperature=trainer.temperature,
            step_timeout=self.environment.step_timeout,
        )
        failed = [episode for episode in episodes if episode.error]
        if failed and len(failed) == len(episodes):
            raise LayerpilotError(
                f"every episode of step {trainer.state.global_step + 1} failed in the environment "
                f"({failed[0].error}); fix {self.environment.uri} (the checkpoints written so far are kept)"
            )
        self.last_episodes = episodes
        return {
            "prompt_ids": [episode.prompt_ids for episode in episodes],
            "completion_ids": [episode.completion_ids for episode in episodes],
            "logprobs": None,
            "env_mask": [episode.env_mask for episode in episodes],
            "episode_return": [episode.episode_return for episode in episodes],
            "episode_success": [float(episode.success) for episode in episodes],
            "episode_turns": [float(episode.turns) for episode in episodes],
            "episode_invalid": [float(episode.invalid_actions) for episode in episodes],
            "episode_error": [float(episode.error is not None) for episode in episodes],
            # what GiGPO reads (service.training.grpo): per action, its state, reward and tokens
            "episode_state_keys": [list(episode.state_keys) for episode in episodes],
            "episode_step_rewards": [list(episode.rewards) for episode in episodes],
            "episode_action_spans": [list(episode.action_spans) for episode in episodes],
        }

    def write_transcripts(self, out_dir: Path) -> Path | None:
        """The last step's first episodes, for people to read (`transcripts.jsonl`)."""
        if not self.last_episodes:
            return None
        path = out_dir / TRANSCRIPTS
        with path.open("w") as handle:
            for episode in self.last_episodes[:SAMPLE_EPISODES]:
                handle.write(json.dumps(episode.summary()) + "\n")
        return path


def _mean(values: Sequence[float]) -> float:
    return sum(values) / max(len(values), 1)


def episode_return(
    completions: Sequence[Any],
    episode_return: Sequence[float],
    episode_success: Sequence[float] = (),
    episode_turns: Sequence[float] = (),
    episode_invalid: Sequence[float] = (),
    episode_error: Sequence[float] = (),
    log_metric: Any = None,
    **_: Any,
) -> list[float]:
    """The episode's return, as played by the rollout (logs the episode metrics of the step)."""
    if log_metric is not None:
        log_metric("episode/success", _mean(episode_success))
        log_metric("episode/return", _mean(episode_return))
        log_metric("episode/turns", _mean(episode_turns))
        log_metric("episode/invalid_actions", _mean(episode_invalid))
        log_metric("episode/env_errors", float(sum(episode_error)))
    return [float(value) for value in episode_return]
