"""Tracking against a real MLflow server: run trees, metrics by layer, artifacts, TRL step metrics,
registration, and what happens when the server hangs or dies mid-run (read back through MlflowClient)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from transformers import TrainerCallback

from service.errors import LayerpilotError, SpecError
from service.probe.report import LayerScore, ProbeReport
from service.spec.fingerprint import fingerprint
from service.spec.models import MlflowSpec
from service.tracking import records
from service.tracking.ledger import UNLOGGED_FILE
from service.tracking.retries import RetryPolicy
from service.tracking.review import CANDIDATE, EVAL_SCORE, LAYERS, flatten_params
from service.tracking.runs import UNLOGGED_DIR, Tracker
from service.tracking.uris import local_store_uri, resolve_tracking_uri, ui_command
from tests.conftest import TRAINED_LAYER, small_spec
from tests.mlflow_server import MlflowServer, free_port, launch, start_server

FAST = RetryPolicy(attempts=2, initial_delay_s=0.05, max_delay_s=0.1, request_timeout_s=2)


def _tracker(uri: str, workdir: Path, experiment: str | None = None) -> Tracker:
    return Tracker(uri, experiment or f"exp-{uuid.uuid4().hex[:8]}", local_dir=workdir, retry=FAST)


def test_tracking_uri_comes_from_spec_then_env_then_the_workdir(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    local = resolve_tracking_uri(MlflowSpec(), tmp_path)
    assert local == f"sqlite:///{tmp_path.resolve()}/mlflow.db" == local_store_uri(tmp_path)
    assert local.startswith("sqlite:////")  # absolute: the UI command works from any directory
    clean_mlflow_env.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(MlflowSpec(), tmp_path) == "http://env:5000"
    assert resolve_tracking_uri(MlflowSpec(trackingUri="http://spec:5000"), tmp_path) == "http://spec:5000"
    with pytest.raises(SpecError, match=r"^mlflow\.trackingUri: 'mlflow:5000' is not"):
        resolve_tracking_uri(MlflowSpec(trackingUri="mlflow:5000"), tmp_path)
    assert ui_command("http://mlflow:5000") is None


def test_run_tree_with_params_layer_metrics_tags_and_artifacts(
    mlflow_server: MlflowServer, tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    spec = small_spec()
    tracker = _tracker(mlflow_server.uri, tmp_path)
    (tmp_path / "report.json").write_text('{"a": 1}')
    (tmp_path / "patch").mkdir()
    (tmp_path / "patch" / "layer_patch.json").write_text("{}")
    scores = {0: 0.2, 1: 0.5, 2: 0.35}
    report = ProbeReport(
        model="builtin:demo",
        num_layers=3,
        mode="gradient",
        layers_path="model.layers",
        layers=[
            LayerScore(i, f"model.layers.{i}", s, None if i == 2 else s - 0.1, r)
            for r, (i, s) in enumerate(sorted(scores.items(), key=lambda kv: -kv[1]), start=1)
        ],
        selected=[1],
    )
    with tracker.start_run("adapt") as run:
        records.log_spec(run, spec)
        for layer, score in scores.items():
            with run.child(f"probe-layer-{layer}", tags={"layerpilot.layer": layer}) as child:
                child.log_metrics({"probe/score": score}, step=0)
        records.log_probe(run, report, tmp_path / "probe", spec)
        run.log_layer_metrics({1: {"by_layer/delta_relative": 0.012}})
        run.set_tags({"layerpilot.layers": "1"})
        run.log_artifact(tmp_path / "report.json")
        run.log_artifact(tmp_path / "patch", "patch")
        run.log_dict({"selected": [1]}, "selection.json")
    assert tracker.summary() is None and tracker.failures == []

    client = MlflowClient(mlflow_server.uri)
    parent = client.get_run(str(run.run_id))
    assert parent.info.status == "FINISHED"
    assert parent.data.params["algorithm.learningRate"] == "0.001"
    assert parent.data.params["training.maxSteps"] == "3"
    assert parent.data.params == flatten_params(spec.model_dump(mode="json", by_alias=True))
    tags = parent.data.tags
    assert tags["layerpilot.layers"] == "1" and tags["layerpilot.model"] == "builtin:demo"
    assert tags["layerpilot.strategy"] == "top-k" and tags["layerpilot.spec_hash"] == fingerprint(spec)
    assert tags["layerpilot.version"]

    def by_step(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(parent.info.run_id, key))

    assert by_step("by_layer/score") == sorted(scores.items())
    assert by_step("by_layer/contribution") == [
        (0, pytest.approx(0.1)),
        (1, pytest.approx(0.4)),
    ]  # null: not logged
    assert by_step("by_layer/rank") == [(0, 3), (1, 1), (2, 2)]
    assert by_step("by_layer/delta_relative") == [(1, 0.012)]
    # the summary a run table shows: the selected layer's numbers, not the last layer's
    assert parent.data.metrics["probe/selected_score"] == pytest.approx(0.5)
    assert parent.data.metrics["probe/best_contribution"] == pytest.approx(0.4)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["probe-layer-0", "probe-layer-1", "probe-layer-2"]
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["layerpilot.layer"] for c in children} == {"0", "1", "2"}
    listed = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"report.json", "patch", "selection.json", "probe_report.json", "probe_report.png"} <= listed
    assert [f.path for f in client.list_artifacts(parent.info.run_id, "patch")] == ["patch/layer_patch.json"]


def test_a_failing_body_marks_the_run_failed(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    tracker = _tracker(mlflow_server.uri, tmp_path)
    with pytest.raises(RuntimeError), tracker.start_run("adapt") as run:
        raise RuntimeError("probe crashed")
    assert MlflowClient(mlflow_server.uri).get_run(str(run.run_id)).info.status == "FAILED"


def test_step_logger_logs_trl_step_metrics_under_train(
    mlflow_server: MlflowServer, tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    from service.training.trainer import train

    spec = small_spec()
    tracker = _tracker(mlflow_server.uri, tmp_path)
    with tracker.start_run("adapt") as run, run.child("train") as child:
        result = train(spec, [TRAINED_LAYER], tmp_path / "out", on_step=[records.step_logger(child, spec)])
    client = MlflowClient(mlflow_server.uri)
    logged = client.get_run(str(child.run_id)).data.metrics
    for key in ("train/loss", "train/reward", "train/reward_std", "train/grad_norm"):
        assert key in logged, sorted(logged)
    assert not [key for key in logged if "clip_ratio" in key]  # always 0 with one update per batch
    assert sorted(m.step for m in client.get_metric_history(str(child.run_id), "train/reward")) == [1, 2, 3]
    assert logged["train/reward"] == pytest.approx(result.metrics["reward"])


def test_jobs_log_into_the_run_the_operator_created(
    mlflow_server: MlflowServer, tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    client = MlflowClient(mlflow_server.uri)
    experiment = client.create_experiment(f"op-{uuid.uuid4().hex[:8]}")
    operator_run = client.create_run(experiment, run_name="la/demo").info.run_id
    clean_mlflow_env.setenv("MLFLOW_RUN_ID", operator_run)

    tracker = _tracker(mlflow_server.uri, tmp_path, experiment="ignored-when-adopting")
    with (
        tracker.start_run("adapt", tags={"layerpilot.job": "probe-3"}) as run,
        run.child("probe-layer-3") as child,
    ):
        child.log_metric("probe/score", 0.4, step=3)
    assert run.run_id == operator_run and run.adopted
    adopted = client.get_run(operator_run)
    assert adopted.data.tags["layerpilot.job"] == "probe-3"
    assert adopted.info.status == "RUNNING"  # the operator owns it and ends it
    child_run = client.get_run(str(child.run_id))
    assert child_run.data.tags["mlflow.parentRunId"] == operator_run
    assert child_run.info.experiment_id == experiment

    clean_mlflow_env.setenv("MLFLOW_RUN_ID", "0" * 32)
    with pytest.raises(SpecError, match=r"^MLFLOW_RUN_ID: no run 0{32} at http"):
        tracker.start_run("adapt")


def test_register_patch_creates_a_reviewable_candidate(
    mlflow_server: MlflowServer,
    trained_run: dict[str, Any],
    tmp_path: Path,
    clean_mlflow_env: pytest.MonkeyPatch,
) -> None:
    tracker = _tracker(mlflow_server.uri, tmp_path)
    name = f"patch-{uuid.uuid4().hex[:8]}"
    probe_report = {
        "strategy": "top-k",
        "layers": [
            {"index": i, "score": 0.3 + i / 100, "contribution": i / 50, "rank": 6 - i} for i in range(6)
        ],
    }
    with tracker.start_run("adapt") as run, run.child("train") as train_run:
        registered = tracker.register_patch(
            run, trained_run["out"], name=name, eval_before=0.31, eval_after=0.42, eval_items=32,
            probe_report=probe_report, spec_hash="abc123", runs={"train": str(train_run.run_id)},
        )  # fmt: skip
    assert registered["version"] == "1" and registered["alias"] == CANDIDATE

    client = MlflowClient(mlflow_server.uri)
    version = client.get_model_version_by_alias(name, CANDIDATE)
    assert version.version == "1" and version.run_id == run.run_id
    assert version.tags[EVAL_SCORE] == "0.42" and version.tags[LAYERS] == str(TRAINED_LAYER)
    assert version.tags["layerpilot.spec_hash"] == "abc123"
    assert version.tags["layerpilot.base_model"] == "builtin:demo"
    description = version.description
    assert "0.310 → **0.420** (+0.110) on 32 held-out items" in description
    assert f"| {TRAINED_LAYER} | 0.320 | +0.040 | 4 |" in description  # probe row of the trained layer
    assert "✔" in description and "selection `top-k`" in description and str(train_run.run_id) in description
    assert f"{mlflow_server.uri}/#/experiments/" in description  # runs are links on a server
    # The logged model is a layer_patch flavor output of the run, without base weights.
    logged = client.get_logged_model(registered["loggedModelUri"].removeprefix("models:/"))
    assert logged.source_run_id == run.run_id
    files = {f.path: f.file_size for f in client.list_logged_model_artifacts(logged.model_id)}
    assert "MLmodel" in files and "patch" in files
    assert not any(path.endswith("model.safetensors") for path in files)


def test_an_unreachable_server_costs_no_work_and_is_summarised(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    (tmp_path / "probe_report.json").write_text("{}")
    started = time.monotonic()
    tracker = _tracker(uri, tmp_path)
    with tracker.start_run("adapt") as run:
        run.log_params({"a": 1, "b": 2})
        for layer in range(3):
            run.log_metrics({"probe/score": 0.1, "probe/contribution": 0.2}, step=layer)
        run.log_artifact(tmp_path / "probe_report.json")
        run.log_dict({"selected": [2]}, "selection.json")
        run.child("probe-layer-0").log_metric("probe/score", 0.3, step=0)
    assert time.monotonic() - started < 10  # bounded retries, not MLflow's minutes of backoff
    assert run.run_id is None
    counts = tracker.not_logged()
    assert counts["metric"] == 7 and counts["param"] == 2 and counts["artifact"] == 2 and counts["run"] == 2
    summary = tracker.summary()
    assert summary is not None and "\n" not in summary
    assert summary.startswith(f"MLflow at {uri} unreachable: not logged: ") and "7 metrics" in summary
    # What was not logged is on disk: its payloads, the JSON artifact, and the files themselves.
    lines = [json.loads(line) for line in (tmp_path / UNLOGGED_FILE).read_text().splitlines()]
    assert {"probe/score": 0.1, "probe/contribution": 0.2} in [
        line["payload"].get("metrics") for line in lines
    ]
    assert json.loads((tmp_path / UNLOGGED_DIR / "adapt" / "selection.json").read_text()) == {"selected": [2]}
    assert (tmp_path / "probe_report.json").is_file()
    with pytest.raises(LayerpilotError, match="never created the run"):
        tracker.register_patch(run, tmp_path, name="x")


class _Crash(TrainerCallback):
    """Kills the tracking server right after the trainer logged `at_step`."""

    def __init__(self, server: MlflowServer, at_step: int) -> None:
        self.server, self.at_step = server, at_step

    def on_log(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if state.global_step == self.at_step:
            self.server.kill()


def test_step_metrics_travel_in_batches_and_a_failed_training_still_sends_its_last_ones(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "work"
    tracker = Tracker(local_store_uri(workdir), "steps", local_dir=workdir, retry=FAST)
    client = MlflowClient(local_store_uri(workdir))
    with (
        pytest.raises(RuntimeError),
        tracker.start_run("train") as run,
        records.step_logger(run, small_spec()) as hook,
    ):
        hook(1, 10, {"reward": 0.1})  # the first step is sent at once: the UI shows a curve early
        hook(2, 10, {"reward": 0.2})
        hook(3, 10, {"reward": 0.3})
        steps = [m.step for m in client.get_metric_history(str(run.run_id), "train/reward")]
        assert steps == [1]  # the others wait for the interval
        raise RuntimeError("training crashed")
    history = client.get_metric_history(str(run.run_id), "train/reward")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert not tracker.failures


def test_server_that_hangs_then_dies_mid_training(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    from service.tracking.registry import Registry
    from service.training.trainer import train

    server = start_server(tmp_path / "server")
    try:
        no_cooldown = RetryPolicy(attempts=2, initial_delay_s=0.05, request_timeout_s=1, cooldown_s=0)
        tracker = Tracker(server.uri, "crash", local_dir=tmp_path / "work", retry=no_cooldown)
        run = tracker.start_run("adapt")
        run.log_params({"seed": 0})
        patient = Tracker(
            server.uri, "crash", local_dir=tmp_path / "other", retry=replace(no_cooldown, cooldown_s=60)
        )
        patient_run = patient.start_run("other")

        server.pause()  # hung: connections accepted, nothing answered
        started = time.monotonic()
        assert not run.log_metric("probe/score", 0.5, step=1)
        assert time.monotonic() - started < 6 and tracker.failures[-1].error == "timed out"
        # With a cooldown, one timeout stands for the whole outage: later calls are skipped at once.
        started = time.monotonic()
        for step in range(20):
            patient_run.log_metric("loss", 1.0, step=step)
        assert time.monotonic() - started < 6
        assert patient.not_logged() == {"metric": 20}
        assert [f.error for f in patient.failures[1:]] == [
            "skipped: MLflow was unreachable moments before"
        ] * 19
        server.resume()
        assert run.log_metric("probe/score", 0.6, step=2)  # back: logging goes on

        child = run.child("train")
        spec = small_spec()
        result = train(
            spec,
            [TRAINED_LAYER],
            tmp_path / "work" / "train",
            on_step=[records.step_logger(child, spec)],
            callbacks=[_Crash(server, at_step=2)],
        )
        run.log_artifact(tmp_path / "work" / "train", "patch")
        child.end()
        run.end()

        # Nothing lost locally: training finished and wrote its patch.
        assert result.global_step == 3 and (tmp_path / "work" / "train" / "layer_patch.safetensors").is_file()
        counts = tracker.not_logged()
        assert counts["metric"] >= 2 and counts["artifact"] == 1 and counts["status"] == 2
        summary = tracker.summary()
        assert summary is not None and "unreachable" in summary and "1 artifact" in summary
        with pytest.raises(
            LayerpilotError, match=r"^MLflow at http://127\.0\.0\.1:\d+ is unreachable"
        ) as raised:
            Registry(server.uri, retry=FAST).list_models()
        assert "\n" not in str(raised.value)

        # The server's own store and the not-logged record split the trainer's metrics between them.
        store = MlflowClient(server.store_uri)
        child_id = str(child.run_id)
        stored = {
            (key, m.step)
            for key in store.get_run(child_id).data.metrics
            for m in store.get_metric_history(child_id, key)
        }
        unlogged = {
            (key, step)
            for f in tracker.failures
            if f.kind == "metric" and f.run_id == child_id
            for key, _, step, _ in f.payload["points"]
        }
        # Step metrics travel in batches: step 1 at once, the rest with the last step (server gone).
        assert {("train/reward", 1), ("train/loss", 1)} <= stored
        assert {("train/reward", 2), ("train/reward", 3), ("train/loss", 3)} <= unlogged
        assert not stored & unlogged
        # A timed-out call may still land once the server wakes up: "not logged" means "not confirmed".
        assert 2 in {m.step for m in store.get_metric_history(str(run.run_id), "probe/score")}
        assert store.get_run(str(run.run_id)).info.status == "RUNNING"  # its end was recorded as not logged
    finally:
        server.stop()


def test_the_printed_ui_command_shows_the_local_store(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "work"
    tracker = Tracker(local_store_uri(workdir), "layerpilot", local_dir=workdir, retry=FAST)
    (tmp_path / "report.json").write_text("{}")
    with tracker.start_run("adapt") as run:
        run.log_metric("probe/score", 0.25, step=4)
        run.log_artifact(tmp_path / "report.json")
    assert (workdir / "mlflow.db").is_file() and any((workdir / "mlartifacts").rglob("report.json"))

    command = ui_command(tracker.tracking_uri, port=free_port())
    assert command is not None and command.startswith("mlflow ui --backend-store-uri sqlite:////")
    port = command.rsplit(" ", 1)[1]
    import shlex
    import sys

    args = shlex.split(command)
    args[0] = str(Path(sys.executable).parent / "mlflow")
    server = launch(args, f"http://127.0.0.1:{port}", tmp_path / "ui")  # from another directory on purpose
    try:
        client = MlflowClient(server.uri)
        assert client.get_metric_history(str(run.run_id), "probe/score")[0].step == 4
        assert [f.path for f in client.list_artifacts(str(run.run_id))] == ["report.json"]
    finally:
        server.stop()
