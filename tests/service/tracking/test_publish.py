"""Publishing a work directory onto a real MLflow: what a run holds comes from the record's files,
once, whatever happens to the server in between (read back through MlflowClient)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from service.errors import InputError
from service.record import FAILED, METRICS_FILE, RECORD_FILE, Record, Registration, Tracking
from service.spec.models import MlflowSpec
from service.tracking.publish import PUBLISHED_FILE, RECORD_KEY, Publisher, publish
from service.tracking.publishing import Publishing, tracking_for
from service.tracking.review import CANDIDATE, EVAL_SCORE, LAYERS, MODEL_VERSION, REGISTERED_MODEL
from service.tracking.uris import local_store_uri, resolve_tracking_uri, ui_command
from tests.http_proxy import proxy_to
from tests.mlflow_server import MlflowServer, free_port, launch, start_server


def _job(workdir: Path, uri: str, experiment: str | None = None) -> Record:
    """A small job's record: a top run with params, tags, metrics and files, and a child with steps."""
    (workdir / "patch").mkdir(parents=True)
    (workdir / "report.json").write_text('{"selected": [1]}')
    (workdir / "patch" / "layer_patch.json").write_text("{}")
    (workdir / "patch" / "inner").mkdir()
    (workdir / "patch" / "inner" / "deep.txt").write_text("deep")
    top = Record.start(
        workdir,
        "adapt",
        params={"algorithm.learningRate": 0.001, "training.maxSteps": 3},
        tags={"layerpilot.stage": "adapt"},
        tracking=Tracking(uri, experiment or f"exp-{uuid.uuid4().hex[:8]}"),
    )
    top.log_by_layer({0: {"by_layer/score": 0.2}, 1: {"by_layer/score": 0.5, "by_layer/none": None}})
    top.set_tags({"layerpilot.selected_layers": "1"})
    top.add_artifact(workdir / "report.json")
    top.add_artifact(workdir / "patch", "layer_patch")
    with top.child("train", "train", tags={"layerpilot.stage": "train"}) as child:
        for step in (1, 2, 3):
            child.log_metrics({"train/reward": step / 10, "train/loss": 1.0 / step}, step=step)
            time.sleep(0.002)  # distinct timestamps, as in a real training
    top.end()
    return top


def _runs(client: MlflowClient, experiment: str) -> dict[str, Any]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return {run.info.run_name: run for run in client.search_runs([found.experiment_id], max_results=100)}


def _history(client: MlflowClient, run_id: str) -> list[tuple[str, int, int, float]]:
    keys = client.get_run(run_id).data.metrics
    return sorted(
        (key, m.step, m.timestamp, m.value) for key in keys for m in client.get_metric_history(run_id, key)
    )


