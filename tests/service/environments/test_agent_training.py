"""An agent trains through TRL's real GRPOTrainer: only its layers change, every group of episodes
starts from one state, the environment's tokens carry no gradient, and a broken environment stops
the run with its checkpoints kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerCallback

from service.errors import LayerpilotError
from service.record import Record
from service.spec.demo import demo_spec
from service.spec.models import LayerAdaptationSpec
from service.training.trainer import train
from tests.service.environments.envs import Breaks, Resets

ENVS = "tests.service.environments.envs"


def _spec(
    uri: str, algorithm: dict[str, Any] | None = None, max_turns: int = 4, **training: Any
) -> LayerAdaptationSpec:
    spec = demo_spec("agent")
    data = spec.model_dump(mode="json", by_alias=True)
    data["environment"].update(uri=uri, trainEpisodes=40, evalEpisodes=8, maxTurns=max_turns)
    data["training"].update(batchSize=16, **training)
    data["algorithm"].update(algorithm or {})
    return LayerAdaptationSpec.model_validate(data)


def _scored_batch(model: Any, tokenizer: Any, spec: LayerAdaptationSpec) -> tuple[Any, dict[str, Any]]:
    """A trainer over `model` and TRL's scored batch of two groups of 8 episodes (torch seed 0)."""
    from service.training.config import choose_precision, grpo_config_kwargs
    from service.training.grpo import build_trainer
    from service.training.task import training_task

    task = training_task(spec)
    kwargs = grpo_config_kwargs(spec, Path("/tmp/unused"), max_steps=1, precision=choose_precision("float32"))
    trainer = build_trainer(model, tokenizer, task, kwargs)
    torch.manual_seed(0)
    # TRL writes each episode's columns into its row: one dict per row, as its data loader gives them
    batch = [dict(task.rows[2]) for _ in range(8)] + [dict(task.rows[3]) for _ in range(8)]
    return trainer, trainer._generate_and_score_completions(batch)


def _loss_gradient_per_token(model: Any, trainer: Any, inputs: dict[str, Any]) -> torch.Tensor:
    """|∂loss/∂h| of the hidden state predicting each completion token, (B, T)."""
    captured: list[torch.Tensor] = []

    def keep(module: Any, args: Any, output: torch.Tensor) -> None:
        output.retain_grad()
        captured.append(output)

    # TRL 1.16 scores tokens with a fused head: the last hidden state at position t is what predicts
    # token t + 1, and nothing else reads it, so its gradient is that token's share of the loss.
    handle = model.model.norm.register_forward_hook(keep)
    trainer.compute_loss(model, inputs).backward()
    handle.remove()
    hidden = captured[-1]  # (B, prompt + completion, H)
    start = inputs["prompt_ids"].shape[1] - 1
    assert hidden.grad is not None
    return hidden.grad[:, start : start + inputs["completion_ids"].shape[1]].abs().sum(-1)


def test_an_agent_trains_only_its_layers_and_records_its_episodes(tmp_path: Path) -> None:
    Resets.seen.clear()
    spec = _spec(f"{ENVS}:Resets")
    out = tmp_path / "run"
    with Record.start(out, "train") as record:
        result = train(spec, [3], out, max_steps=2, record=record)
    assert list(result.deltas.relative) == [3] and result.deltas.relative[3] > 0
    # 2 steps × 2 groups of 8 episodes; each group's episodes start from one seed, one first grid
    played = Resets.seen[-32:]  # (before them: the first observations read for unknown characters)
    groups = [played[i : i + 8] for i in range(0, 32, 8)]
    assert all(len(set(group)) == 1 for group in groups), groups
    assert len({group[0][0] for group in groups}) > 1
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    episode = [s["metrics"] for s in steps if "train/episode/success" in s["metrics"]]
    assert len(episode) == 2
    assert {"train/episode/return", "train/episode/turns", "train/episode/invalid_actions"} <= set(episode[0])
    assert episode[0]["train/episode/env_errors"] == 0
    transcripts = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    assert transcripts and transcripts[0]["transcript"][0]["role"] == "observation"
    assert (out / "transcripts.jsonl", "transcripts") in record.artifacts()


