"""What TRL is asked to do: `GRPOConfig` arguments from the spec, and the precision of a run.

Pure functions of the spec (and the device), so tests compare dicts without training anything.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from service.errors import InputError
from service.spec.models import AdvantageEstimator, LayerAdaptationSpec, LossType, Normalization, Precision

# GRPOConfig fields that the spec owns: setting them through `algorithm.extra` would silently
# contradict the spec, so the error names the spec field to use instead.
SPEC_OWNED = {
    "learning_rate": "algorithm.learningRate",
    "num_generations": "algorithm.numGenerations",
    "max_completion_length": "algorithm.maxCompletionLength",
    "beta": "algorithm.beta",
    "temperature": "algorithm.temperature",
    "loss_type": "algorithm.lossType",
    "max_steps": "training.maxSteps",
    "per_device_train_batch_size": "training.batchSize",
    "seed": "training.seed",
    "save_steps": "training.saveSteps",
    "save_total_limit": "training.saveTotalLimit",
    "gradient_checkpointing": "training.gradientCheckpointing",
    "bf16": "training.precision",
    "fp16": "training.precision",
    "output_dir": "--out",
    "reward_weights": "rewards[].weight",
}

# What each loss type's paper prescribes beyond the loss aggregation itself.
LOSS_DEFAULTS: dict[str, dict[str, Any]] = {
    # Dr. GRPO (Liu et al. 2025): no per-group std scaling (question-difficulty bias), and a
    # constant normaliser instead of per-sequence length (length bias); TRL's "dr_grpo" is the latter.
    LossType.dr_grpo.value: {"scale_rewards": "none"},
    # DAPO (Yu et al. 2025): clip-higher with eps_high = 0.28 and token-level normalisation.
    LossType.dapo.value: {"epsilon_high": 0.28},
    LossType.grpo.value: {"scale_rewards": "group"},
}


@dataclass(frozen=True)
class RunPrecision:
    """How the model is loaded and run: weights dtype, autocast, and device."""

    device: str
    load_dtype: torch.dtype
    bf16: bool


def choose_precision(requested: str, device: str | None = None) -> RunPrecision:
    """Pick dtype and autocast for the device. bfloat16 needs CUDA; CPU always runs float32."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_cuda = device.startswith("cuda")
    bf16_ok = on_cuda and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if requested == Precision.bfloat16.value and not bf16_ok:
        raise InputError(
            "training.precision",
            f"bfloat16 needs a CUDA GPU that supports it; this run is on {device}",
            "use precision: auto or float32",
        )
    use_bf16 = requested == Precision.bfloat16.value or (requested == Precision.auto.value and bf16_ok)
    return RunPrecision(
        device=device, load_dtype=torch.bfloat16 if use_bf16 else torch.float32, bf16=use_bf16
    )


def grpo_config_kwargs(
    spec: LayerAdaptationSpec, output_dir: Path, *, max_steps: int, precision: RunPrecision
) -> dict[str, Any]:
    """The GRPOConfig arguments for a spec: a pure function, so tests compare dicts."""
    algo, train = spec.algorithm, spec.training
    kwargs: dict[str, Any] = {
        "output_dir": str(output_dir),
        "learning_rate": algo.learning_rate,
        "num_generations": algo.num_generations,
        "max_completion_length": algo.max_completion_length,
        "beta": algo.beta,
        "temperature": algo.temperature,
        "loss_type": algo.loss_type,
        "per_device_train_batch_size": train.batch_size,
        "max_steps": max_steps,
        "seed": train.seed,
        "data_seed": train.seed,
        "save_strategy": "steps",
        "save_steps": train.save_steps,
        "save_total_limit": train.save_total_limit,
        "logging_steps": 1,
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": precision.device == "cpu",
        "bf16": precision.bf16,
        "fp16": False,
        # We enable checkpointing ourselves (see `grpo.enable_checkpointing`): TRL/transformers would make
        # the embeddings require grad, sending gradients through every frozen layer below.
        "gradient_checkpointing": False,
        "dataloader_num_workers": 0,
        # Under DDP: frozen layers never reach the reducer and every trained parameter gets a
        # gradient each step, so the extra graph traversal that finds unused parameters is waste.
        "ddp_find_unused_parameters": False,
        "remove_unused_columns": False,
        **LOSS_DEFAULTS[algo.loss_type],
    }
    if algo.advantage_estimator == AdvantageEstimator.gigpo:
        kwargs["scale_rewards"] = "group" if gigpo_scales(spec) else "none"
    if spec.environment is not None:
        # An episode's completion holds up to maxTurns actions (and the environment's answers,
        # masked): Dr. GRPO's constant normaliser is the most the model can write in one.
        kwargs["max_completion_length"] = algo.max_completion_length * spec.environment.max_turns
    kwargs.update(validate_extra(algo.extra))
    return kwargs


def gigpo_scales(spec: LayerAdaptationSpec) -> bool:
    """Whether GiGPO divides both levels' advantages by their group's standard deviation.

    >>> from service.spec.models import AlgorithmSpec
    >>> gigpo_scales(LayerAdaptationSpec(algorithm=AlgorithmSpec(loss_type="dr_grpo")))
    False
    """
    normalization = spec.algorithm.gigpo.normalization
    if normalization == Normalization.auto:
        return bool(LOSS_DEFAULTS[spec.algorithm.loss_type].get("scale_rewards", "group") != "none")
    return bool(normalization == Normalization.mean_std)


def validate_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """Check `algorithm.extra` against TRL's GRPOConfig fields, once, before any model loads."""
    if not extra:
        return {}
    from trl.trainer.grpo_config import GRPOConfig  # deferred: importing TRL takes seconds

    known = {f.name for f in dataclasses.fields(GRPOConfig)}
    for key in extra:
        if key in SPEC_OWNED:
            raise InputError(f"algorithm.extra.{key}", "is set by the spec", f"set {SPEC_OWNED[key]} instead")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean `{close[0]}`?" if close else "see TRL's GRPOConfig for valid names"
            raise InputError(f"algorithm.extra.{key}", "is not a TRL GRPOConfig option", hint)
    if extra.get("use_vllm") and not torch.cuda.is_available():
        raise InputError("algorithm.extra.use_vllm", "vLLM generation needs a CUDA GPU", "remove use_vllm")
    return dict(extra)
