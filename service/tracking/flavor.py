"""The `layer_patch` MLflow model flavor, as it is saved: a layer patch plus a reference to its base.

A saved model holds only the trained layers' tensors (`patch/layer_patch.safetensors`), their
metadata (`patch/layer_patch.json`) and the relative weight changes (`patch/deltas.json`). The base
weights are never copied: the `MLmodel` names the base (uri, revision, fingerprint), so a reviewer
reads from it alone which base and which layers a version changes, and a registered version is a
few hundred KB instead of the whole model.

Loading is the other half of the flavor and lives in `mlflow_plugins.layer_patch_flavor` (it runs
the model): the `MLmodel` names that module as the pyfunc's `loader_module`, which MLflow imports
when someone loads the model. The registration (`service.tracking.registration`) only saves.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.models import Model, ModelSignature
from mlflow.models.model import MLMODEL_FILE_NAME
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.utils.environment import (
    _CONDA_ENV_FILE_NAME,
    _PYTHON_ENV_FILE_NAME,
    _REQUIREMENTS_FILE_NAME,
    _process_pip_requirements,
    _PythonEnv,
)
from mlflow.utils.model_utils import _validate_and_prepare_target_save_path

from service import __version__
from service.patch import PATCH_FILES, read_patch

FLAVOR_NAME = "layer_patch"
PATCH_SUBDIR = "patch"
DEFAULT_MAX_NEW_TOKENS = 16
# The module MLflow imports to load the pyfunc (written into MLmodel): the plugin, a face of the
# engine, never imported from here.
LOADER_MODULE = "mlflow_plugins.layer_patch_flavor"

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
    patch = read_patch(Path(patch_dir))  # InputError naming PATCH_DIR when it is not a patch
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
