"""Load causal LMs and find, choose and freeze their decoder layers.

layerpilot trains a handful of decoder layers and leaves the rest of the model untouched, so everything
here exists to answer two questions reliably for many architectures: where is the stack of decoder
layers, and which parameters belong to the chosen ones. Loading lives here too because it is where
the user's `model` section meets the outside world (the Hugging Face cache, remote code, devices), and
every failure on that path should end as a one-line message naming the spec field to change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from service.errors import LayerpilotError, SpecError, UnsupportedArchitectureError
from service.spec import ModelSpec, check_layer_indices

DEMO_MODEL_DIR: Path = Path(__file__).parent / "assets" / "demo_model"

# Only these files are fetched from the Hub: weights in safetensors (no pickles that can run code on
# load), configs, tokenizers and chat templates.
HUB_ALLOW_PATTERNS: tuple[str, ...] = ("*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*")

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


# --------------------------------------------------------------------------------------------------
# Where the model files are


def resolve_model_dir(uri: str, revision: str | None = None, *, trust_remote_code: bool = False) -> Path:
    """The local directory holding the model named by `model.uri`, downloading it only if allowed.

    Hub models go through the standard Hugging Face cache so that a model downloaded once (or placed
    there by an init container) is reused, and so that air-gapped clusters work with HF_HUB_OFFLINE.
    A checkpoint's Python files are fetched only when `trust_remote_code` says they may run.
    """
    if uri == "builtin:demo":
        if not (DEMO_MODEL_DIR / "config.json").is_file():
            raise LayerpilotError(
                f"the built-in demo model is missing from {DEMO_MODEL_DIR}; reinstall layerpilot or "
                f"rebuild it with `python -m service.demo_model --out {DEMO_MODEL_DIR}`"
            )
        return DEMO_MODEL_DIR
    if uri.startswith("hf://"):
        return _snapshot(uri[len("hf://") :], revision, with_code=trust_remote_code)
    return _local_model_dir(uri)


def _local_model_dir(uri: str) -> Path:
    path = Path(uri).expanduser()
    fix = "set model.uri to a directory saved with save_pretrained, builtin:demo or hf://org/name"
    if not path.exists():
        raise SpecError("model.uri", f"'{uri}' does not exist", fix)
    if not path.is_dir():
        raise SpecError("model.uri", f"'{uri}' is a file, not a model directory", fix)
    if not (path / "config.json").is_file():
        raise SpecError("model.uri", f"'{uri}' has no config.json, so it is not a transformers model", fix)
    return path.resolve()


def _env_true(name: str) -> bool | None:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """Whether Hub access is switched off, read now rather than when huggingface_hub was imported."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = _env_true(name)
        if value is not None:
            return value
    return False


