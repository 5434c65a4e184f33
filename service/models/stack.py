"""Finding, choosing and freezing the decoder layers of a loaded model, for many architectures.

layerpilot trains a handful of decoder layers and leaves the rest of the model untouched, so this
module answers two questions reliably: where is the stack of decoder layers, and which parameters
belong to the chosen ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from service.errors import InputError, LayerpilotError, UnsupportedArchitectureError
from service.models.loading import load_empty_model
from service.spec.indices import check_layer_indices
from service.spec.models import ModelSpec

# Where each architecture keeps its decoder layers, relative to the `...ForCausalLM` model that
# `AutoModelForCausalLM` returns. Every entry was checked against transformers 5.24 by building a tiny
# model of that type and listing its ModuleLists; architectures that could not be checked are left
# out on purpose (users reach them through `model.layersPath`).
_PATHS_BY_STACK: dict[str, tuple[str, ...]] = {
    "model.layers": (
        "apertus",
        "arcee",
        "bitnet",
        "cohere",
        "cohere2",
        "deepseek_v2",
        "deepseek_v3",
        "diffllama",
        "ernie4_5",
        "ernie4_5_moe",
        "exaone4",
        "gemma",
        "gemma2",
        "gemma3_text",
        "glm",
        "glm4",
        "glm4_moe",
        "gpt_oss",
        "granite",
        "granitemoe",
        "granitemoeshared",
        "helium",
        "hunyuan_v1_dense",
        "hunyuan_v1_moe",
        "internlm3",
        "jetmoe",
        "llama",
        "llama4_text",
        "minicpm3",
        "ministral",
        "ministral3",
        "mistral",
        "mixtral",
        "nemotron",
        "olmo",
        "olmo2",
        "olmo3",
        "olmoe",
        "persimmon",
        "phi",
        "phi3",
        "phimoe",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "qwen3_5_text",
        "qwen3_moe",
        "qwen3_next",
        "seed_oss",
        "smollm3",
        "stablelm",
        "starcoder2",
        "vaultgemma",
        "xglm",
    ),
    "transformer.h": ("bloom", "codegen", "falcon", "gpt2", "gpt_bigcode", "gpt_neo", "gptj"),
    "transformer.blocks": ("mpt",),
    "gpt_neox.layers": ("gpt_neox",),
    "model.decoder.layers": ("opt",),
    "biogpt.layers": ("biogpt",),
    # Multimodal checkpoint loaded through AutoModelForCausalLM: only the language model is trained.
    "model.language_model.layers": ("gemma3",),
}

LAYER_PATHS: dict[str, str] = {
    model_type: path for path, model_types in _PATHS_BY_STACK.items() for model_type in model_types
}


@dataclass(frozen=True)
class LayerStack:
    """The decoder layers of one loaded model, with the names needed to address their parameters.

    `path` is relative to the model that was searched, so `prefix` matches the keys of that model's
    `named_parameters()` and `state_dict()`, which is what patches and optimisers are keyed by.
    """

    path: str
    layers: torch.nn.ModuleList
    model_type: str

    def __len__(self) -> int:
        return len(self.layers)

    def prefix(self, index: int) -> str:
        """Parameter-name prefix of layer `index`; the trailing dot keeps layer 1 apart from layer 10."""
        if not 0 <= index < len(self.layers):
            raise IndexError(f"layer {index} is outside 0..{len(self.layers) - 1}")
        return f"{self.path}.{index}."

    def parameter_names(self, model: torch.nn.Module, index: int) -> list[str]:
        """Full names of layer `index`'s parameters, including any that are also reachable elsewhere."""
        prefix = self.prefix(index)
        return [name for name, _ in model.named_parameters(remove_duplicate=False) if name.startswith(prefix)]


def _layer_lists(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.ModuleList]]:
    """ModuleLists of two or more children of one class: the shapes a decoder stack can take.

    Lists nested inside an earlier match (experts inside a layer, say) are skipped, since the user
    wants the outermost stack.
    """
    found: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) < 2:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        if any(name.startswith(outer + ".") for outer in found):
            continue
        found.append(name)
        yield name, module


