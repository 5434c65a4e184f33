"""Layer patches: only the trained layers' tensors, plus what is needed to apply them safely.

A training output directory holds
- `layer_patch.safetensors`: the trained layers' tensors under their full parameter names,
- `layer_patch.json`: base model reference and weights fingerprint, layer indices, dtype, spec,
- `deltas.json`: relative weight change ‖ΔW‖/‖W‖ per layer and per tensor (`LayerDeltas`).

`apply` refuses a base whose weights fingerprint differs from the one the patch was trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from service import __version__
from service.errors import InputError, LayerpilotError, first_line
from service.fields import Fields
from service.files import atomic_write, write_json
from service.models.hub import resolve_model_dir
from service.models.loading import load_model_and_tokenizer
from service.models.weights import base_fingerprint
from service.spec.models import ModelSpec

PATCH_TENSORS = "layer_patch.safetensors"
PATCH_META = "layer_patch.json"
DELTAS = "deltas.json"
PATCH_FILES = (PATCH_TENSORS, PATCH_META, DELTAS)
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class PatchMeta:
    """What `layer_patch.json` holds: the base it applies to, the layers, and how to check the tensors."""

    base: Mapping[str, Any]
    layers: list[int]
    layers_path: str
    dtype: str | list[str]
    num_tensors: int
    num_parameters: int
    trained_steps: int | None
    tensors_bytes: int
    tensors_sha256: str
    spec: Mapping[str, Any] | None
    learning_rate: Mapping[str, Any] | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


PATCH_META_FIELDS: Fields[PatchMeta] = Fields(
    {
        "schemaVersion": ("format version of the patch (1)", lambda m: SCHEMA_VERSION),
        "base": (
            "the base model: `uri`, `revision`, weights `fingerprint`, `modelType`, `numLayers`",
            lambda m: dict(m.base),
        ),
        "layers": ("the trained layer indices", lambda m: sorted(m.layers)),
        "layersPath": ("where the decoder layers are in the model", lambda m: m.layers_path),
        "dtype": ("dtype of the stored tensors", lambda m: m.dtype),
        "numTensors": ("tensors in layer_patch.safetensors", lambda m: m.num_tensors),
        "numParameters": ("parameters in layer_patch.safetensors", lambda m: m.num_parameters),
        "createdAt": ("when the patch was written (UTC)", lambda m: m.created_at),
        "layerpilotVersion": ("the layerpilot that wrote it", lambda m: __version__),
        "trainedSteps": ("optimizer steps behind the weights", lambda m: m.trained_steps),
        "tensorsBytes": (
            "size of layer_patch.safetensors, checked before it is read",
            lambda m: m.tensors_bytes,
        ),
        "tensorsSha256": (
            "SHA-256 of layer_patch.safetensors, checked before it is read",
            lambda m: m.tensors_sha256,
        ),
        "spec": ("the whole spec the run was trained with", lambda m: dict(m.spec) if m.spec else None),
        "learningRate": (
            "the learning rate trained at: `rate`, its `multiplier` of `algorithm.learningRate`, `chosenBy` "
            "(`spec`, or `calibration` for `auto`) and, for `auto`, the `calibration` that chose it "
            "(`calibration.json`)",
            lambda m: dict(m.learning_rate) if m.learning_rate else None,
        ),
    }
)
"""Every field of `layer_patch.json` (the reference is generated from this)."""


@dataclass(frozen=True)
class LayerPatch:
    """A loaded patch: tensors by full parameter name and the metadata written beside them."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def layers(self) -> list[int]:
        return list(self.meta["layers"])


@dataclass(frozen=True)
class LayerDeltas:
    """How far training moved each trained layer: ‖ΔW‖/‖W‖ with norms pooled over its tensors.

    `relative` and `absolute` are per layer index; `tensors` has both per parameter name.
    """

    relative: dict[int, float]
    absolute: dict[int, float]
    tensors: dict[str, dict[str, float]]

    def relative_json(self) -> dict[str, float]:
        """Relative change by layer index as text, the shape result files and metrics use.

        >>> LayerDeltas({2: 0.5}, {2: 1.0}, {}).relative_json()
        {'2': 0.5}
        """
        return {str(index): value for index, value in sorted(self.relative.items())}

    def to_json(self) -> dict[str, Any]:
        layers = {
            str(i): {"relative": self.relative[i], "absolute": self.absolute[i]}
            for i in sorted(self.relative)
        }
        return {"schemaVersion": SCHEMA_VERSION, "layers": layers, "tensors": self.tensors}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LayerDeltas:
        layers = data.get("layers") or {}
        return cls(
            relative={int(i): float(v["relative"]) for i, v in layers.items()},
            absolute={int(i): float(v.get("absolute", 0.0)) for i, v in layers.items()},
            tensors=dict(data.get("tensors") or {}),
        )

    @classmethod
    def read(cls, patch_dir: Path) -> LayerDeltas | None:
        """The `deltas.json` of a patch directory, or None when it has none."""
        path = patch_dir / DELTAS
        return cls.from_json(json.loads(path.read_text())) if path.is_file() else None