def hub_cache_dir() -> Path:
    """The Hub cache directory by huggingface_hub's own precedence, read from the environment now.

    huggingface_hub freezes these variables at import time, which would ignore settings made later
    by the operator or by tests; passing the directory explicitly keeps both honest.
    """
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        value = os.environ.get(name)
        if value:
            return Path(os.path.expandvars(value)).expanduser()
    home = os.environ.get("HF_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        home = os.path.join(xdg, "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _snapshot(repo_id: str, revision: str | None, *, with_code: bool) -> Path:
    # Imported here so that loading a local model never pays for (or depends on) the Hub client.
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = hub_offline()
    cache = hub_cache_dir()
    uri = f"hf://{repo_id}"
    at = f" at revision '{revision}'" if revision else ""
    download = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
    try:
        folder = snapshot_download(
            repo_id=repo_id,
            revision=revision,
            cache_dir=cache,
            local_files_only=offline,
            allow_patterns=[*HUB_ALLOW_PATTERNS, *(["*.py"] if with_code else [])],
        )
    except IncompleteSnapshotError:
        raise LayerpilotError(
            f"the cached copy of {uri}{at} in {cache} is incomplete (an interrupted download?); "
            f"complete it with `{download}` on a connected machine, or point model.uri at a local directory"
        ) from None
    except LocalEntryNotFoundError:
        reason = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        raise LayerpilotError(
            f"{uri}{at} is not in the Hugging Face cache ({cache}) and {reason}; download it with "
            f"`{download}` on a connected machine into that cache, or point model.uri at a local directory"
        ) from None
    except GatedRepoError:
        raise LayerpilotError(
            f"{uri} is gated; accept its licence on huggingface.co and provide a token (HF_TOKEN)"
        ) from None
    except RepositoryNotFoundError:
        raise SpecError(
            "model.uri",
            f"{uri} does not exist on the Hub or is private",
            "check the id, or provide a token (HF_TOKEN) that can read it",
        ) from None
    except RevisionNotFoundError:
        raise SpecError(
            "model.revision", f"{uri} has no revision '{revision}'", "use a branch, tag or commit of the repo"
        ) from None
    except HFValidationError as error:
        raise SpecError(
            "model.uri", f"'{uri}' is not a valid Hub id ({_one_line(error)})", "write hf://org/name"
        ) from None
    except (HfHubHTTPError, OSError) as error:
        raise LayerpilotError(f"could not download {uri}{at}: {_one_line(error)}") from None
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise SpecError(
            "model.uri",
            f"{uri}{at} has no config.json, so it is not a transformers model",
            "use a causal LM repo",
        )
    if not any(path.glob("*.safetensors")):
        raise LayerpilotError(
            f"{uri}{at} has no safetensors weights; layerpilot does not load pickled checkpoints "
            "(*.bin, *.pt) from the Hub; convert it to safetensors and point model.uri at that directory"
        )
    return path


# --------------------------------------------------------------------------------------------------
# Loading


def _read_config(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SpecError("model.uri", f"cannot read {path / 'config.json'}: {_one_line(error)}") from None
    if not isinstance(raw, dict):
        raise SpecError("model.uri", f"{path / 'config.json'} is not a JSON object")
    return raw


def _check_code_source(uri: str, config: dict[str, Any], trust_remote_code: bool) -> None:
    """Refuse before transformers imports a checkpoint's own Python files without the user's consent.

    transformers itself would raise or, with `trust_remote_code=None`, prompt on stdin; deciding here
    gives one message naming the spec field. A checkpoint whose `auto_map` duplicates an architecture
    transformers ships is loaded with the built-in classes (transformers' own rule), so no code runs.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = str(config.get("model_type", ""))
    auto_map = config.get("auto_map") or {}
    native = model_type in CONFIG_MAPPING and model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if auto_map and not native and not trust_remote_code:
        entry = auto_map.get("AutoModelForCausalLM") if isinstance(auto_map, dict) else None
        code = f" ({entry})" if entry else ""
        raise SpecError(
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
    path = resolve_model_dir(model.uri, model.revision, trust_remote_code=model.trust_remote_code)
    _check_code_source(model.uri, _read_config(path), model.trust_remote_code)
    target = torch.device(device) if device is not None else torch.device("cpu")
    load_dtype: torch.dtype | str = dtype if dtype is not None else "auto"
    if dtype is None and target.type == "cpu":
        load_dtype = torch.float32
    trust = bool(model.trust_remote_code)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(path), dtype=load_dtype, trust_remote_code=trust)
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust)
    except ValueError as error:
        if _is_remote_code_refusal(error):
            raise SpecError(
                "model.trustRemoteCode",
                f"{model.uri} needs its own Python code to load, and running it is off",
                "read that code, then set model.trustRemoteCode: true if you trust it",
            ) from None
        raise LayerpilotError(f"cannot load {model.uri}: {_one_line(error)}") from None
    except OSError as error:
        raise LayerpilotError(f"cannot load {model.uri} from {path}: {_one_line(error)}") from None
    if not isinstance(loaded, PreTrainedModel):
        raise LayerpilotError(f"{model.uri} loaded as {type(loaded).__name__}, not a transformers model")
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


# --------------------------------------------------------------------------------------------------
# Finding and freezing layers


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
            raise SpecError("model.layersPath", f"'{layers_path}' {what} in {class_name}", fix)
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

    Used where only the structure matters (layer count, parameter names), e.g. to plan a probe.
    """
    from transformers import AutoConfig

    path = resolve_model_dir(model.uri, model.revision, trust_remote_code=model.trust_remote_code)
    _check_code_source(model.uri, _read_config(path), model.trust_remote_code)
    config = AutoConfig.from_pretrained(str(path), trust_remote_code=bool(model.trust_remote_code))
    with torch.device("meta"):
        empty = AutoModelForCausalLM.from_config(config, trust_remote_code=bool(model.trust_remote_code))
    return find_decoder_layers(empty, model.layers_path)
