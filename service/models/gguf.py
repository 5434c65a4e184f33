"""GGUF model files (llama.cpp's format) as a plain float32 transformers model.

`model.uri` may name a `.gguf` file, or a directory holding exactly one (and no `config.json`).
transformers reads the file's architecture, weights and tokenizer (it needs the `gguf` package,
installed by `pip install 'layerpilot[gguf]'`) and dequantizes the weights; layerpilot then drops the
quantized flag, so the model trains, saves and takes patches like any other. A GGUF file carries no
Python code, so the remote-code gate has nothing to refuse. Its fingerprint hashes the file itself.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from service.errors import InputError

SUFFIX = ".gguf"


def is_gguf(path: Path) -> bool:
    return path.suffix == SUFFIX and path.is_file()


def find_gguf(directory: Path, uri: str) -> Path | None:
    """The one `.gguf` file of a directory without `config.json` (None when it holds none)."""
    found = sorted(directory.glob(f"*{SUFFIX}"))
    if len(found) > 1:
        names = ", ".join(p.name for p in found[:3])
        raise InputError(
            "model.uri", f"'{uri}' holds several GGUF files ({names})", f"name one: model.uri: {found[0]}"
        )
    return found[0].resolve() if found else None


def pretrained_args(path: Path) -> tuple[str, dict[str, Any]]:
    """What transformers' `from_pretrained` takes to read the GGUF file at `path`."""
    if importlib.util.find_spec("gguf") is None:
        raise InputError(
            "model.uri",
            f"reading {path.name} needs the gguf package, which is not installed",
            "pip install 'layerpilot[gguf]'",
        )
    return str(path.parent), {"gguf_file": path.name}


def as_plain_model(model: Any) -> Any:
    """The dequantized model without its quantized flag: trainable, and `save_pretrained` writes it."""
    model.is_quantized = False
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    model.config.__dict__.pop("_is_quantized", None)
    return model
