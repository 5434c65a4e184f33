"""Greedy evaluation: the mean weighted reward of base or base + patch on the held-out rows.

Greedy decoding with fixed batching makes the score deterministic for a given model and data, so
two scores differ only because the weights differ.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from service.data import Row, check_chat_template, is_conversation, load_rows
from service.environments.episodes import Episode, play_episodes
from service.environments.registry import Factory, environment_factory
from service.environments.seeds import EpisodeStart, episode_starts
from service.environments.transcript import turn_format
from service.fields import Fields
from service.models.loading import evaluating
from service.patch import load_patched_model, read_patch
from service.progress import SILENT, Progress
from service.rewards.base import RewardFunc
from service.rewards.registry import build_rewards
from service.spec.models import LayerAdaptationSpec


@dataclass
class EvalResult:
    """Score in [min reward, max reward]; for a single 0/1 reward it is the accuracy."""

    score: float
    num_items: int
    rewards: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    item_scores: list[float] = field(default_factory=list)  # per eval item, in order (for intervals)

    def to_json(self) -> dict[str, Any]:
        return EVAL_RESULT_FIELDS.json(self)


EVAL_RESULT_FIELDS: Fields[EvalResult] = Fields(
    {
        "score": (
            "mean weighted reward over the eval items (for one 0/1 reward: the accuracy)",
            lambda r: r.score,
        ),
        "numItems": ("evaluation items", lambda r: r.num_items),
        "rewards": ("the mean of each reward", lambda r: r.rewards),
        "seconds": ("wall time of the evaluation", lambda r: r.seconds),
        "samples": (
            "the first items: prompt, greedy completion, reference answer (for an agent: seed, outcome and "
            "transcript of the first episodes)",
            lambda r: r.samples,
        ),
    }
)
"""Every field of `layerpilot eval --json` and of `eval_after.json` (the reference is generated from this)."""


def render_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Any) -> str:
    """A text prompt as it is; a conversation through the tokenizer's chat template, ready for the
    assistant's answer (as TRL renders it for training)."""
    if not is_conversation(prompt):
        return str(prompt)
    return str(tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True))


@torch.no_grad()
def generate_greedy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Any],
    *,
    max_new_tokens: int,
    batch_size: int = 64,
    progress: Progress = SILENT,
) -> list[str]:
    """Greedy completions, decoded without special tokens, in prompt order."""
    device = next(model.parameters()).device
    out: list[str] = []
    with evaluating(model):
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            chunk = [render_prompt(tokenizer, prompt) for prompt in batch]
            # a rendered conversation already holds the template's special tokens
            special = not any(is_conversation(prompt) for prompt in batch)
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=special).to(device)
            generated = cast(Any, model).generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
            )
            new_tokens = generated[:, enc["input_ids"].shape[1] :]
            out.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
            progress.update("eval", len(out))
    return out


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[Row],
    reward_funcs: list[RewardFunc],
    weights: list[float],
    *,
    max_new_tokens: int,
    num_samples: int = 3,
    progress: Progress = SILENT,
) -> EvalResult:
    """Score a loaded model on `rows` with the spec's rewards."""
    started = time.perf_counter()
    check_chat_template(rows, tokenizer, str(getattr(model.config, "_name_or_path", "") or "the model"))
    prompts = [row["prompt"] for row in rows]
    progress.start("eval", len(prompts))
    completions = generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new_tokens, progress=progress)
    columns = {key: [row.get(key) for row in rows] for key in rows[0]} if rows else {}
    columns.pop("prompt", None)
    per_reward: dict[str, float] = {}
    total = [0.0] * len(rows)
    for func, weight in zip(reward_funcs, weights, strict=True):
        values = func(prompts=prompts, completions=completions, completion_ids=None, **columns)
        scores = [float(v) if v is not None else 0.0 for v in values]
        per_reward[func.__name__] = sum(scores) / max(len(scores), 1)
        total = [t + weight * s for t, s in zip(total, scores, strict=True)]
    weight_sum = sum(weights) or 1.0
    score = sum(total) / weight_sum / max(len(rows), 1)
    samples = [
        {"prompt": p, "completion": c, "answer": str(r.get("answer"))}
        for p, c, r in list(zip(prompts, completions, rows, strict=True))[:num_samples]
    ]
    progress.finish("eval", f"score {score:.4f}")
    return EvalResult(
        item_scores=[t / weight_sum for t in total],
        score=score,
        num_items=len(rows),
        rewards=per_reward,
        seconds=round(time.perf_counter() - started, 3),
        samples=samples,
    )


