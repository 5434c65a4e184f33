"""`layerpilot register` and the staged job the operator runs: probe units, `probe merge`, `train`,
`register`, each its own process adopting the MLflow run the operator created for it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from cli.main import app
from service.probe.chart import write_report
from service.probe.report import REPORT_JSON, LayerScore, ProbeReport
from service.register import REGISTER_FIELDS
from service.tracking import review
from tests.cli.helpers import resource, runner, write_spec
from tests.mlflow_server import MlflowServer, free_port

PARENT_RUN_ID = "mlflow.parentRunId"


def _spec(tracking_uri: str, experiment: str, **mlflow: Any) -> dict[str, Any]:
    """Exact probe of layers 1 and 2 (4 units of 2 RL steps), then 2 training steps."""
    return resource(
        dataset={"evalSize": 32},
        algorithm={"numGenerations": 4, "maxCompletionLength": 4, "learningRate": 1e-3},
        probe={"mode": "exact", "steps": 2, "layers": [1, 2]},
        selection={"strategy": "top-k", "k": 1},
        training={"maxSteps": 2, "batchSize": 8, "saveSteps": 2, "seed": 0},
        mlflow={"trackingUri": tracking_uri, "experiment": experiment, **mlflow},
    )


def _invoke(env: pytest.MonkeyPatch, run_id: str | None, *args: str) -> Any:
    """One stage as its own Job: `MLFLOW_RUN_ID` is the run the operator gave it (or none)."""
    if run_id is None:
        env.delenv("MLFLOW_RUN_ID", raising=False)
    else:
        env.setenv("MLFLOW_RUN_ID", run_id)
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_stages_as_jobs_register_a_candidate_from_the_operators_run(
    mlflow_server: MlflowServer, clean_mlflow_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = clean_mlflow_env
    env.chdir(tmp_path)
    name = f"staged-{uuid.uuid4().hex[:8]}"
    spec = str(write_spec(tmp_path, _spec(mlflow_server.uri, name, registeredModel=f"{name}-model")))
    work = tmp_path / "w"

    # What the operator does first: a parent run for the resource, one child run per stage.
    client = MlflowClient(mlflow_server.uri)
    experiment = client.create_experiment(name)
    parent = client.create_run(experiment, run_name="ns/la", tags={review.STAGE: "adapt"}).info.run_id
    stage_runs = {
        stage: client.create_run(
            experiment, run_name=stage, tags={review.STAGE: stage, PARENT_RUN_ID: parent}
        ).info.run_id
        for stage in ("probe", "train")
    }

    # The probe's Indexed Job: one pod per unit, no MLflow; then the merge, in the probe run.
    for index in range(4):  # full, layer 1, layer 2, base
        env.setenv("JOB_COMPLETION_INDEX", str(index))
        _invoke(env, None, "probe", spec, "--out", str(work / "probe"), "--layer-index", "job")
    merged = _invoke(
        env, stage_runs["probe"], "probe", "merge", str(work / "probe"), "--spec", spec, "--json"
    )
    report = json.loads(merged.stdout)
    _invoke(
        env,
        stage_runs["train"],
        "train",
        spec,
        "--from-probe",
        str(work / "probe" / REPORT_JSON),
        "--out",
        str(work / "train"),
        "--resume",
        "--json",
    )
    registered = _invoke(
        env,
        parent,
        "register",
        spec,
        "--probe",
        str(work / "probe"),
        "--patch",
        str(work / "train"),
        "--out",
        str(work / "register"),
        "--json",
    )
    result = json.loads(registered.stdout)
    assert set(result) == set(REGISTER_FIELDS.help)
    assert result["evalBefore"] == report["baselineScore"]  # the probe's base unit, not evaluated again
    assert result["layers"] == report["selected"]

    # The version with alias candidate, registered from the operator's parent run.
    version = client.get_model_version_by_alias(f"{name}-model", review.CANDIDATE)
    assert result["registeredModel"]["version"] == str(version.version)
    assert version.run_id == parent
    assert version.tags[review.EVAL_SCORE] == str(result["evalAfter"])
    assert stage_runs["probe"] in version.description and stage_runs["train"] in version.description

    # The eval child under the parent; every stage run found by the register Job.
    runs = {run.info.run_id: run for run in client.search_runs([experiment], max_results=100)}
    (eval_id,) = [rid for rid, run in runs.items() if run.data.tags.get(review.STAGE) == "eval"]
    assert runs[eval_id].data.tags[PARENT_RUN_ID] == parent
    assert runs[eval_id].data.metrics["eval/after"] == pytest.approx(result["evalAfter"])
    assert result["runIds"] == {"register": parent, "eval": eval_id}

    # What the operator reads back into the resource's status.
    parent_tags = runs[parent].data.tags
    assert parent_tags[review.REGISTERED_MODEL] == f"{name}-model"
    assert parent_tags[review.MODEL_VERSION] == str(version.version)
    assert parent_tags[review.STAGE] == "adapt"  # the operator's tags stand
    probe_tags = runs[stage_runs["probe"]].data.tags
    assert probe_tags[review.SELECTED_LAYERS] == ",".join(map(str, report["selected"]))
    ranking = [layer["index"] for layer in sorted(report["layers"], key=lambda layer: layer["rank"])]
    assert probe_tags[review.TOP_LAYERS] == ",".join(map(str, ranking))  # two candidates: both

    # One child run per probe unit under the merge's run; the training in the train run.
    under_probe = [run for run in runs.values() if run.data.tags.get(PARENT_RUN_ID) == stage_runs["probe"]]
    assert {run.info.run_name for run in under_probe} == {
        "probe full",
        "probe base",
        "probe layer-1",
        "probe layer-2",
    }
    assert "train/reward" in runs[stage_runs["train"]].data.metrics
    # The operator owns its runs: no Job ended one.
    assert {runs[rid].info.status for rid in (parent, *stage_runs.values())} == {"RUNNING"}


def test_a_spec_without_a_registered_model_is_bad_input(
    clean_mlflow_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, _spec(f"http://127.0.0.1:{free_port()}", "no-name"))
    result = runner.invoke(app, ["register", str(spec), "--probe", str(tmp_path), "--patch", str(tmp_path)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: spec.mlflow.registeredModel: not set")
    assert "registeredModel: my-model" in lines[0]  # the fix


def test_a_registration_that_did_not_happen_fails_and_keeps_the_patch(
    clean_mlflow_env: pytest.MonkeyPatch, tmp_path: Path, trained_run: dict[str, Any]
) -> None:
    env = clean_mlflow_env
    env.chdir(tmp_path)
    env.setenv("LAYERPILOT_MLFLOW_ATTEMPTS", "1")
    env.setenv("LAYERPILOT_MLFLOW_TIMEOUT_S", "2")
    dead = f"http://127.0.0.1:{free_port()}"
    spec = write_spec(tmp_path, _spec(dead, "dead", registeredModel="dead-model"))
    layers = [LayerScore(i, f"model.layers.{i}", 0.3, None, rank) for rank, i in enumerate([2, 1], 1)]
    probe = ProbeReport("builtin:demo", 6, "exact", "model.layers", layers, [2], baseline_score=0.25)
    write_report(probe, tmp_path)

    patch, out = str(trained_run["out"]), tmp_path / "register"
    args = ["register", str(spec), "--probe", str(tmp_path), "--patch", patch, "--out", str(out), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["registeredModel"] is None and summary["evalBefore"] == 0.25
    assert summary["evalAfter"] is not None  # the evaluation is done and reported all the same
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "not registered as dead-model" in error and f"the patch is kept in {patch}" in error
    assert error.endswith(f"`layerpilot mlflow sync {out}` registers it once MLflow answers")
    assert f"MLflow at {dead} unreachable (connection refused): not published yet:" in result.stderr
