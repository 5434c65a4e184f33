"""A model directory's weights as stored: the fingerprint that ties a layer patch to its base.

The fingerprint hashes every tensor in the safetensors files (names, dtypes, shapes, bytes), sorted
by name, so it does not depend on how the files are sharded; a patch records it at training time
and is applied only to a base whose weights hash the same.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from safetensors import safe_open

from service.errors import LayerpilotError, first_line
from service.models.gguf import is_gguf
from service.models.hub import resolve_model_dir
from service.spec.models import ModelSpec


def model_fingerprint(model: ModelSpec) -> str:
    """The weights fingerprint of the spec's model (`base_fingerprint` of its files)."""
    return base_fingerprint(resolve_model_dir(model.uri, model.revision))


def base_fingerprint(model_dir: Path) -> str:
    """`fingerprint_model_dir`, hashed once per process for as long as the weight files are unchanged
    (a job checks its base several times: the probe's report, a reused profile, the layer patch)."""
    files = [model_dir] if is_gguf(model_dir) else sorted(model_dir.glob("*.safetensors"))
    stamp = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _cached_fingerprint(model_dir.resolve(), stamp)


@functools.lru_cache(maxsize=8)
def _cached_fingerprint(model_dir: Path, stamp: tuple[tuple[str, int, int], ...]) -> str:
    return fingerprint_model_dir(model_dir)


def fingerprint_model_dir(model_dir: Path) -> str:
    """`sha256:<hex>` over every weight tensor in a transformers model directory, sorted by name
    (of a GGUF model: over its file).

    Each tensor's bytes stream from its file in chunks, so hashing costs no memory however large the
    tensor (an 8B model's embedding is over a gigabyte).
    """
    digest = hashlib.sha256()
    if is_gguf(model_dir):
        with model_dir.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        return "sha256:" + digest.hexdigest()
    entries = _stored_entries(model_dir)
    with contextlib.ExitStack() as stack:
        handles = {file: stack.enter_context(file.open("rb")) for file in {e.file for e in entries.values()}}
        for name in sorted(entries):
            entry = entries[name]
            digest.update(f"{name}|{entry.dtype}|{entry.shape}|".encode())
            handle = handles[entry.file]
            handle.seek(entry.start)
            remaining = entry.end - entry.start
            while remaining > 0:
                chunk = handle.read(min(_CHUNK, remaining))
                if not chunk:
                    raise LayerpilotError(f"{entry.file} is truncated: re-download or re-save the model")
                digest.update(chunk)
                remaining -= len(chunk)
    return "sha256:" + digest.hexdigest()


_CHUNK = 1 << 20
# safetensors' dtype codes as torch names them: the fingerprint hashes torch's names
_TORCH_DTYPES = {
    "F64": "torch.float64",
    "F32": "torch.float32",
    "F16": "torch.float16",
    "BF16": "torch.bfloat16",
    "F8_E4M3": "torch.float8_e4m3fn",
    "F8_E5M2": "torch.float8_e5m2",
    "I64": "torch.int64",
    "I32": "torch.int32",
    "I16": "torch.int16",
    "I8": "torch.int8",
    "U64": "torch.uint64",
    "U32": "torch.uint32",
    "U16": "torch.uint16",
    "U8": "torch.uint8",
    "BOOL": "torch.bool",
}


@dataclass(frozen=True)
class _Entry:
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # byte offsets of the tensor's data in `file`
    end: int


def _stored_entries(model_dir: Path) -> dict[str, _Entry]:
    """Every tensor in the directory's safetensors files, located from their headers alone."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise LayerpilotError(
            f"{model_dir} holds no .safetensors weights; layerpilot fingerprints only safetensors models "
            "(convert with `model.save_pretrained(dir)`)"
        )
    entries: dict[str, _Entry] = {}
    for file in files:
        with file.open("rb") as handle:
            try:
                (size,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(size))
            except (struct.error, ValueError) as error:
                raise LayerpilotError(
                    f"{file} is not a readable safetensors file: {first_line(error)}"
                ) from error
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype = _TORCH_DTYPES.get(info["dtype"])
            if dtype is None:
                raise LayerpilotError(
                    f"{file}: tensor {name} has dtype {info['dtype']}, which layerpilot cannot hash"
                )
            begin, end = info["data_offsets"]
            entries[name] = _Entry(file, dtype, tuple(info["shape"]), 8 + size + begin, 8 + size + end)
    return entries


def stored_tensors(model_dir: Path, names: Iterable[str]) -> Mapping[str, torch.Tensor] | None:
    """The base model's own copy of `names`, read from its safetensors files (None if any is missing,
    or the model has no safetensors files).

    Training compares trained layers with these at the end instead of keeping a copy of them in
    memory for the whole run (for full-model training that copy is a second model). Each tensor is
    read when it is looked up, so comparing them one by one holds one base tensor at a time.
    """
    wanted = set(names)
    if not model_dir.is_dir() or not any(model_dir.glob("*.safetensors")):
        return None
    entries = _stored_entries(model_dir)
    if not wanted <= entries.keys():
        return None
    return _StoredTensors({name: entries[name].file for name in wanted})


class _StoredTensors(Mapping[str, torch.Tensor]):
    """Tensors in safetensors files, each read from disk when looked up."""

    def __init__(self, where: dict[str, Path]) -> None:
        self._where = where

    def __getitem__(self, name: str) -> torch.Tensor:
        with safe_open(str(self._where[name]), framework="pt") as handle:
            return cast(torch.Tensor, handle.get_tensor(name))

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._where))

    def __len__(self) -> int:
        return len(self._where)


def has_stored_tensors(model_dir: Path, names: Iterable[str]) -> bool:
    """Whether every one of `names` is in the model's safetensors files (reads headers only)."""
    return stored_tensors(model_dir, names) is not None