def evaluate(
    spec: LayerAdaptationSpec, patch_dir: Path | None = None, *, progress: Progress = SILENT
) -> EvalResult:
    """Score the spec's base model, or base + the patch in `patch_dir`, on the eval rows (or, for an
    agent, on its evaluation episodes)."""
    factory = environment_factory(spec.environment) if spec.environment else None  # before the model loads
    model, tokenizer = load_patched_model(spec.model, read_patch(patch_dir) if patch_dir else None)
    return evaluate_loaded(spec, model, tokenizer, factory, progress=progress)


def evaluate_loaded(
    spec: LayerAdaptationSpec,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    factory: Factory | None,
    *,
    items: list[Row] | list[EpisodeStart] | None = None,
    progress: Progress = SILENT,
) -> EvalResult:
    """`evaluate` on a model already loaded (`factory`: the spec's environment, for an agent), on the
    eval items or on other `items` of the same kind (rows, or an agent's episode starts)."""
    if factory is not None:
        starts = cast(list[EpisodeStart], items) if items is not None else None
        return evaluate_episodes(model, tokenizer, spec, factory, starts=starts, progress=progress)
    eval_rows = cast(list[Row], items) if items is not None else load_rows(spec.prompts)[1]
    check_chat_template(eval_rows, tokenizer, spec.model.uri, spec.prompts)
    funcs, weights = build_rewards(spec.rewards)
    return evaluate_model(
        model,
        tokenizer,
        eval_rows,
        funcs,
        weights,
        max_new_tokens=spec.algorithm.max_completion_length,
        progress=progress,
    )


EPISODE_BATCH = 64  # evaluation episodes played at once (bounds the key-value cache)


def evaluate_episodes(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    spec: LayerAdaptationSpec,
    factory: Factory,
    *,
    starts: list[EpisodeStart] | None = None,
    num_samples: int = 3,
    progress: Progress = SILENT,
) -> EvalResult:
    """Success rate of greedy episodes from the evaluation seeds (or from `starts`); `rewards` holds
    the mean return, turns and invalid actions, and how many episodes the environment broke off."""
    environment = spec.environment
    assert environment is not None
    started = time.perf_counter()
    fmt = turn_format(tokenizer, environment.transcript, environment.instructions)
    if starts is None:
        starts = episode_starts(environment, spec.dataset, "eval")
    progress.start("eval", len(starts))
    episodes: list[Episode] = []
    for first in range(0, len(starts), EPISODE_BATCH):
        batch = starts[first : first + EPISODE_BATCH]
        episodes += play_episodes(
            model,
            fmt,
            [(factory(), start.seed, start.row) for start in batch],
            max_turns=environment.max_turns,
            max_action_tokens=spec.algorithm.max_completion_length,
            temperature=None,
            step_timeout=environment.step_timeout,
        )
        progress.update("eval", len(episodes))
    successes = [float(episode.success) for episode in episodes]
    count = max(len(episodes), 1)
    score = sum(successes) / count
    progress.finish("eval", f"success {score:.4f}")
    return EvalResult(
        score=score,
        num_items=len(episodes),
        rewards={
            "success": score,
            "return": sum(e.episode_return for e in episodes) / count,
            "turns": sum(e.turns for e in episodes) / count,
            "invalid_actions": sum(e.invalid_actions for e in episodes) / count,
            "env_errors": float(sum(e.error is not None for e in episodes)),
        },
        seconds=round(time.perf_counter() - started, 3),
        samples=[episode.summary() for episode in episodes[:num_samples]],
        item_scores=successes,
    )


EVAL_METRICS: dict[str, str] = {
    "eval/before": "eval score of the base model",
    "eval/after": "eval score of base + layer patch",
    "eval/gain": "eval/after − eval/before",
    "eval/items": "evaluation items scored",
}
"""The metric names an evaluation records (the reference lists them)."""


def evaluation_summary(before: float, after: float, items: int) -> dict[str, float]:
    """
    >>> evaluation_summary(0.25, 0.5, 300)
    {'eval/before': 0.25, 'eval/after': 0.5, 'eval/gain': 0.25, 'eval/items': 300}
    """
    return {"eval/before": before, "eval/after": after, "eval/gain": after - before, "eval/items": items}