def _describe_candidates(model: torch.nn.Module) -> list[str]:
    return [f"{name} ({len(layers)} × {type(layers[0]).__name__})" for name, layers in _layer_lists(model)]


def _submodule(model: torch.nn.Module, path: str) -> torch.nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _model_type(model: torch.nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "model_type", "") or "")


def find_decoder_layers(model: torch.nn.Module, layers_path: str | None = None) -> LayerStack:
    """Locate the decoder layer stack, from `model.layersPath` if given, else from the table.

    The table path is written for `...ForCausalLM` models; a bare base model (what `AutoModel`
    returns) is accepted too by dropping the path's first component.
    """
    model_type = _model_type(model)
    class_name = type(model).__name__
    if layers_path is not None:
        path = layers_path.strip().strip(".")
        found = _submodule(model, path) if path else None
        if not isinstance(found, torch.nn.ModuleList) or len(found) == 0:
            what = "does not exist" if found is None else f"is a {type(found).__name__}, not a list of layers"
            candidates = _describe_candidates(model)
            fix = (
                f"set it to one of: {', '.join(candidates)}"
                if candidates
                else "name the torch.nn.ModuleList that holds the decoder layers"
            )
            raise InputError("model.layersPath", f"'{layers_path}' {what} in {class_name}", fix)
        return LayerStack(path=path, layers=found, model_type=model_type)

    known = LAYER_PATHS.get(model_type)
    if known is not None:
        options = [known]
        if "." in known:
            options.append(known.split(".", 1)[1])
        for path in options:
            found = _submodule(model, path)
            if isinstance(found, torch.nn.ModuleList) and len(found) > 0:
                return LayerStack(path=path, layers=found, model_type=model_type)

    candidates = _describe_candidates(model)
    described = f"model_type '{model_type}' ({class_name})" if model_type else class_name
    if known is not None:
        problem = f"{described} has no decoder layers at {known}, where this architecture keeps them"
    else:
        problem = f"layerpilot does not know where {described} keeps its decoder layers"
    if candidates:
        raise UnsupportedArchitectureError(
            "model.uri", f"{problem}; found {', '.join(candidates)}", "set model.layersPath to one of them"
        )
    raise UnsupportedArchitectureError(
        "model.uri",
        f"{problem}, and it has no list of repeated layers",
        "use a decoder-only causal LM, or set model.layersPath to its decoder ModuleList",
    )


def freeze_except(model: torch.nn.Module, stack: LayerStack, indices: Sequence[int]) -> list[str]:
    """Make only the chosen layers trainable and return their parameter names, sorted.

    A parameter shared between a chosen layer and anything outside the chosen set would be trained
    through both and silently change the "frozen" part of the model, and the patch would no longer
    describe the change; that case is refused rather than guessed at.
    """
    chosen = check_layer_indices(list(indices), len(stack), field="layers")
    prefixes = tuple(stack.prefix(i) for i in chosen)
    inside: dict[int, str] = {}
    outside: dict[int, str] = {}
    names: list[str] = []
    for name, param in model.named_parameters(remove_duplicate=False):
        if name.startswith(prefixes):
            inside.setdefault(id(param), name)
            names.append(name)
        else:
            outside.setdefault(id(param), name)
    shared = [pid for pid in inside if pid in outside]
    if shared:
        first = shared[0]
        raise LayerpilotError(
            f"parameter {inside[first]} of the chosen layers {chosen} is the same tensor as {outside[first]} "
            f"outside them ({len(shared)} shared in all); training it would change frozen weights too, so "
            "choose layers that share no weights with the rest of the model"
        )
    if not names:
        raise LayerpilotError(f"the chosen layers {chosen} of {stack.path} have no parameters to train")
    for param in model.parameters():
        param.requires_grad_(id(param) in inside)
    return sorted(names)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, counting tied tensors once as the optimiser sees them."""
    trainable = total = 0
    for param in model.parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total


def inspect_stack(model: ModelSpec) -> LayerStack:
    """The decoder stack of the spec's model, found on an empty (meta-device) copy: no weights load.

    The one answer to "how many decoder layers, and where": it honours `model.layersPath` exactly as
    training does.
    """
    return find_decoder_layers(load_empty_model(model), model.layers_path)