def test_the_environments_tokens_carry_no_gradient_in_the_loss() -> None:
    from service.models.loading import load_model_and_tokenizer
    from service.models.stack import find_decoder_layers, freeze_except

    spec = _spec("builtin:gridworld")
    model, tokenizer = load_model_and_tokenizer(spec.model)
    freeze_except(model, find_decoder_layers(model), [5])
    trainer, inputs = _scored_batch(model, tokenizer, spec)
    inputs["advantages"] = torch.ones_like(inputs["advantages"])  # every action token is pushed
    grad = _loss_gradient_per_token(model, trainer, inputs)
    mask = inputs["completion_mask"] * inputs["tool_mask"]
    env_tokens = (inputs["completion_mask"] == 1) & (inputs["tool_mask"] == 0)
    assert env_tokens.any() and (mask == 1).any()
    assert grad[env_tokens].max() == 0, "an environment token got a gradient"
    assert (grad[mask == 1] > 0).all(), "every action token gets one"


def test_gigpo_adds_step_credit_to_trls_own_grpo_advantages_and_none_to_the_environment() -> None:
    from service.models.loading import load_model_and_tokenizer
    from service.models.stack import find_decoder_layers, freeze_except
    from service.training.gigpo import EpisodeSteps, step_advantages

    spec = _spec("builtin:gridworld")
    model, tokenizer = load_model_and_tokenizer(spec.model)
    freeze_except(model, find_decoder_layers(model), [5])
    _, grpo = _scored_batch(model, tokenizer, spec)
    action = (grpo["completion_mask"] * grpo["tool_mask"]) == 1
    episode = grpo["advantages"].unsqueeze(1).expand(action.shape)

    # ω = 0: GRPO's advantages exactly, on the same episodes; nothing on the environment's tokens
    gigpo = {"advantageEstimator": "gigpo", "gigpo": {"stepWeight": 0.0}}
    _, same = _scored_batch(model, tokenizer, _spec("builtin:gridworld", gigpo))
    assert torch.equal(same["completion_ids"], grpo["completion_ids"])
    assert same["advantages"].shape == action.shape
    assert torch.equal(same["advantages"][action], episode[action])
    assert same["advantages"][~action].abs().max() == 0

    # ω = 1: each action adds its step-level advantage, from the episodes TRL handed the rewards
    gigpo = {"advantageEstimator": "gigpo", "gigpo": {"stepWeight": 1.0, "gamma": 0.9}}
    trainer, inputs = _scored_batch(model, tokenizer, _spec("builtin:gridworld", gigpo))
    rows = trainer.batch_rows
    steps = step_advantages(
        [EpisodeSteps(r["episode_state_keys"], r["episode_step_rewards"]) for r in rows], 8, 0.9, scale=True
    )
    assert steps.grouped > 0, "the demo's episodes share states within their groups"
    expected = torch.zeros_like(inputs["advantages"])
    for row, (values, spans) in enumerate(
        zip(steps.values, [r["episode_action_spans"] for r in rows], strict=True)
    ):
        for value, (start, end) in zip(values, spans, strict=True):
            expected[row, start:end] = grpo["advantages"][row] + value
    assert torch.allclose(inputs["advantages"], expected)
    assert not torch.equal(inputs["advantages"][action], episode[action])
    assert trainer._metrics["train"]["gigpo/grouped_actions"] == [steps.grouped_share]
    grad = _loss_gradient_per_token(model, trainer, inputs)
    env_tokens = (inputs["completion_mask"] == 1) & (inputs["tool_mask"] == 0)
    assert env_tokens.any() and grad[env_tokens].max() == 0, "an environment token got a gradient"
    assert grad[action].max() > 0


class _BreakAfter(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if state.global_step >= self.step:
            Breaks.fail = True


def test_a_step_whose_every_episode_fails_stops_the_run_and_keeps_its_checkpoints(tmp_path: Path) -> None:
    Breaks.fail = False
    spec = _spec(f"{ENVS}:Breaks", saveSteps=1)
    try:
        with pytest.raises(LayerpilotError) as caught:
            train(spec, [2], tmp_path / "run", max_steps=4, callbacks=[_BreakAfter(2)])
    finally:
        Breaks.fail = False
    assert (
        "every episode of step 3 failed in the environment (step: RuntimeError: the simulator crashed)"
        in str(caught.value)
    )
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").is_dir()


@pytest.mark.heavy
def test_gigpo_probes_by_gradient_and_by_halving(tmp_path: Path) -> None:
    from service.probe.proxies import gradient_scores
    from service.probe.run import run_probe

    spec = _spec("builtin:gridworld", {"advantageEstimator": "gigpo"}, max_turns=6)
    spec.probe.layers = [1, 4]
    spec.probe.steps = 2
    proxy = gradient_scores(spec, [1, 4], batches=1)
    assert all(score > 0 for score in proxy.scores.values()), proxy.scores
    report = run_probe(spec, tmp_path / "halving", mode="halving", parallel=1)
    assert sorted(layer.index for layer in report.layers) == [1, 4]
    assert report.selected and set(report.selected) <= {1, 4}