def test_tracking_uri_comes_from_spec_then_env_then_the_workdir(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    local = resolve_tracking_uri(MlflowSpec(), tmp_path)
    assert local == f"sqlite:///{tmp_path.resolve()}/mlflow.db" == local_store_uri(tmp_path)
    assert local.startswith("sqlite:////")  # absolute: the UI command works from any directory
    clean_mlflow_env.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(MlflowSpec(), tmp_path) == "http://env:5000"
    assert resolve_tracking_uri(MlflowSpec(trackingUri="http://spec:5000"), tmp_path) == "http://spec:5000"
    with pytest.raises(InputError, match=r"^mlflow\.trackingUri: 'mlflow:5000' is not"):
        resolve_tracking_uri(MlflowSpec(trackingUri="mlflow:5000"), tmp_path)
    assert ui_command("http://mlflow:5000") is None
    # A URI with credentials (the environment may hold one) is never written into a record.
    clean_mlflow_env.setenv("MLFLOW_TRACKING_URI", "http://bob:hunter2@env:5000")
    assert tracking_for(MlflowSpec(), tmp_path).tracking_uri == "http://env:5000"


def test_a_record_becomes_the_run_tree_once(
    mlflow_server: MlflowServer, tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    top = _job(work, mlflow_server.uri)
    experiment = top.tracking.experiment  # type: ignore[union-attr]
    result = publish(work)
    assert result.complete and result.error is None and not result.problems, result.line()
    # Tags travel with the run's creation; a run is created RUNNING and ended with its record's status.
    assert result.sent == {"runs": 2, "params": 2, "metricPoints": 8, "artifacts": 3, "statuses": 2}

    client = MlflowClient(mlflow_server.uri)
    runs = _runs(client, experiment)
    assert set(runs) == {"adapt", "train"}
    parent, train = runs["adapt"], runs["train"]
    assert train.data.tags[MLFLOW_PARENT_RUN_ID] == parent.info.run_id
    assert parent.data.tags[RECORD_KEY] == top.key and parent.data.tags["layerpilot.version"]
    assert parent.data.tags["layerpilot.selected_layers"] == "1"
    assert parent.data.params == {"algorithm.learningRate": "0.001", "training.maxSteps": "3"}
    assert parent.info.status == train.info.status == "FINISHED"
    assert parent.info.start_time == top.data.start_time and parent.info.end_time == top.data.end_time
    # the metric points as the job recorded them: same steps, same timestamps
    recorded = [line for line in (work / "train" / METRICS_FILE).read_text().splitlines()]
    expected = sorted(
        (key, entry["step"], entry["timestamp"], value)
        for entry in map(json.loads, recorded)
        for key, value in entry["metrics"].items()
    )
    assert _history(client, train.info.run_id) == expected
    assert [(m.step, m.value) for m in client.get_metric_history(parent.info.run_id, "by_layer/score")] == [
        (0, 0.2),
        (1, 0.5),
    ]
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"report.json", "layer_patch"}
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "layer_patch")} == {
        "layer_patch/layer_patch.json",
        "layer_patch/inner",
    }
    published = json.loads((work / PUBLISHED_FILE).read_text())
    assert published["runs"] == {".": parent.info.run_id, "train": train.info.run_id}
    assert published["complete"] is True

    # Publishing again, from a new publisher (another process, a later sync), sends nothing.
    again = publish(work)
    assert again.complete and again.sent == {}, again.sent
    assert again.line() == f"{work} is in MLflow at {mlflow_server.uri}, nothing to send"
    assert _history(client, train.info.run_id) == expected and len(_runs(client, experiment)) == 2

    # What the job records later (a re-run continuing the same record) is added, nothing else.
    more = Record.start(work / "train", "train", tags={"layerpilot.stage": "train"})
    more.log_metrics({"train/reward": 0.4}, step=4)
    more.end()
    later = publish(work)
    assert later.sent == {"metricPoints": 1}, later.sent
    assert len(client.get_metric_history(train.info.run_id, "train/reward")) == 4


