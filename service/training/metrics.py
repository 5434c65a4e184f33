"""What a training records: TRL's step metrics as `train/*`, and its totals.

Metric names follow one scheme in every run, `section/name` (the other sections: `probe/*` in
`service.probe.recorded`, `eval/*` in `service.evaluation`, `by_layer/*` with step = layer index).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from service.patch import LayerDeltas
from service.progress import StepHook
from service.record import Record
from service.spec.models import LayerAdaptationSpec

TRAIN_METRICS: dict[str, str] = {
    "train/<TRL metric>": "TRL's step metrics (reward, loss, rewards/<name>/mean, …) at each step",
    "train/global_step": "optimizer steps the training ran",
    "train/seconds": "wall time of the training",
    "train/trainable_share": "trained parameters as a share of the model's",
    "by_layer/delta_relative": "relative weight change ‖ΔW‖/‖W‖ of a trained layer, step = layer index",
}
"""The metric names a training records (the reference lists them)."""

_CONSTANT_ZERO = ("clip_ratio/",)  # PPO-style clipping never triggers when each batch is used once
_BOOKKEEPING = ("epoch", "num_tokens")  # the trainer's counters, not learning signals


def trl_metrics(spec: LayerAdaptationSpec, logs: Mapping[str, Any]) -> dict[str, Any]:
    """TRL's metrics as `train/*`, without the ones that only bury the curves that move.

    Clip ratios are left out when every batch is used for a single update (TRL's defaults): the
    policy ratio is then exactly 1, so they are always 0. The trainer's counters (epoch, tokens
    seen) are left out too.

    >>> trl_metrics(LayerAdaptationSpec(), {"reward": 0.5, "clip_ratio/low_mean": 0.0, "epoch": 0.1})
    {'train/reward': 0.5}
    """
    extra = spec.algorithm.extra
    on_policy = int(extra.get("num_iterations", 1)) == 1 and "steps_per_generation" not in extra
    return {
        key if key.startswith("train/") else f"train/{key}": value
        for key, value in logs.items()
        if key not in _BOOKKEEPING and not (on_policy and key.startswith(_CONSTANT_ZERO))
    }


def step_recorder(record: Record, spec: LayerAdaptationSpec) -> StepHook:
    """A step hook appending TRL's metrics to `record` at their global step."""

    def hook(step: int, max_steps: int, logs: dict[str, float]) -> None:
        record.log_metrics(trl_metrics(spec, logs), step=step)

    return hook


def training_summary(seconds: float, global_step: int, trainable: int, total: int) -> dict[str, float]:
    """
    >>> training_summary(12.5, 60, 10, 1000)
    {'train/seconds': 12.5, 'train/global_step': 60, 'train/trainable_share': 0.01}
    """
    return {
        "train/seconds": seconds,
        "train/global_step": global_step,
        "train/trainable_share": trainable / max(total, 1),
    }


def nothing_learned(history: Sequence[dict[str, Any]], deltas: LayerDeltas) -> str | None:
    """Why a run learned nothing, when no step gave GRPO a group whose rewards differed.

    GRPO learns from the differences between a group's rewards; when every group's rewards are
    equal at every step (all 0, typically), every advantage is 0 and the weights do not move.

    >>> found = nothing_learned([{"reward": 0.0, "reward_std": 0.0}] * 3, LayerDeltas({1: 0.0}, {1: 0.0}, {}))
    >>> found.split(", so")[0], nothing_learned([{"reward": 0.5, "reward_std": 0.2}], LayerDeltas({}, {}, {}))
    ('every reward was 0.0 in all 3 steps', None)
    """
    steps = [h for h in history if "reward" in h]
    if not steps or any(float(h.get("reward_std", 1.0)) > 0 for h in steps):
        return None
    values = {round(float(h["reward"]), 6) for h in steps}
    what = f"every reward was {values.pop()}" if len(values) == 1 else "no group's rewards ever differed"
    moved = max(deltas.relative.values(), default=0.0)
    return (
        f"{what} in all {len(steps)} steps, so GRPO had nothing to learn from and the weights did not "
        f"change (relative weight change {moved:.1e}); check that the reward fits the data and the model "
        "can read it (`layerpilot eval` shows completions)"
    )
