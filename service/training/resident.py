"""A model loaded once and trained many times, one set of layers at a time: a probe worker's.

A probe runs one training per unit (`base`, `full`, every layer, every halving rung), each from the
base weights. Loading the model, and for a GGUF file dequantising it, is the fixed cost of every
unit; for an 8B model on a GPU it is tens of seconds. `train(..., resident=...)` trains the model
held here in place instead of loading it; the unit evaluates it as trained, and `restore()` puts
back the base weights of the layers it trained (read from the model's files, as a training's
deltas are, or from the copy a training keeps when the files do not hold them) and undoes what the
training changed around them. The next unit then starts from exactly the model a fresh load gives:
its results are bit-for-bit those of a unit that loads the model itself (tests compare partials).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from service.models.loading import load_model_and_tokenizer
from service.models.stack import LayerStack
from service.spec.models import ModelSpec
from service.training.config import RunPrecision


@dataclass
class _Trained:
    """What one training changed: the layers it trained, and their base weights."""

    stack: LayerStack
    layers: list[int]
    base_state: Mapping[str, torch.Tensor]
    settled: bool = False


@dataclass
class ResidentModel:
    """The model and tokenizer one process keeps loaded across trainings (see the module)."""

    key: tuple[str, ...] | None = None
    precision: RunPrecision | None = None
    model: Any = None
    tokenizer: Any = None
    use_cache: Any = None  # the loaded config's, which activation checkpointing turns off
    _trained: _Trained | None = field(default=None, repr=False)

    def take(self, spec: ModelSpec, precision: RunPrecision) -> tuple[Any, Any]:
        """The model, loaded now unless it already is with these settings, at its base weights."""
        self.restore()
        key = (spec.model_dump_json(), precision.device, str(precision.load_dtype))
        if self.key != key:
            self.release()
            self.model, self.tokenizer = load_model_and_tokenizer(
                spec, dtype=precision.load_dtype, device=precision.device
            )
            self.key, self.precision = key, precision
            self.use_cache = self.model.config.use_cache
        return self.model, self.tokenizer

    def training(self, stack: LayerStack, layers: list[int], base_state: Mapping[str, torch.Tensor]) -> None:
        """A training of `layers` begins; `base_state` holds their base weights by parameter name."""
        self._trained = _Trained(stack, list(layers), base_state)

    @property
    def holds_training(self) -> bool:
        """Whether the model holds a training's weights (evaluate it, then `restore()`)."""
        return self._trained is not None

    def settle(self) -> None:
        """The trained model as a fresh load with its patch applied would be: trained layers in the
        load dtype, no activation checkpointing, the key-value cache as configured, no gradients,
        accelerate's mixed-precision wrapper gone, in eval mode."""
        trained = self._trained
        if trained is None or trained.settled:
            return
        model = self.model
        load_dtype = self.precision.load_dtype if self.precision else torch.float32
        if load_dtype != torch.float32:  # float32 master weights, cast as `apply_to_model` does
            for index in trained.layers:
                trained.stack.layers[index].to(load_dtype)
        if getattr(model, "is_gradient_checkpointing", False):
            model.gradient_checkpointing_disable()
        model.config.use_cache = self.use_cache
        for name in ("forward", "_original_forward"):  # accelerate's autocast wrapper of forward
            vars(model).pop(name, None)
        for param in model.parameters():
            param.grad = None
        model.eval()
        trained.settled = True

    def as_evaluated(self) -> tuple[Any, Any] | None:
        """The model (as trained, if it holds a training) and tokenizer to score in place, when they
        are loaded as `service.evaluation.evaluate` loads a model: float32 on the CPU. None on an
        accelerator, where a unit's score keeps coming from that fresh load."""
        precision = self.precision
        if self.model is None or precision is None:
            return None
        if precision.load_dtype != torch.float32 or torch.device(precision.device).type != "cpu":
            return None
        self.settle()
        return self.model, self.tokenizer

    def restore(self) -> None:
        """Put back the base weights of the layers the last training changed."""
        trained = self._trained
        if trained is None:
            return
        self.settle()
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in trained.base_state.items():
                target = params[name]
                target.copy_(tensor.to(device=target.device, dtype=target.dtype))
        self._trained = None

    def release(self) -> None:
        """Let the model go (another model is needed, or the probe is done)."""
        self.model = self.tokenizer = self.key = self.precision = self._trained = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