def test_a_failing_job_ends_its_run_failed_and_keeps_what_it_recorded(
    mlflow_server: MlflowServer, tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    experiment = f"fail-{uuid.uuid4().hex[:8]}"
    record = Record.start(tmp_path, "adapt", tracking=Tracking(mlflow_server.uri, experiment))
    with pytest.raises(RuntimeError), Publishing(record, interval=60):
        record.log_metrics({"probe/score": 0.5}, step=3)
        raise RuntimeError("probe crashed")
    assert Record.read(tmp_path).status == FAILED  # type: ignore[union-attr]
    run = _runs(MlflowClient(mlflow_server.uri), experiment)["adapt"]
    assert run.info.status == "FAILED" and run.data.metrics["probe/score"] == 0.5


def test_jobs_publish_into_the_run_the_operator_created(
    mlflow_server: MlflowServer, tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    client = MlflowClient(mlflow_server.uri)
    experiment = client.create_experiment(f"op-{uuid.uuid4().hex[:8]}")
    operator_run = client.create_run(experiment, run_name="la/demo", tags={"layerpilot.stage": "adapt"})
    run_id = operator_run.info.run_id
    clean_mlflow_env.setenv("MLFLOW_RUN_ID", run_id)
    spec = MlflowSpec(trackingUri=mlflow_server.uri, experiment="ignored-when-adopting")
    record = Record.start(
        tmp_path,
        "register",
        tags={"layerpilot.stage": "register", "layerpilot.job": "probe-3"},
        tracking=tracking_for(spec, tmp_path),
    )
    with record.child("eval", "eval") as child:
        child.log_metrics({"eval/after": 0.4})
    record.end()
    result = publish(tmp_path)
    assert result.complete and result.runs["."] == run_id
    adopted = client.get_run(run_id)
    assert adopted.data.tags["layerpilot.job"] == "probe-3"  # filled in
    assert adopted.data.tags["layerpilot.stage"] == "adapt"  # the operator's own tags stand
    assert RECORD_KEY not in adopted.data.tags
    assert adopted.info.status == "RUNNING"  # the operator owns it and ends it
    child_run = client.get_run(result.runs["eval"])
    assert child_run.data.tags[MLFLOW_PARENT_RUN_ID] == run_id and child_run.info.experiment_id == experiment

    clean_mlflow_env.setenv("MLFLOW_RUN_ID", "0" * 32)
    missing = Record.start(tmp_path / "other", "x", tracking=tracking_for(spec, tmp_path))
    with pytest.raises(InputError, match=r"^MLFLOW_RUN_ID: no run 0{32} at http"), Publishing(missing):
        pass


def test_registration_creates_a_reviewable_candidate_once(
    mlflow_server: MlflowServer,
    trained_run: dict[str, Any],
    tmp_path: Path,
    clean_mlflow_env: pytest.MonkeyPatch,
) -> None:
    name = f"patch-{uuid.uuid4().hex[:8]}"
    experiment = f"reg-{uuid.uuid4().hex[:8]}"
    record = Record.start(tmp_path, "adapt", tracking=Tracking(mlflow_server.uri, experiment))
    record.child("train", "train", tags={"layerpilot.stage": "train"}).end()
    layers = [{"index": i, "score": 0.3 + i / 100, "contribution": i / 50, "rank": 6 - i} for i in range(6)]
    record.request_registration(
        Registration(
            name,
            str(trained_run["out"]),
            CANDIDATE,
            eval_before=0.31,
            eval_after=0.42,
            eval_items=32,
            probe_layers=layers,
            strategy="top-k",
            spec_hash="abc123",
            max_new_tokens=4,
        )
    )
    record.end()
    result = publish(tmp_path)
    assert result.complete and result.sent["versions"] == 1, result.line()
    (registered,) = result.registered
    assert registered["version"] == "1" and registered["alias"] == CANDIDATE

    client = MlflowClient(mlflow_server.uri)
    version = client.get_model_version_by_alias(name, CANDIDATE)
    run_id, train_id = result.runs["."], result.runs["train"]
    assert version.version == "1" and version.run_id == run_id
    assert version.tags[EVAL_SCORE] == "0.42" and version.tags[LAYERS] == "2"
    assert version.tags["layerpilot.spec_hash"] == "abc123"
    assert version.tags["layerpilot.base_model"] == "builtin:demo"
    description = version.description
    assert "0.310 → **0.420** (+0.110) on 32 held-out items" in description
    assert "| 2 | 0.320 | +0.040 | 4 |" in description  # probe row of the trained layer
    assert "✔" in description and "selection `top-k`" in description and train_id in description
    assert f"{mlflow_server.uri}/#/experiments/" in description  # runs are links on a server
    tags = client.get_run(run_id).data.tags
    assert tags[REGISTERED_MODEL] == name and tags[MODEL_VERSION] == "1"
    # The logged model is a layer_patch flavor output of the run, without base weights.
    logged = client.get_logged_model(registered["loggedModelUri"].removeprefix("models:/"))
    assert logged.source_run_id == run_id
    files = {f.path for f in client.list_logged_model_artifacts(logged.model_id)}
    assert "MLmodel" in files and "patch" in files
    assert not any(path.endswith("model.safetensors") for path in files)

    # Once: publishing again finds the version; a reviewer's alias is never moved back.
    client.set_registered_model_alias(name, "champion", "1")
    client.delete_registered_model_alias(name, CANDIDATE)
    again = publish(tmp_path)
    assert again.sent == {} and again.registered[0]["version"] == "1"
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    assert set(client.get_model_version(name, "1").aliases) == {"champion"}


def test_an_unreachable_server_costs_the_record_nothing(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    clean_mlflow_env.setenv("LAYERPILOT_MLFLOW_ATTEMPTS", "2")
    clean_mlflow_env.setenv("LAYERPILOT_MLFLOW_TIMEOUT_S", "2")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    work = tmp_path / "work"
    top = _job(work, dead, experiment="later")
    started = time.monotonic()
    result = publish(work)
    assert time.monotonic() - started < 10  # bounded requests, not MLflow's minutes of backoff
    assert not result.complete and result.error is not None
    assert result.error.startswith(f"MLflow at {dead} unreachable (")
    assert result.left == {"runs": 2, "metricPoints": 8, "artifacts": 3}
    line = result.line()
    assert "\n" not in line and "not published yet: 2 runs, 8 metric points, 3 artifacts" in line
    assert f"`layerpilot mlflow sync {work}`" in line
    assert json.loads((work / PUBLISHED_FILE).read_text())["complete"] is False

    # The server comes back (here: at another address): everything arrives, once.
    store = local_store_uri(tmp_path / "store")
    synced = publish(work, store)
    assert synced.complete and synced.sent["runs"] == 2 and synced.sent["metricPoints"] == 8
    assert publish(work, store).sent == {}
    assert Record.read(work) is not None and Record.read(work).key == top.key  # type: ignore[union-attr]


def test_a_create_that_landed_but_timed_out_makes_no_second_run(
    mlflow_server: MlflowServer, tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    """The duplicate a replay of calls made: the answer to `create run` is lost, the run exists."""
    clean_mlflow_env.setenv("LAYERPILOT_MLFLOW_TIMEOUT_S", "1")
    with proxy_to(mlflow_server.uri) as proxy:
        experiment = f"late-{uuid.uuid4().hex[:8]}"
        # No retry: the create lands, its answer comes after the client gave up.
        clean_mlflow_env.setenv("LAYERPILOT_MLFLOW_ATTEMPTS", "1")
        Record.start(tmp_path / "a", "adapt", tracking=Tracking(proxy.url, experiment)).end()
        proxy.answer_late("/runs/create", times=1, delay_s=2.5)
        first = publish(tmp_path / "a")
        assert first.error is not None and "timed out" in first.error
        assert publish(tmp_path / "a").complete
        # With retries on, MLflow before 3.18 resent a create whose answer was lost: a second run
        # landed too, and the publish deletes the twin. From 3.18 it never resends a write that may
        # have landed: the publish times out, and the next one finds the run that did land.
        clean_mlflow_env.setenv("LAYERPILOT_MLFLOW_ATTEMPTS", "2")
        Record.start(tmp_path / "b", "train", tracking=Tracking(proxy.url, experiment)).end()
        proxy.answer_late("/runs/create", times=1, delay_s=2.5)
        second = publish(tmp_path / "b")
        if not second.complete:
            assert second.error is not None and "timed out" in second.error
            assert publish(tmp_path / "b").complete
        assert len(proxy.requests_to("/runs/create")) == (3 if second.complete else 2)
    runs = _runs(MlflowClient(mlflow_server.uri), experiment)
    assert sorted(runs) == ["adapt", "train"]  # one each: deleted runs are not listed
    assert {run.info.status for run in runs.values()} == {"FINISHED"}


def test_publishing_in_the_background_shows_the_curve_while_the_job_runs(
    mlflow_server: MlflowServer, tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    experiment = f"live-{uuid.uuid4().hex[:8]}"
    record = Record.start(tmp_path, "train", tracking=Tracking(mlflow_server.uri, experiment))
    client = MlflowClient(mlflow_server.uri)
    with Publishing(record, interval=0.2) as publishing:
        run_id = publishing.outcome.runs["."]  # type: ignore[union-attr]  # the run exists at once
        for step in (1, 2, 3):
            record.log_metrics({"train/reward": step / 10}, step=step)
        deadline = time.monotonic() + 20
        while len(client.get_metric_history(run_id, "train/reward")) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get_run(run_id).info.status == "RUNNING"
        assert [m.step for m in client.get_metric_history(run_id, "train/reward")] == [1, 2, 3]
    assert client.get_run(run_id).info.status == "FINISHED" and publishing.summary() is None


def test_a_server_that_hangs_costs_a_bounded_wait(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    clean_mlflow_env.setenv("LAYERPILOT_MLFLOW_ATTEMPTS", "1")
    clean_mlflow_env.setenv("LAYERPILOT_MLFLOW_TIMEOUT_S", "1")
    server = start_server(tmp_path / "server")
    try:
        record = Record.start(tmp_path / "work", "adapt", tracking=Tracking(server.uri, "hang"))
        publisher = Publisher(tmp_path / "work")
        assert publisher.publish().complete
        record.log_metrics({"probe/score": 0.5}, step=1)
        server.pause()  # hung: connections accepted, nothing answered
        started = time.monotonic()
        stalled = publisher.publish()
        assert time.monotonic() - started < 6 and "timed out" in str(stalled.error)
        assert stalled.left == {"metricPoints": 1}
        server.resume()
        assert publisher.publish().complete
        history = MlflowClient(server.uri).get_metric_history(stalled.runs["."], "probe/score")
        assert [(m.step, m.value) for m in history] == [(1, 0.5)]  # once, though sent twice
    finally:
        server.stop()


def test_a_refused_request_is_reported_and_the_rest_goes_on(
    mlflow_server: MlflowServer, tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    experiment = f"refuse-{uuid.uuid4().hex[:8]}"
    Record.start(tmp_path, "adapt", params={"a": 1}, tracking=Tracking(mlflow_server.uri, experiment)).end()
    run_id = publish(tmp_path).runs["."]
    record = Record.read(tmp_path)
    assert record is not None
    record.log_params({"a": 2})  # params never change in MLflow
    record.log_metrics({"eval/after": 0.7})
    result = publish(tmp_path)
    assert result.problems == ["params of adapt: a differ from the run's"]
    assert MlflowClient(mlflow_server.uri).get_run(run_id).data.metrics["eval/after"] == 0.7


def test_sync_names_the_work_directory_and_the_store(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InputError, match="holds no layerpilot record"):
        publish(tmp_path)
    top = Record.start(tmp_path / "w", "adapt", tracking=Tracking(local_store_uri(tmp_path / "s"), "x"))
    top.child("train", "train").end()
    with pytest.raises(InputError, match=rf"publish {tmp_path / 'w'}, the work directory it belongs to"):
        publish(tmp_path / "w" / "train")
    offline = Record.start(tmp_path / "off", "train", tracking=None)  # a --no-mlflow run
    offline.end()
    with pytest.raises(InputError, match=r"^--tracking-uri: .* was recorded without MLflow"):
        publish(tmp_path / "off")
    assert publish(tmp_path / "off", local_store_uri(tmp_path / "s")).complete
    assert (tmp_path / "off" / RECORD_FILE).is_file()


def test_the_printed_ui_command_shows_the_local_store(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "work"
    (tmp_path / "report.json").write_text("{}")
    record = Record.start(workdir, "adapt", tracking=Tracking(local_store_uri(workdir), "layerpilot"))
    record.log_metrics({"probe/score": 0.25}, step=4)
    record.add_artifact(tmp_path / "report.json")
    record.end()
    run_id = publish(workdir).runs["."]
    assert (workdir / "mlflow.db").is_file() and any((workdir / "mlartifacts").rglob("report.json"))

    command = ui_command(local_store_uri(workdir), port=free_port())
    assert command is not None and command.startswith("mlflow ui --backend-store-uri sqlite:////")
    port = command.rsplit(" ", 1)[1]
    import shlex
    import sys

    args = shlex.split(command)
    args[0] = str(Path(sys.executable).parent / "mlflow")
    server = launch(args, f"http://127.0.0.1:{port}", tmp_path / "ui")  # from another directory on purpose
    try:
        client = MlflowClient(server.uri)
        assert client.get_metric_history(run_id, "probe/score")[0].step == 4
        assert [f.path for f in client.list_artifacts(run_id)] == ["report.json"]
    finally:
        server.stop()


def test_requests_use_mlflows_own_bounded_retries(clean_mlflow_env: pytest.MonkeyPatch) -> None:
    import os

    from service.tracking.retries import RetryPolicy

    for name in [name for name in os.environ if name.startswith("MLFLOW_HTTP")]:
        clean_mlflow_env.delenv(name)
    RetryPolicy(attempts=3, initial_delay_s=1.5, request_timeout_s=7).apply()
    assert {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_HTTP")} == {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.5",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "7",
        "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false",
    }
    RetryPolicy(attempts=1).apply()  # a later policy replaces what an earlier one set
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    # A variable set before layerpilot ran is the user's, and wins (a process of its own).
    import subprocess
    import sys

    code = "import os; from service.tracking.retries import RetryPolicy"
    code += "; RetryPolicy(request_timeout_s=3).apply()"
    code += (
        "; print(os.environ['MLFLOW_HTTP_REQUEST_TIMEOUT'], os.environ['MLFLOW_HTTP_REQUEST_MAX_RETRIES'])"
    )
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_TIMEOUT": "99"}
    env.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.split() == ["99", "2"]
    clean_mlflow_env.setenv("LAYERPILOT_MLFLOW_ATTEMPTS", "12")
    with pytest.raises(InputError, match="LAYERPILOT_MLFLOW_ATTEMPTS: MLflow allows at most 11"):
        RetryPolicy.from_env()
