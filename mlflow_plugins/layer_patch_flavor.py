"""The `layer_patch` MLflow model flavor: a layer patch plus a reference to its base model.

Saving lives in the engine (`service.tracking.flavor`, what a registration writes); this module is
the flavor as MLflow and its users meet it: `save_model`, `log_model`, `load_model` and the pyfunc
loader (`_load_pyfunc`) that every saved `MLmodel` names. The loader fetches the base the way
`layerpilot train` did and refuses it unless its weights fingerprint matches the patch's.

    import mlflow
    from mlflow_plugins import layer_patch_flavor

    with mlflow.start_run():
        info = layer_patch_flavor.log_model("layerpilot-train", name="layer_patch")
    mlflow.pyfunc.load_model(info.model_uri).predict(["12+7="])   # greedy completions

The pyfunc's `model_config` may override `max_new_tokens` and `base_uri` (e.g. a local copy of a Hub
model on a machine without the Hub); the fingerprint check still applies.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, cast

from mlflow.models import Model
from mlflow.models.model import ModelInfo
from mlflow.tracking.artifact_utils import _download_artifact_from_uri
from mlflow.utils.model_utils import _get_flavor_configuration

from service.evaluation import generate_greedy
from service.patch import LayerPatch, load_patched_model, read_patch
from service.spec.models import ModelSpec
from service.tracking.flavor import (
    DEFAULT_MAX_NEW_TOKENS,
    FLAVOR_NAME,
    PATCH_SUBDIR,
    SIGNATURE,
    get_default_pip_requirements,
    save_model,
)

__all__ = [
    "FLAVOR_NAME",
    "SIGNATURE",
    "LayerPatchPyfunc",
    "get_default_pip_requirements",
    "load_model",
    "log_model",
    "save_model",
]


def log_model(
    patch_dir: str | os.PathLike[str],
    name: str = FLAVOR_NAME,
    *,
    registered_model_name: str | None = None,
    run_id: str | None = None,
    max_new_tokens: int | None = None,
    tags: dict[str, Any] | None = None,
    pip_requirements: list[str] | None = None,
    extra_pip_requirements: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> ModelInfo:
    """Log the patch as a LoggedModel (`models:/m-…`) of the active run, or of `run_id`."""
    info = Model.log(
        artifact_path=None,
        name=name,
        flavor=sys.modules[__name__],
        registered_model_name=registered_model_name,
        run_id=run_id,
        tags=tags,
        metadata=metadata,
        patch_dir=patch_dir,
        max_new_tokens=max_new_tokens,
        pip_requirements=pip_requirements,
        extra_pip_requirements=extra_pip_requirements,
    )
    return cast(ModelInfo, info)


def load_model(model_uri: str, dst_path: str | None = None) -> LayerPatch:
    """The native object: the patch's tensors and metadata (apply it with `service.patch`)."""
    local = _download_artifact_from_uri(artifact_uri=model_uri, output_path=dst_path)
    conf = _get_flavor_configuration(local, FLAVOR_NAME)
    return read_patch(Path(local) / conf.get("patch", PATCH_SUBDIR))


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> LayerPatchPyfunc:
    """Called by `mlflow.pyfunc.load_model` with `path` = the model's `patch` directory."""
    config = dict(model_config or {})
    patch = read_patch(Path(path))
    base = patch.meta.get("base", {})
    spec = ModelSpec(uri=config.get("base_uri") or base.get("uri"), revision=base.get("revision"))
    model, tokenizer = load_patched_model(spec, patch)
    return LayerPatchPyfunc(model, tokenizer, int(config.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS))


class LayerPatchPyfunc:
    """Base + patch behind pyfunc's `predict`: prompts in, greedy completions out."""

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> list[str]:
        limit = int((params or {}).get("max_new_tokens") or self.max_new_tokens)
        return generate_greedy(self.model, self.tokenizer, _prompts(model_input), max_new_tokens=limit)

    def get_raw_model(self) -> Any:
        return self.model


def _prompts(model_input: Any) -> list[str]:
    """pyfunc hands over a list, a str, a numpy array or a one-column DataFrame after schema checks."""
    if isinstance(model_input, str):
        return [model_input]
    if hasattr(model_input, "iloc"):  # pandas DataFrame or Series
        frame = model_input.to_frame() if hasattr(model_input, "to_frame") else model_input
        return [str(v) for v in frame.iloc[:, 0].tolist()]
    if hasattr(model_input, "tolist"):
        return [str(v) for v in model_input.tolist()]
    return [str(v) for v in model_input]
