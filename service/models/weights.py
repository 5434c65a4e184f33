"""A model directory's weights as stored: the fingerprint that ties a layer patch to its base.

The fingerprint hashes every tensor in the safetensors files (names, dtypes, shapes, bytes), sorted
by name, so it does not depend on how the files are sharded; a patch records it at training time
and is applied only to a base whose weights hash the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from service.errors import LayerpilotError


def fingerprint_model_dir(model_dir: Path) -> str:
    """`sha256:<hex>` over every weight tensor in a transformers model directory, sorted by name."""
    digest = hashlib.sha256()
    for name, dtype, shape, data in _iter_weights(model_dir):
        digest.update(f"{name}|{dtype}|{shape}|".encode())
        digest.update(data)
    return "sha256:" + digest.hexdigest()


def _iter_weights(model_dir: Path) -> Iterator[tuple[str, str, tuple[int, ...], bytes]]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise LayerpilotError(
            f"{model_dir} holds no .safetensors weights; layerpilot fingerprints only safetensors models "
            "(convert with `model.save_pretrained(dir)`)"
        )
    where: dict[str, Path] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a Mapping
                where[name] = file
    for name in sorted(where):
        with safe_open(str(where[name]), framework="pt") as handle:
            tensor = handle.get_tensor(name)
        yield name, str(tensor.dtype), tuple(tensor.shape), _tensor_bytes(tensor)


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().contiguous().cpu().reshape(-1)
    return bytes(flat.view(torch.uint8).numpy().tobytes())


def stored_tensors(model_dir: Path, names: Iterable[str]) -> dict[str, torch.Tensor] | None:
    """The base model's own copy of `names`, read from its safetensors files (None if any is missing).

    Training compares trained layers with these at the end instead of keeping a copy of them in
    memory for the whole run (for full-model training that copy is a second model).
    """
    wanted, found = set(names), {}
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for name in wanted.intersection(handle.keys()):
                found[name] = handle.get_tensor(name)
    return found if found.keys() == wanted else None


def has_stored_tensors(model_dir: Path, names: Iterable[str]) -> bool:
    """Whether every one of `names` is in the model's safetensors files (reads headers only)."""
    stored: set[str] = set()
    for file in model_dir.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as handle:
            stored.update(handle.keys())
    return set(names) <= stored
