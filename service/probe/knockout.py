"""`knockout`: how much the base model's eval score drops when one decoder layer is skipped.

No training at all: one greedy evaluation of the base model, then one per candidate layer with
that layer replaced by the identity (its input passes straight to the next layer), all on the model
loaded once. A layer the task leans on costs score when it is skipped; published work found
task-critical layers this way. Whether the layers a task leans on are the layers whose RL training
gains most is what `layerpilot probe validate` checks against exact.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from service.environments.registry import environment_factory
from service.evaluation import evaluate_loaded
from service.models.loading import load_model_and_tokenizer
from service.models.stack import find_decoder_layers
from service.probe.proxies import ProxyResult
from service.progress import SILENT, Progress
from service.spec.models import LayerAdaptationSpec
from service.training.config import choose_precision


@contextmanager
def skipped(layer: torch.nn.Module) -> Iterator[None]:
    """Within the block, `layer` hands its input hidden states on unchanged."""

    def identity(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        hidden = args[0] if args else kwargs["hidden_states"]
        if isinstance(output, tuple):  # layers of older architectures return (hidden, extras…)
            return (hidden, *output[1:])
        return hidden

    handle = layer.register_forward_hook(identity, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def knockout_scores(
    spec: LayerAdaptationSpec, candidates: Sequence[int] | None = None, *, progress: Progress = SILENT
) -> ProxyResult:
    """Per candidate layer, S_base − S_without(k) on the eval items (or evaluation episodes)."""
    started = time.perf_counter()
    factory = environment_factory(spec.environment) if spec.environment else None  # before the model loads
    precision = choose_precision(spec.training.precision)
    model, tokenizer = load_model_and_tokenizer(
        spec.model, dtype=precision.load_dtype, device=precision.device
    )
    stack = find_decoder_layers(model, spec.model.layers_path)
    chosen = list(range(len(stack))) if candidates is None else sorted(candidates)
    base = evaluate_loaded(spec, model, tokenizer, factory).score
    scores: dict[int, float] = {}
    details: dict[int, dict[str, float]] = {}
    for done, index in enumerate(chosen):
        progress.update("probe", done, f"knockout of layer {index}")
        with skipped(stack.layers[index]):
            without = evaluate_loaded(spec, model, tokenizer, factory).score
        scores[index] = base - without
        details[index] = {"scoreWithout": without, "baseScore": base}
    return ProxyResult(
        scores=scores,
        details=details,
        stack_path=stack.path,
        num_layers=len(stack),
        seconds=time.perf_counter() - started,
    )
