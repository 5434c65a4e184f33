"""Load causal LMs and find, choose and freeze their decoder layers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from service.errors import LayerpilotError, SpecError, UnsupportedArchitectureError
from service.spec import ModelSpec, check_layer_indices

DEMO_MODEL_DIR = Path(__file__).parent / "assets" / "demo_model"

LAYER_PATHS = {
    **dict.fromkeys(
        ["llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
         "gemma3_text", "phi3", "phi", "olmo", "olmo2", "starcoder2", "stablelm", "cohere", "granite"],
        "model.layers",
    ),
    **dict.fromkeys(["gpt2", "falcon", "gptj", "bloom"], "transformer.h"),
    "gpt_neox": "gpt_neox.layers",
    "opt": "model.decoder.layers",
}


@dataclass(frozen=True)
class LayerStack:
    path: str
    layers: torch.nn.ModuleList
    model_type: str

    def __len__(self) -> int:
        return len(self.layers)

    def prefix(self, index: int) -> str:
        return f"{self.path}.{index}."

    def parameter_names(self, model: torch.nn.Module, index: int) -> list[str]:
        return [n for n, _ in model.named_parameters() if n.startswith(self.prefix(index))]


def resolve_model_dir(uri: str, revision: str | None = None) -> Path:
    if uri == "builtin:demo":
        return DEMO_MODEL_DIR
    if uri.startswith("hf://"):
        from huggingface_hub import snapshot_download

        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        try:
            return Path(
                snapshot_download(
                    repo_id=uri[len("hf://") :],
                    revision=revision,
                    cache_dir=os.environ.get("HF_HUB_CACHE"),
                    local_files_only=offline,
                    allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"],
                )
            )
        except Exception as err:
            raise LayerpilotError(
                f"{uri} is not in the Hugging Face cache and cannot be downloaded ({type(err).__name__}); "
                "download it on a connected machine or point model.uri at a local directory"
            ) from None
    path = Path(uri)
    if not (path / "config.json").is_file():
        raise SpecError("model.uri", f"no transformers model at {uri} (no config.json)", "check the path")
    return path


def load_model_and_tokenizer(
    model: ModelSpec, *, dtype: torch.dtype | None = None, device: str | torch.device | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    path = resolve_model_dir(model.uri, model.revision)
    loaded = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype or torch.float32, trust_remote_code=model.trust_remote_code
    )
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=model.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if device is not None:
        loaded.to(device)
    return loaded, tokenizer


def _resolve(model: torch.nn.Module, dotted: str) -> Any:
    obj: Any = model
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def find_decoder_layers(model: torch.nn.Module, layers_path: str | None = None) -> LayerStack:
    config = getattr(model, "config", None)
    model_type = str(getattr(config, "model_type", type(model).__name__))
    path = layers_path or LAYER_PATHS.get(model_type)
    if path is None:
        raise UnsupportedArchitectureError(
            "model.uri",
            f"layerpilot does not know where {type(model).__name__} (model_type '{model_type}') keeps "
            "its decoder layers",
            "set model.layersPath",
        )
    layers = _resolve(model, path)
    if not isinstance(layers, torch.nn.ModuleList):
        raise SpecError("model.layersPath", f"'{path}' is not a list of layers", "name the decoder ModuleList")
    return LayerStack(path=path, layers=layers, model_type=model_type)


def freeze_except(model: torch.nn.Module, stack: LayerStack, indices: Sequence[int]) -> list[str]:
    chosen = check_layer_indices(list(indices), len(stack), field="layers")
    prefixes = tuple(stack.prefix(i) for i in chosen)
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(prefixes)
        if param.requires_grad:
            trainable.append(name)
    return sorted(trainable)
