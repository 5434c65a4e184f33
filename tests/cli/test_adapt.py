"""`layerpilot demo` (and so `adapt`): what it leaves for a reviewer, and the model it ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import app
from service.adapt import RESULT_FIELDS
from service.models.hub import DEMO_MODEL_DIR
from service.patch import PATCH_META_FIELDS, PATCH_TENSORS
from service.probe.report import LAYER_FIELDS, MODE_FIELDS, REPORT_FIELDS
from service.record import RECORD_FIELDS
from service.tracking.published import PUBLISHED
from service.training.rundir import RUN_FILE_FIELDS
from tests.cli.helpers import runner


def test_demo_model_ships_in_the_package() -> None:
    assert (DEMO_MODEL_DIR / "model.safetensors").stat().st_size < 10_000_000
    info = json.loads((DEMO_MODEL_DIR / "build_info.json").read_text())
    assert 0.2 <= info["evalAccuracy"] <= 0.5


def test_demo_probes_trains_registers_and_says_where_to_look(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    """`make demo` on a shortened schedule: the local store it leaves is what a reviewer opens."""
    from mlflow import MlflowClient

    args = ["demo", "--workdir", str(tmp_path), "--probe-steps", "2", "--max-steps", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    store = f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert f"mlflow ui --backend-store-uri {store}" in result.stdout
    assert "registered demo-arith version 1 (alias candidate)" in result.stdout

    report = json.loads((tmp_path / "probe" / "probe_report.json").read_text())
    top = next(layer["index"] for layer in report["layers"] if layer["rank"] == 1)
    assert report["selected"] == [top]
    assert (tmp_path / "train" / PATCH_TENSORS).exists()
    assert (tmp_path / "model" / "model.safetensors").exists()

    # every field the files hold is documented in the reference (docs/reference.md)
    def keys(path: str) -> set[str]:
        return set(json.loads((tmp_path / path).read_text()))

    assert set(report) <= {*REPORT_FIELDS.help, *MODE_FIELDS}, set(report) - set(REPORT_FIELDS.help)
    assert {key for layer in report["layers"] for key in layer} <= set(LAYER_FIELDS.help)
    assert keys("train/layer_patch.json") == set(PATCH_META_FIELDS)
    assert keys("train/run.json") == set(RUN_FILE_FIELDS)
    assert keys("record.json") == keys("train/record.json") == set(RECORD_FIELDS)
    assert keys("published.json") == set(PUBLISHED)
    assert keys("adapt_result.json") == set(RESULT_FIELDS.help)

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("layerpilot-demo")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    parent = runs["adapt builtin:demo"]
    for child in ("probe", "train", "eval"):
        assert runs[child].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert {a.path for a in client.list_artifacts(runs["probe"].info.run_id)} == {
        "probe_report.json",
        "probe_report.png",
    }
    version = client.get_model_version_by_alias("demo-arith", "candidate")
    assert str(version.version) == "1" and version.run_id == parent.info.run_id
    assert version.tags["layerpilot.layers"] == str(top)