def layer_index(name: str, layers_path: str) -> int | None:
    """The decoder layer a parameter belongs to, or None.

    >>> layer_index("model.layers.3.mlp.up_proj.weight", "model.layers")
    3
    >>> layer_index("model.embed_tokens.weight", "model.layers") is None
    True
    """
    match = re.match(re.escape(layers_path) + r"\.(\d+)\.", name)
    return int(match.group(1)) if match else None


def compute_deltas(
    base: Mapping[str, torch.Tensor], trained: Mapping[str, torch.Tensor], layers_path: str
) -> LayerDeltas:
    """Relative change ‖ΔW‖/‖W‖ per tensor and per layer (norms pooled over the layer's tensors)."""
    tensors: dict[str, dict[str, float]] = {}
    pooled: dict[int, list[float]] = {}
    for name in sorted(trained):
        before = base[name].detach().float().cpu()
        after = trained[name].detach().float().cpu()
        diff = float(torch.linalg.vector_norm(after - before))
        norm = float(torch.linalg.vector_norm(before))
        tensors[name] = {
            "absolute": diff,
            "relative": diff / norm if norm > 0 else float("inf") if diff > 0 else 0.0,
        }
        index = layer_index(name, layers_path)
        if index is not None:
            acc = pooled.setdefault(index, [0.0, 0.0])
            acc[0] += diff**2
            acc[1] += norm**2
    return LayerDeltas(
        relative={i: (d2**0.5) / (n2**0.5) if n2 > 0 else 0.0 for i, (d2, n2) in sorted(pooled.items())},
        absolute={i: d2**0.5 for i, (d2, _) in sorted(pooled.items())},
        tensors=tensors,
    )


