"""The `layer_patch` MLflow model flavor: a layer patch plus a reference to its base model.

A logged model holds only the trained layers' tensors (`patch/layer_patch.safetensors`), their
metadata (`patch/layer_patch.json`) and the relative weight changes (`patch/deltas.json`). The base
weights are never copied: the `MLmodel` names the base (uri, revision, fingerprint) and the loader
fetches it the way `layerpilot train` did, then refuses it unless its fingerprint matches. That keeps
a registered version a few hundred KB instead of the whole model, and a reviewer can read from the
`MLmodel` file alone which base and which layers a version changes.

    import mlflow
    from mlflow_plugins import layer_patch_flavor

    with mlflow.start_run():
        info = layer_patch_flavor.log_model("layerpilot-train", name="layer_patch")
    mlflow.pyfunc.load_model(info.model_uri).predict(["12+7="])   # greedy completions

The pyfunc's `model_config` may override `max_new_tokens` and `base_uri` (e.g. a local copy of a Hub
model on a machine without the Hub); the fingerprint check still applies.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
from pathlib import Path
from typing import Any, cast

import mlflow
import yaml
from mlflow.models import Model, ModelSignature
from mlflow.models.model import MLMODEL_FILE_NAME, ModelInfo
from mlflow.tracking.artifact_utils import _download_artifact_from_uri
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.utils.environment import (
    _CONDA_ENV_FILE_NAME,
    _PYTHON_ENV_FILE_NAME,
    _REQUIREMENTS_FILE_NAME,
    _process_pip_requirements,
    _PythonEnv,
)
from mlflow.utils.model_utils import _get_flavor_configuration, _validate_and_prepare_target_save_path

from service import __version__
from service.evaluation import generate_greedy
from service.patch import PATCH_FILES, LayerPatch, load_patched_model, read_patch
from service.spec.models import ModelSpec

FLAVOR_NAME = "layer_patch"
PATCH_SUBDIR = "patch"
DEFAULT_MAX_NEW_TOKENS = 16
# MLflow imports this module by name to load the pyfunc (written into MLmodel as `loader_module`).
LOADER_MODULE = __name__

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.string)]),
    outputs=Schema([ColSpec(DataType.string)]),
    params=ParamSchema([ParamSpec("max_new_tokens", DataType.long, DEFAULT_MAX_NEW_TOKENS)]),
)


def get_default_pip_requirements() -> list[str]:
    """What the pyfunc needs to load base + patch; pinned to this environment's versions."""
    reqs = []
    for package in ("torch", "transformers", "safetensors"):
        # A local label (`+cpu`) is not installable from PyPI; the build is the installer's choice.
        version = importlib.metadata.version(package).split("+")[0]
        reqs.append(f"{package}=={version}")
    reqs.append(f"layerpilot=={__version__}")
    return reqs


def save_model(
    patch_dir: str | os.PathLike[str],
    path: str | os.PathLike[str],
    mlflow_model: Model | None = None,
    *,
    max_new_tokens: int | None = None,
    signature: ModelSignature | None = None,
    pip_requirements: list[str] | None = None,
    extra_pip_requirements: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write an MLflow model directory at `path` holding the patch files of `patch_dir`."""
    patch = read_patch(Path(patch_dir))  # SpecError naming PATCH_DIR when it is not a patch
    target = Path(os.path.abspath(path))
    _validate_and_prepare_target_save_path(str(target))
    data = target / PATCH_SUBDIR
    data.mkdir()
    for name in PATCH_FILES:
        if (Path(patch_dir) / name).is_file():
            shutil.copy2(Path(patch_dir) / name, data / name)

    mlflow_model = mlflow_model if mlflow_model is not None else Model()
    mlflow_model.signature = signature or SIGNATURE
    if metadata is not None:
        mlflow_model.metadata = metadata
    base = patch.meta.get("base", {})
    mlflow_model.add_flavor(
        FLAVOR_NAME,
        patch=PATCH_SUBDIR,
        layers=patch.layers,
        layers_path=patch.meta.get("layersPath"),
        num_tensors=len(patch.tensors),
        num_parameters=sum(t.numel() for t in patch.tensors.values()),
        dtype=patch.meta.get("dtype"),
        trained_steps=patch.meta.get("trainedSteps"),
        base_model={
            "uri": base.get("uri"),
            "revision": base.get("revision"),
            "fingerprint": base.get("fingerprint"),
            "model_type": base.get("modelType"),
            "num_layers": base.get("numLayers"),
        },
        base_weights_included=False,
        layerpilot_version=__version__,
    )
    mlflow.pyfunc.add_to_model(
        mlflow_model,
        loader_module=LOADER_MODULE,
        data=PATCH_SUBDIR,
        conda_env=_CONDA_ENV_FILE_NAME,
        python_env=_PYTHON_ENV_FILE_NAME,
        model_config={"max_new_tokens": max_new_tokens or DEFAULT_MAX_NEW_TOKENS, "base_uri": None},
    )
    mlflow_model.model_size_bytes = sum(f.stat().st_size for f in data.iterdir())
    mlflow_model.save(str(target / MLMODEL_FILE_NAME))
    _write_environment(target, pip_requirements, extra_pip_requirements)


def _write_environment(
    target: Path, pip_requirements: list[str] | None, extra_pip_requirements: list[str] | None
) -> None:
    defaults = None if pip_requirements is not None else get_default_pip_requirements()
    conda_env, reqs, _ = _process_pip_requirements(defaults, pip_requirements, extra_pip_requirements)
    (target / _CONDA_ENV_FILE_NAME).write_text(yaml.safe_dump(conda_env, default_flow_style=False))
    (target / _REQUIREMENTS_FILE_NAME).write_text("\n".join(reqs) + "\n")
    _PythonEnv.current().to_yaml(str(target / _PYTHON_ENV_FILE_NAME))


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
