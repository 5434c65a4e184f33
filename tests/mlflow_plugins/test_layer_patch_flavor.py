"""The `layer_patch` flavor: only patch files plus the base reference, and a pyfunc whose generations equal
base + patch applied directly."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from mlflow_plugins import layer_patch_flavor
from service.errors import InputError
from service.evaluation import generate_greedy
from service.models.hub import DEMO_MODEL_DIR
from service.models.loading import load_model_and_tokenizer
from service.patch import PATCH_META, apply_to_model, read_patch
from service.spec.models import ModelSpec
from service.tracking.flavor import LOADER_MODULE
from tests.mlflow_server import MlflowServer
from tests.service.tracking.helpers import register_by_publishing

PROMPTS = ["12+7=", "3+45=", "99+1=", "50+50="]


def _direct(patch_dir: Path, max_new_tokens: int) -> list[str]:
    model, tokenizer = load_model_and_tokenizer(ModelSpec(uri="builtin:demo"))
    apply_to_model(model, read_patch(patch_dir))
    return generate_greedy(model, tokenizer, PROMPTS, max_new_tokens=max_new_tokens)


def test_saved_model_holds_the_patch_and_a_readable_base_reference(
    trained_run: dict[str, Any], tmp_path: Path
) -> None:
    layer_patch_flavor.save_model(trained_run["out"], tmp_path / "model", max_new_tokens=6)
    files = {
        p.relative_to(tmp_path / "model").as_posix() for p in (tmp_path / "model").rglob("*") if p.is_file()
    }
    assert files == {
        "MLmodel",
        "conda.yaml",
        "python_env.yaml",
        "requirements.txt",
        "patch/layer_patch.safetensors",
        "patch/layer_patch.json",
        "patch/deltas.json",
    }
    size = sum(p.stat().st_size for p in (tmp_path / "model").rglob("*") if p.is_file())
    assert size < (DEMO_MODEL_DIR / "model.safetensors").stat().st_size / 4  # no base weights

    mlmodel = yaml.safe_load((tmp_path / "model" / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["layer_patch"]
    meta = json.loads((trained_run["out"] / PATCH_META).read_text())
    assert flavor["base_model"]["uri"] == "builtin:demo"
    assert flavor["base_model"]["fingerprint"] == meta["base"]["fingerprint"]
    assert flavor["layers"] == [trained_run["layer"]] and flavor["base_weights_included"] is False
    assert mlmodel["flavors"]["python_function"]["loader_module"] == layer_patch_flavor.__name__
    assert mlmodel["flavors"]["python_function"]["config"]["max_new_tokens"] == 6
    requirements = (tmp_path / "model" / "requirements.txt").read_text()
    assert "torch==" in requirements and "layerpilot==" in requirements and "+cpu" not in requirements

    with pytest.raises(InputError, match=r"^PATCH_DIR:"):
        layer_patch_flavor.save_model(tmp_path, tmp_path / "other")


def test_pyfunc_generates_what_base_plus_patch_generates(trained_run: dict[str, Any], tmp_path: Path) -> None:
    layer_patch_flavor.save_model(trained_run["out"], tmp_path / "model", max_new_tokens=4)
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    expected = _direct(trained_run["out"], 4)
    assert loaded.predict(PROMPTS) == expected
    assert loaded.predict(PROMPTS[:1], params={"max_new_tokens": 1}) == [expected[0][:1]]
    # The patch changes generations: the comparison above is not base against base.
    base, tokenizer = load_model_and_tokenizer(ModelSpec(uri="builtin:demo"))
    assert generate_greedy(base, tokenizer, PROMPTS, max_new_tokens=4) != expected


def test_loading_refuses_a_base_with_other_weights(trained_run: dict[str, Any], tmp_path: Path) -> None:
    layer_patch_flavor.save_model(trained_run["out"], tmp_path / "model")
    meta_path = tmp_path / "model" / "patch" / PATCH_META
    meta = json.loads(meta_path.read_text())
    meta["base"]["fingerprint"] = "sha256:" + "0" * 64
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"^BASE: base weights"):
        mlflow.pyfunc.load_model(str(tmp_path / "model"))


def test_log_model_through_the_fluent_api_and_load_the_native_patch(
    mlflow_server: MlflowServer, trained_run: dict[str, Any], clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    clean_mlflow_env.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    experiment = MlflowClient(mlflow_server.uri).create_experiment(f"flavor-{uuid.uuid4().hex[:8]}")
    with mlflow.start_run(experiment_id=experiment) as run:
        info = layer_patch_flavor.log_model(trained_run["out"], name="layer_patch")
    assert info.model_uri.startswith("models:/m-") and info.run_id == run.info.run_id
    native = layer_patch_flavor.load_model(info.model_uri)
    original = read_patch(trained_run["out"])
    assert native.layers == original.layers and set(native.tensors) == set(original.tensors)
    assert all(native.tensors[k].equal(original.tensors[k]) for k in original.tensors)


def test_registered_version_round_trips_through_the_registry(
    mlflow_server: MlflowServer,
    trained_run: dict[str, Any],
    tmp_path: Path,
    clean_mlflow_env: pytest.MonkeyPatch,
) -> None:
    name = f"flavor-{uuid.uuid4().hex[:8]}"
    registered = register_by_publishing(
        tmp_path, mlflow_server.uri, "flavor", trained_run["out"], name, eval_after=0.5, max_new_tokens=4
    )
    clean_mlflow_env.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@candidate")
    assert loaded.predict(PROMPTS) == _direct(trained_run["out"], 4)
    assert registered["modelUri"] == f"models:/{name}/1"

    # Measured, not assumed: the registered artifacts are a fraction of the base weights.
    model_id = registered["loggedModelUri"].removeprefix("models:/")
    downloaded = Path(
        mlflow.artifacts.download_artifacts(f"models:/{model_id}", dst_path=str(tmp_path / "dl"))
    )
    size = sum(p.stat().st_size for p in downloaded.rglob("*") if p.is_file())
    assert size < (DEMO_MODEL_DIR / "model.safetensors").stat().st_size / 4


def test_saved_models_name_the_plugin_as_their_loader() -> None:
    # The engine saves, the plugin loads: the name MLflow imports is the plugin's, and the engine
    # never imports it (import-linter checks that side).
    assert layer_patch_flavor.__name__ == LOADER_MODULE and callable(layer_patch_flavor._load_pyfunc)
    assert layer_patch_flavor.FLAVOR_NAME == "layer_patch"