def write_patch(
    out_dir: Path,
    *,
    trained: Mapping[str, torch.Tensor],
    base: Mapping[str, torch.Tensor],
    layers: list[int],
    layers_path: str,
    base_ref: Mapping[str, Any],
    spec: Mapping[str, Any] | None = None,
    trained_steps: int | None = None,
    learning_rate: Mapping[str, Any] | None = None,
) -> LayerDeltas:
    """Write the three patch files atomically; returns the deltas."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().contiguous().cpu() for name, t in trained.items()}
    outside = sorted(n for n in tensors if layer_index(n, layers_path) not in layers)
    if outside:
        raise LayerpilotError(
            f"refusing to write a patch with tensors outside layers {layers}: {outside[:3]}"
        )
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values()})
    deltas = compute_deltas(base, tensors, layers_path)
    atomic_write(out_dir / PATCH_TENSORS, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    # The meta is written last and names the tensors file's size and hash: a pair torn by a kill
    # between the two writes, or a file changed since, is refused on reading.
    size, sha256 = _file_digest(out_dir / PATCH_TENSORS)
    meta = PatchMeta(
        base=base_ref,
        layers=layers,
        layers_path=layers_path,
        dtype=dtypes[0] if len(dtypes) == 1 else dtypes,
        num_tensors=len(tensors),
        num_parameters=sum(t.numel() for t in tensors.values()),
        trained_steps=trained_steps,
        tensors_bytes=size,
        tensors_sha256=sha256,
        spec=spec,
        learning_rate=learning_rate,
    )
    write_json(out_dir / DELTAS, deltas.to_json())
    write_json(out_dir / PATCH_META, PATCH_META_FIELDS.json(meta))
    return deltas


def read_patch(patch_dir: Path) -> LayerPatch:
    """Load a patch directory written by `write_patch`."""
    meta_path, tensor_path = patch_dir / PATCH_META, patch_dir / PATCH_TENSORS
    if not meta_path.is_file() or not tensor_path.is_file():
        raise InputError(
            "PATCH_DIR",
            f"{patch_dir} holds no layer patch ({PATCH_META} and {PATCH_TENSORS})",
            "pass the --out directory of `layerpilot train`",
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(
            "PATCH_DIR",
            f"{meta_path} is not valid JSON ({error})",
            "re-create the patch with `layerpilot train`",
        ) from None
    version = meta.get("schemaVersion") if isinstance(meta, dict) else None
    if version != SCHEMA_VERSION:
        raise InputError(
            "PATCH_DIR",
            f"patch schema {version} is not {SCHEMA_VERSION}",
            "re-create it with this layerpilot version",
        )
    expected = (meta.get("tensorsBytes"), meta.get("tensorsSha256"))
    if expected != (None, None) and _file_digest(tensor_path) != expected:
        raise InputError(
            "PATCH_DIR",
            f"{tensor_path} does not match the size and SHA-256 recorded in {PATCH_META} "
            "(changed or truncated since it was written)",
            "re-create the patch with `layerpilot train --resume`, or restore the original file",
        )
    try:
        # safetensors parses a header and raw tensors only: a pickle (or anything else) never runs.
        tensors = load_file(str(tensor_path))
    except Exception as error:
        raise InputError(
            "PATCH_DIR",
            f"{tensor_path} is not a safetensors file ({first_line(str(error)) or type(error).__name__})",
            "re-create the patch with `layerpilot train`",
        ) from None
    return LayerPatch(tensors=tensors, meta=meta)


def _file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return path.stat().st_size, digest.hexdigest()


def apply_to_model(model: torch.nn.Module, patch: LayerPatch) -> None:
    """Overwrite the patched tensors in a loaded base model, in place (cast to the model's dtypes)."""
    params: dict[str, torch.Tensor] = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    missing = sorted(set(patch.tensors) - set(params))
    if missing:
        raise LayerpilotError(
            f"the base model has no parameter {missing[0]} (and {len(missing) - 1} more): "
            "this patch belongs to a different architecture"
        )
    with torch.no_grad():
        for name, tensor in patch.tensors.items():
            target = params[name]
            if tuple(target.shape) != tuple(tensor.shape):
                raise LayerpilotError(
                    f"{name}: patch shape {tuple(tensor.shape)} does not match base {tuple(target.shape)}"
                )
            target.copy_(tensor.to(device=target.device, dtype=target.dtype))


def check_base(patch: LayerPatch, base_dir: Path) -> None:
    """Refuse a base model whose weights differ from the one the patch was trained on."""
    expected = patch.meta.get("base", {}).get("fingerprint")
    actual = base_fingerprint(base_dir)
    if expected != actual:
        raise InputError(
            "BASE",
            f"base weights {actual[:19]}… differ from the patch's base {str(expected)[:19]}… "
            f"({patch.meta.get('base', {}).get('uri')})",
            "apply the patch to the model it was trained on",
        )


def load_patched_model(model: ModelSpec, patch: LayerPatch | None) -> tuple[Any, Any]:
    """Model and tokenizer of `model`, with `patch` applied when one is given.

    The base is checked against the patch's fingerprint before any weights are loaded.
    """
    if patch is not None:
        check_base(patch, resolve_model_dir(model.uri, model.revision))
    loaded, tokenizer = load_model_and_tokenizer(model)
    if patch is not None:
        apply_to_model(loaded, patch)
    return loaded, tokenizer


def apply_patch(base_uri: str, patch_dir: Path, out_dir: Path, revision: str | None = None) -> dict[str, Any]:
    """Write base + patch as a full transformers model directory (with the base's tokenizer)."""
    model_spec = ModelSpec(uri=base_uri, revision=revision)
    patch = read_patch(patch_dir)
    check_base(patch, resolve_model_dir(model_spec.uri, model_spec.revision))
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InputError("OUT", f"{out_dir} is not empty", "choose a new directory; nothing was overwritten")
    model, tokenizer = load_model_and_tokenizer(model_spec)
    apply_to_model(model, patch)
    # Written beside OUT and renamed into place: a killed apply leaves no half model at OUT.
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        write_json(partial / "layerpilot_patch.json", patch.meta)
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(partial, out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return {"outDir": out_dir, "layers": patch.layers, "tensors": len(patch.tensors)}
