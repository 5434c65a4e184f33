"""Fast per-layer proxies for the exact probe, for models where one RL run per layer is too dear.

`gradient`: sample GRPO rollouts once from the base model, let TRL compute the GRPO loss and its
gradient over a few batches (gradient accumulation, no optimizer step), and score each layer by the
first-order reward gain of an update of that layer alone. Adam's first steps move every weight by
about lr·sign(g), so the first-order gain of layer k is lr·‖g_k‖₁ (plain SGD would give lr·‖g_k‖₂²,
which lets a few large entries dominate). Dividing by the layer's parameter count keeps layer size
from deciding the ranking. Both variants are reported; `score` is the Adam one.

`spectrum`: no rollouts at all. Per weight matrix, the share of singular values above the
Marchenko-Pastur noise edge (sigma from the spectrum's inter-quartile range), divided by the top
singular value, as in the Spectrum paper (Hartford et al., 2024); each matrix type is normalised by
its maximum over layers and a layer's score is the mean over its matrices.

`knockout` (`service.probe.knockout`) is the third fast signal; `service.probe.fast` turns any of
them into a probe report.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from service.models.loading import load_model_and_tokenizer
from service.models.stack import LayerStack, find_decoder_layers, freeze_except
from service.spec.models import LayerAdaptationSpec
from service.training.config import choose_precision, grpo_config_kwargs
from service.training.grpo import build_trainer
from service.training.task import check_task, training_task

GRADIENT_BATCHES = 4


@dataclass
class ProxyResult:
    """Per-layer scores (higher = train first) and what the measurement cost."""

    scores: dict[int, float]
    details: dict[int, dict[str, float]]
    stack_path: str
    num_layers: int
    seconds: float
    step_seconds: float | None = None


class _GradientNorms(TrainerCallback):
    """Reads the accumulated gradient just before the optimizer step, then drops it.

    With `gradient_accumulation_steps = batches` and one optimizer step, TRL's trainer leaves the
    batch-averaged GRPO gradient in `.grad`. Dropping it means the optimizer updates nothing, so every
    rollout comes from the unchanged base model.
    """

    def __init__(self, names_by_layer: dict[int, list[str]]) -> None:
        self.names_by_layer = names_by_layer
        self.norms: dict[int, dict[str, float]] = {}

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        params = dict(kwargs["model"].named_parameters())
        for index, names in self.names_by_layer.items():
            l1 = l2sq = 0.0
            count = 0
            for name in names:
                param = params[name]
                if param.grad is not None:
                    grad = param.grad.detach().float()
                    l1 += float(grad.abs().sum())
                    l2sq += float(grad.pow(2).sum())
                count += param.numel()
            self.norms[index] = {"l1PerParam": l1 / count, "l2sqPerParam": l2sq / count}
        for param in kwargs["model"].parameters():
            param.grad = None


def gradient_scores(
    spec: LayerAdaptationSpec,
    candidates: Sequence[int] | None = None,
    *,
    batches: int = GRADIENT_BATCHES,
    device: str | None = None,
) -> ProxyResult:
    """First-order layer scores from one round of GRPO rollouts and gradients (see module doc)."""
    started = time.perf_counter()
    precision = choose_precision(spec.training.precision, device)
    task = training_task(spec)
    model, tokenizer = load_model_and_tokenizer(
        spec.model, dtype=precision.load_dtype, device=precision.device
    )
    check_task(task, spec, tokenizer)
    stack = find_decoder_layers(model, spec.model.layers_path)
    chosen = list(range(len(stack))) if candidates is None else sorted(candidates)
    names = freeze_except(model, stack, chosen)
    names_by_layer = {i: [n for n in names if n.startswith(stack.prefix(i))] for i in chosen}
    recorder = _GradientNorms(names_by_layer)
    with tempfile.TemporaryDirectory(prefix="layerpilot-grad-") as tmp:
        kwargs = grpo_config_kwargs(spec, Path(tmp), max_steps=1, precision=precision)
        kwargs.update(
            gradient_accumulation_steps=batches,
            save_strategy="no",
            max_grad_norm=0.0,  # no clipping: we want the raw gradient
            logging_steps=10_000,
        )
        trainer = build_trainer(model, tokenizer, task, kwargs, callbacks=[recorder])
        rollout_started = time.perf_counter()
        trainer.train()
        step_seconds = (time.perf_counter() - rollout_started) / batches
    scores = {i: recorder.norms[i]["l1PerParam"] for i in chosen}
    return ProxyResult(
        scores=scores,
        details={i: recorder.norms[i] for i in chosen},
        stack_path=stack.path,
        num_layers=len(stack),
        seconds=time.perf_counter() - started,
        step_seconds=step_seconds,
    )


def spectral_snr(weight: torch.Tensor) -> float:
    """Spectrum's signal-to-noise ratio of one weight matrix, divided by its top singular value.

    Singular values above the noise edge count as signal, those below as noise (their sums'
    ratio), and the result is divided by the top singular value as Spectrum does.

    >>> spectral_snr(torch.zeros(4, 4))
    0.0
    >>> 0 < spectral_snr(torch.randn(64, 32, generator=torch.Generator().manual_seed(0))) < 1
    True
    """
    values = torch.linalg.svdvals(weight.detach().float().cpu())
    top = float(values[0])
    if top == 0.0:
        return 0.0
    q75, q25 = torch.quantile(values, 0.75), torch.quantile(values, 0.25)
    sigma = float(q75 - q25) / 1.349
    rows, cols = weight.shape
    beta = min(rows, cols) / max(rows, cols)
    edge = sigma * (1 + math.sqrt(beta))
    signal = float(values[values > edge].sum())
    noise = float(values[values <= edge].sum())
    snr = signal / noise if noise > 0 else math.inf
    return snr / top


def spectrum_scores(spec: LayerAdaptationSpec, candidates: Sequence[int] | None = None) -> ProxyResult:
    """Weights-only ranking: no rollouts, one SVD per weight matrix of each candidate layer."""
    started = time.perf_counter()
    model, _ = load_model_and_tokenizer(spec.model, device="cpu")
    stack = find_decoder_layers(model, spec.model.layers_path)
    chosen = list(range(len(stack))) if candidates is None else sorted(candidates)
    raw = _matrix_snrs(model, stack, chosen)
    by_kind: dict[str, float] = {}
    for per_layer in raw.values():
        for kind, value in per_layer.items():
            if math.isfinite(value):
                by_kind[kind] = max(by_kind.get(kind, 0.0), value)
    scores: dict[int, float] = {}
    for index, per_layer in raw.items():
        normalised = [
            min(value / by_kind[kind], 1.0) if by_kind.get(kind) else 0.0 for kind, value in per_layer.items()
        ]
        scores[index] = sum(normalised) / len(normalised) if normalised else 0.0
    return ProxyResult(
        scores=scores,
        details={i: {"matrices": float(len(raw[i]))} for i in chosen},
        stack_path=stack.path,
        num_layers=len(stack),
        seconds=time.perf_counter() - started,
    )


def _matrix_snrs(model: torch.nn.Module, stack: LayerStack, chosen: list[int]) -> dict[int, dict[str, float]]:
    params = dict(model.named_parameters())
    out: dict[int, dict[str, float]] = {}
    for index in chosen:
        prefix = stack.prefix(index)
        out[index] = {
            name.removeprefix(prefix): spectral_snr(param)
            for name, param in params.items()
            if name.startswith(prefix) and param.ndim == 2 and min(param.shape) > 1
        }
    return out
