"""`adapt` end to end against a real MLflow server: run tree, per-layer metrics, artifacts, registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from service.adapt import RESULT_JSON, adapt
from service.probe.report import REPORT_JSON
from service.record import RECORD_FILE
from service.tracking import review
from service.tracking.publish import PUBLISHED_FILE
from tests.conftest import small_spec
from tests.mlflow_server import MlflowServer, free_port


def adapt_spec(tracking_uri: str, name: str, **overrides: Any) -> Any:
    """Exact probe of layers 1 and 2 (4 units of 2 RL steps), then 2 training steps."""
    return small_spec(
        probe={"mode": "exact", "steps": 2, "layers": [1, 2], **overrides.pop("probe", {})},
        selection={"strategy": "top-k", "k": 1},
        mlflow={"trackingUri": tracking_uri, "experiment": name, "registeredModel": f"{name}-model"},
        **overrides,
    )


def _runs(client: MlflowClient, experiment: str) -> dict[str, Any]:
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    return {run.info.run_name: run for run in client.search_runs([exp.experiment_id])}


def test_adapt_logs_the_run_tree_and_registers_a_candidate(
    mlflow_server: MlflowServer, clean_mlflow_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = adapt_spec(mlflow_server.uri, "adapt-tree")
    result = adapt(spec, tmp_path)
    assert result.tracked.not_logged is None and result.tracked.registered is not None
    client = MlflowClient(mlflow_server.uri)
    runs = _runs(client, "adapt-tree")

    parent = runs[f"adapt {spec.model.uri}"]
    experiment = client.get_experiment_by_name("adapt-tree")
    assert experiment is not None  # filed under model training, not GenAI evaluations, in the UI
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    children = {
        name for name, run in runs.items() if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert children == {"probe", "train", "eval"}
    probe = runs["probe"]
    units = {
        name for name, run in runs.items() if run.data.tags.get("mlflow.parentRunId") == probe.info.run_id
    }
    assert units == {"probe full", "probe base", "probe layer-1", "probe layer-2"}
    assert all(run.info.status == "FINISHED" for run in runs.values())

    # the spec as dotted params and the tags runs are found by
    assert parent.data.params["algorithm.learningRate"] == str(spec.algorithm.learning_rate)
    assert parent.data.tags["layerpilot.selected_layers"] == ",".join(map(str, result.layers))
    assert parent.data.metrics["eval/after"] == pytest.approx(result.evaluation.eval_after)

    # per-layer probe scores over depth, weight deltas at the trained layer's step
    history = client.get_metric_history(probe.info.run_id, "by_layer/score")
    assert sorted(m.step for m in history) == [1, 2]
    report = json.loads((tmp_path / "probe" / REPORT_JSON).read_text())
    assert {m.step: m.value for m in history} == {
        layer["index"]: pytest.approx(layer["score"]) for layer in report["layers"]
    }
    published = json.loads((tmp_path / PUBLISHED_FILE).read_text())  # where the record went
    assert published["runs"]["probe"] == probe.info.run_id and published["complete"] is True
    deltas = client.get_metric_history(runs["train"].info.run_id, "by_layer/delta_relative")
    assert [m.step for m in deltas] == result.layers and deltas[0].value > 0
    # one naming scheme: TRL's metrics are train/* in the train run and in the probe's unit runs
    assert {"train/loss", "train/reward"} <= set(runs["train"].data.metrics)
    assert "train/reward" in runs["probe layer-1"].data.metrics
    # summaries that mean something in a run table: the selected layer's, not the last layer's
    selected = next(layer for layer in report["layers"] if layer["index"] == result.layers[0])
    assert probe.data.metrics["probe/selected_score"] == pytest.approx(selected["score"])
    gain = result.evaluation.eval_after - result.evaluation.eval_before
    assert parent.data.metrics["eval/gain"] == pytest.approx(gain)

    # artifacts: report and chart, the patch files, the spec
    assert {a.path for a in client.list_artifacts(probe.info.run_id)} == {
        "probe_report.json",
        "probe_report.png",
    }
    patch_files = {a.path for a in client.list_artifacts(runs["train"].info.run_id, "layer_patch")}
    assert patch_files == {
        f"layer_patch/{n}" for n in ("layer_patch.safetensors", "layer_patch.json", "deltas.json")
    }
    assert "spec.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}

    # the registered version a reviewer decides on
    name = "adapt-tree-model"
    version = client.get_model_version_by_alias(name, "candidate")
    assert str(version.version) == result.tracked.registered["version"]
    assert version.run_id == parent.info.run_id
    after = result.evaluation.eval_after
    assert "eval score" in version.description and f"{after:.3f}" in version.description
    assert version.tags["layerpilot.eval_score"] == str(after)
    # what the operator reads back: the version on the run it comes from, the probe's answer
    assert parent.data.tags[review.REGISTERED_MODEL] == name
    assert parent.data.tags[review.MODEL_VERSION] == str(version.version)
    ranking = [layer["index"] for layer in sorted(report["layers"], key=lambda layer: layer["rank"])]
    assert probe.data.tags[review.TOP_LAYERS] == ",".join(map(str, ranking))
    assert probe.data.tags[review.SELECTED_LAYERS] == ",".join(map(str, result.layers))
    saved = json.loads((tmp_path / RESULT_JSON).read_text())
    assert saved["mlflow"]["registeredModel"]["version"] == str(version.version)


def test_adapt_with_auto_calibrates_within_training_and_the_review_shows_the_evidence(
    mlflow_server: MlflowServer, clean_mlflow_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = adapt_spec(
        mlflow_server.uri,
        "adapt-auto",
        dataset={"evalSize": 16},
        training={"learningRateMultiplier": "auto", "calibration": {"multipliers": [1, 3], "items": 16}},
    )
    result = adapt(spec, tmp_path)
    rate = json.loads((tmp_path / RESULT_JSON).read_text())["learningRate"]
    assert rate["chosenBy"] == "calibration" and rate["multiplier"] in (1.0, 3.0)
    client = MlflowClient(mlflow_server.uri)
    train_run = _runs(client, "adapt-auto")["train"]
    assert train_run.data.tags[review.LR_MULTIPLIER] == f"{rate['multiplier']:g}"
    assert train_run.data.metrics["calibration/multiplier"] == rate["multiplier"]
    assert {"calibration/score_x1", "calibration/score_x3", "calibration/base_score"} <= set(
        train_run.data.metrics
    )
    assert [a.path for a in client.list_artifacts(train_run.info.run_id, "calibration")] == [
        "calibration/calibration.json"
    ]
    version = client.get_model_version_by_alias("adapt-auto-model", "candidate")
    assert str(version.version) == result.tracked.registered["version"]
    assert "| learning rate |" in version.description
    assert "`auto`: on 16 calibration items held out from training and evaluation" in version.description


def test_jobs_log_into_the_run_the_operator_created(
    mlflow_server: MlflowServer, clean_mlflow_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = MlflowClient(mlflow_server.uri)
    experiment = client.create_experiment("adapt-adopted")
    operator_run = client.create_run(experiment, run_name="la/demo").info.run_id
    clean_mlflow_env.setenv("MLFLOW_RUN_ID", operator_run)
    spec = adapt_spec(mlflow_server.uri, "adapt-adopted", probe={"mode": "gradient"})
    result = adapt(spec, tmp_path, register=False)
    assert result.tracked.run_ids["adapt"] == operator_run
    runs = _runs(client, "adapt-adopted")
    assert {n for n, r in runs.items() if r.data.tags.get("mlflow.parentRunId") == operator_run} == {
        "probe",
        "train",
        "eval",
    }
    # the operator owns its run: the Job logs into it but leaves it open for the operator to close
    assert client.get_run(operator_run).info.status == "RUNNING"
    assert "algorithm.learningRate" in client.get_run(operator_run).data.params


def test_a_dead_server_loses_no_local_work_and_says_what_was_not_logged(
    clean_mlflow_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    clean_mlflow_env.setenv("LAYERPILOT_MLFLOW_ATTEMPTS", "1")
    clean_mlflow_env.setenv("LAYERPILOT_MLFLOW_TIMEOUT_S", "2")
    dead = f"http://127.0.0.1:{free_port()}"
    spec = adapt_spec(dead, "adapt-dead", probe={"mode": "gradient"})
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec.model_dump(mode="json", by_alias=True)))
    work = tmp_path / "work"
    result = CliRunner().invoke(app, ["adapt", str(spec_file), "--workdir", str(work), "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["evalAfter"] is not None and summary["mlflow"]["registeredModel"] is None
    assert f"MLflow at {dead} unreachable (connection refused): not published yet: " in result.stderr
    assert "1 registration" in result.stderr and f"`layerpilot mlflow sync {work}`" in result.stderr
    assert "not registered as adapt-dead-model" in result.stderr
    # every finished output is on disk, and so is the record MLflow will be published from
    for path in (
        "probe/probe_report.json",
        "probe/probe_report.png",
        "train/layer_patch.safetensors",
        RESULT_JSON,
        RECORD_FILE,
        f"train/{RECORD_FILE}",
        "train/metrics.jsonl",
        f"eval/{RECORD_FILE}",
    ):
        assert (work / path).is_file(), path
    assert json.loads((work / RECORD_FILE).read_text())["registration"]["name"] == "adapt-dead-model"
    assert json.loads((work / PUBLISHED_FILE).read_text())["complete"] is False
