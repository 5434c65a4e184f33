"""Loading a model and its tokenizer, with the gate on a checkpoint's own Python code.

`load_model_and_tokenizer` gives a model ready for training or generation; `load_empty_model`
builds the same architecture on the meta device (no weights read), for questions about structure
only (how many decoder layers, which parameter names).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from service.errors import InputError, LayerpilotError, UnsupportedArchitectureError, first_line
from service.models.gguf import as_plain_model, is_gguf, pretrained_args
from service.models.hub import resolve_model_dir
from service.spec.models import ModelSpec


def _read_config(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError("model.uri", f"cannot read {path / 'config.json'}: {first_line(error)}") from None
    if not isinstance(raw, dict):
        raise InputError("model.uri", f"{path / 'config.json'} is not a JSON object")
    return raw


def _check_code_source(uri: str, config: dict[str, Any], *, trust_remote_code: bool) -> None:
    """Refuse before transformers imports a checkpoint's own Python files without the user's consent.

    transformers itself would raise or, with `trust_remote_code=None`, prompt on stdin; deciding here
    gives one message naming the spec field. A checkpoint whose `auto_map` duplicates an architecture
    transformers ships is loaded with the built-in classes (transformers' own rule), so no code runs.
    """
    model_type = str(config.get("model_type", ""))
    auto_map = config.get("auto_map") or {}
    native = model_type in CONFIG_MAPPING and model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if auto_map and not native and not trust_remote_code:
        entry = auto_map.get("AutoModelForCausalLM") if isinstance(auto_map, dict) else None
        code = f" ({entry})" if entry else ""
        raise InputError(
            "model.trustRemoteCode",
            f"{uri} (model_type '{model_type}') needs its own Python code{code} to load, and running it "
            "is off",
            "read that code, then set model.trustRemoteCode: true if you trust it",
        )
    if not auto_map and model_type not in CONFIG_MAPPING:
        raise UnsupportedArchitectureError(
            "model.uri",
            f"{uri} has model_type '{model_type}', which the installed transformers does not know",
            "upgrade transformers, or use a model with a supported architecture",
        )
    if not auto_map and model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UnsupportedArchitectureError(
            "model.uri",
            f"{uri} is a '{model_type}' model, which has no causal language-model head in transformers",
            "use a decoder-only causal LM",
        )


def _is_remote_code_refusal(error: Exception) -> bool:
    return "trust_remote_code" in str(error)


def load_model_and_tokenizer(
    model: ModelSpec,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the spec's model and a tokenizer ready for batched generation.

    Without `dtype`, CPU models load in float32 (half precision on CPU is slow and loses accuracy in
    training), while accelerators keep the checkpoint's own dtype. The tokenizer always gets a pad
    token and left padding, because GRPO generates from batches of prompts of different lengths.
    """
    path = _checked_model_dir(model)
    gguf = is_gguf(path)
    if not gguf and not any(next(path.glob(p), None) for p in ("*.safetensors", "*.bin", "*.pt", "*.pth")):
        raise InputError(
            "model.uri",
            f"{model.uri} has a config.json but no weights ({path})",
            "point model.uri at a directory written by save_pretrained, weights included",
        )
    target = torch.device(device) if device is not None else torch.device("cpu")
    load_dtype: torch.dtype | str = dtype if dtype is not None else "auto"
    if dtype is None and target.type == "cpu":
        load_dtype = torch.float32
    trust = bool(model.trust_remote_code)
    source, extra = pretrained_args(path) if gguf else (str(path), {})
    try:
        loaded = AutoModelForCausalLM.from_pretrained(
            source, dtype=load_dtype, trust_remote_code=trust, **extra
        )
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust, **extra)
    except ValueError as error:
        if _is_remote_code_refusal(error):
            raise InputError(
                "model.trustRemoteCode",
                f"{model.uri} needs its own Python code to load, and running it is off",
                "read that code, then set model.trustRemoteCode: true if you trust it",
            ) from None
        raise LayerpilotError(f"cannot load {model.uri}: {first_line(error)}") from None
    except OSError as error:
        raise LayerpilotError(f"cannot load {model.uri} from {path}: {first_line(error)}") from None
    if not isinstance(loaded, PreTrainedModel):
        raise LayerpilotError(f"{model.uri} loaded as {type(loaded).__name__}, not a transformers model")
    if gguf:
        as_plain_model(loaded)
    _prepare_tokenizer(tokenizer, model.uri)
    generation_config = getattr(loaded, "generation_config", None)
    if generation_config is not None and generation_config.pad_token_id is None:
        generation_config.pad_token_id = tokenizer.pad_token_id
    if device is not None:
        cast(torch.nn.Module, loaded).to(target)  # PreTrainedModel.to is typed as a bare wrapper
    return loaded, tokenizer


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, uri: str) -> None:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise LayerpilotError(
                f"the tokenizer of {uri} has neither a pad nor an eos token, so prompts cannot be batched; "
                "add pad_token to its tokenizer_config.json"
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"


def load_empty_model(model: ModelSpec) -> torch.nn.Module:
    """The spec's architecture built on the meta device from its config: no weights are read."""
    path = _checked_model_dir(model)
    trust = bool(model.trust_remote_code)
    source, extra = pretrained_args(path) if is_gguf(path) else (str(path), {})
    config = AutoConfig.from_pretrained(source, trust_remote_code=trust, **extra)
    with torch.device("meta"):
        return cast(torch.nn.Module, AutoModelForCausalLM.from_config(config, trust_remote_code=trust))


def _checked_model_dir(model: ModelSpec) -> Path:
    """The model's directory, once its config says it loads without code the user has not allowed
    (a GGUF file holds no code)."""
    path = resolve_model_dir(model.uri, model.revision, trust_remote_code=model.trust_remote_code)
    if not is_gguf(path):
        _check_code_source(model.uri, _read_config(path), trust_remote_code=model.trust_remote_code)
    return path


@contextmanager
def evaluating(model: Any) -> Iterator[Any]:
    """The model in eval mode (dropout off) for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
