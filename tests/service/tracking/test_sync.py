"""`mlflow sync`: a ledger written while MLflow was unreachable, replayed into a store — once.

The ledgers here are real: a `Tracker` logs against a port where nothing listens, then the sync
replays into a local sqlite store (no server needed) and everything is read back from it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from service.errors import LayerpilotError
from service.tracking import review
from service.tracking.client import LOCAL_RUN_PREFIX
from service.tracking.ledger import UNLOGGED_FILE, NotLogged, read_ledger
from service.tracking.retries import RetryPolicy, with_retries
from service.tracking.runs import UNLOGGED_DIR, TrackedRun, Tracker
from service.tracking.sync import LOCAL_RUN_TAG, SYNC_FIELDS, sync
from service.tracking.uris import local_store_uri
from tests.mlflow_server import free_port

FAST = RetryPolicy(attempts=2, initial_delay_s=0.05, request_timeout_s=2)


def _dead() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def _outage(workdir: Path) -> tuple[Tracker, TrackedRun, TrackedRun]:
    """A parent and a child logged while MLflow was down: every call ends up in the ledger."""
    (workdir / "probe").mkdir(parents=True)
    (workdir / "probe" / "probe_report.json").write_text('{"selected": [1]}')
    (workdir / "patch").mkdir()
    (workdir / "patch" / "layer_patch.json").write_text("{}")
    tracker = Tracker(_dead(), "sync", local_dir=workdir, retry=FAST)
    with tracker.start_run("adapt", tags={"layerpilot.stage": "adapt"}) as parent:
        parent.log_params({"algorithm.learningRate": 0.001, "training.maxSteps": 3})
        parent.set_tags({"layerpilot.selected_layers": "1"})
        with parent.child("train", tags={"layerpilot.stage": "train"}) as child:
            for step in (1, 2, 3):
                child.log_metrics({"train/reward": step / 10, "train/loss": 1.0 / step}, step=step)
                time.sleep(0.002)  # distinct timestamps, as in a real training
            child.log_layer_metrics({1: {"by_layer/delta_relative": 0.01, "skipped": None}})
        parent.log_artifact(workdir / "probe" / "probe_report.json")
        parent.log_artifact(workdir / "patch", "layer_patch")
        parent.log_dict({"selected": [1]}, "review/selection.json")
    return tracker, parent, child


def _history(client: MlflowClient, run_id: str) -> list[tuple[str, int, int, float]]:
    keys = client.get_run(run_id).data.metrics
    return sorted(
        (key, m.step, m.timestamp, m.value) for key in keys for m in client.get_metric_history(run_id, key)
    )


def _run_ids(tracker: Tracker) -> dict[str, str]:
    return {f.payload["name"]: str(f.local_run_id) for f in tracker.failures if f.kind == "run"}


def test_a_ledger_from_an_outage_becomes_the_whole_run_tree_once(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    tracker, parent, child = _outage(work)
    assert parent.run_id is None and str(parent.local_id).startswith(LOCAL_RUN_PREFIX)
    lines = read_ledger(work / UNLOGGED_FILE).entries
    assert {line.tracking_uri for line in lines} == {tracker.tracking_uri}
    child_line = next(line for line in lines if line.kind == "run" and line.payload["name"] == "train")
    assert child_line.payload["parent"] == parent.local_id  # enough to rebuild the tree
    assert all(line.local_run_id in (parent.local_id, child.local_id) for line in lines)
    points = [p for line in lines if line.kind == "metric" for p in line.payload["points"]]
    assert len(points) == 7 and all(len(point) == 4 for point in points)  # key, value, step, timestamp

    store = local_store_uri(tmp_path / "store")
    result = sync(work, store, retry=FAST)
    assert result.ok and result.error is None, result.line()
    assert result.replayed_calls == result.calls == len(lines)
    assert result.replayed == {
        "run": 2, "param": 2, "tag": 1, "metric": 7, "status": 2, "artifact": 3
    }  # fmt: skip
    assert set(result.runs_created) == {parent.local_id, child.local_id}
    assert result.line().startswith(f"synced {len(lines)} calls into {store}: 2 runs, 2 params")

    client = MlflowClient(store)
    parent_id, child_id = result.runs_created[str(parent.local_id)], result.runs_created[str(child.local_id)]
    top, train = client.get_run(parent_id), client.get_run(child_id)
    assert top.info.run_name == "adapt" and train.info.run_name == "train"
    assert train.data.tags["mlflow.parentRunId"] == parent_id
    assert train.data.tags[LOCAL_RUN_TAG] == child.local_id
    assert top.data.tags["layerpilot.stage"] == "adapt" and top.data.tags["layerpilot.selected_layers"] == "1"
    assert top.data.tags["layerpilot.version"]  # the tags the job resolved, not the sync's
    assert top.data.params == {"algorithm.learningRate": "0.001", "training.maxSteps": "3"}
    assert top.info.status == train.info.status == "FINISHED"
    assert top.info.end_time == next(
        f.payload["endTime"] for f in lines if f.what == "status FINISHED of run adapt"
    )
    # the metric points as the job logged them: same steps, same timestamps
    assert _history(client, child_id) == sorted((k, s, t, v) for k, v, s, t in points)
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert artifacts == {"probe_report.json", "layer_patch", "review"}
    assert [a.path for a in client.list_artifacts(parent_id, "layer_patch")] == [
        "layer_patch/layer_patch.json"
    ]
    assert [a.path for a in client.list_artifacts(parent_id, "review")] == ["review/selection.json"]

    # the ledger and the kept JSON artifact are gone; a second sync has nothing to do
    assert not (work / UNLOGGED_FILE).exists() and not (work / UNLOGGED_DIR).exists()
    again = sync(work, store, retry=FAST)
    assert again.ok and again.calls == 0 and again.line() == f"nothing to sync in {work}"
    assert again.to_json()["replayed"] == {} and set(again.to_json()) == set(SYNC_FIELDS)


def test_a_sync_that_stopped_before_rewriting_the_ledger_sends_nothing_twice(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    _outage(work)
    saved = (work / UNLOGGED_FILE).read_bytes()
    kept = tmp_path / "kept"
    shutil.copytree(work / UNLOGGED_DIR, kept)
    store = local_store_uri(tmp_path / "store")
    first = sync(work, store, retry=FAST)
    assert first.ok
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("sync")
    assert experiment is not None
    before = {
        run.info.run_id: _history(client, run.info.run_id)
        for run in client.search_runs([experiment.experiment_id])
    }

    # as if the first sync had died before its rewrite: the same ledger again
    (work / UNLOGGED_FILE).write_bytes(saved)
    shutil.copytree(kept, work / UNLOGGED_DIR)
    second = sync(work, store, retry=FAST)
    assert second.ok and second.runs_created == {}
    assert second.already_there == {"run": 2, "param": 2, "metric": 7, "status": 2}
    assert set(second.replayed) <= {"tag", "artifact"}  # these overwrite themselves
    runs = client.search_runs([experiment.experiment_id])
    assert {run.info.run_id: _history(client, run.info.run_id) for run in runs} == before
    for run in runs:
        points = [(key, step) for key, step, _, _ in _history(client, run.info.run_id)]
        assert len(points) == len(set(points))  # no duplicate (key, step)


def test_calls_a_running_job_kept_after_a_sync_land_in_the_run_that_sync_created(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    _, _, child = _outage(work)
    store = local_store_uri(tmp_path / "store")
    first = sync(work, store, retry=FAST)
    assert first.ok
    child.log_metrics({"train/reward": 0.9}, step=4)  # the job, still without MLflow, logs on
    second = sync(work, store, retry=FAST)
    assert second.ok and second.replayed == {"metric": 1} and second.runs_created == {}
    created = first.runs_created[str(child.local_id)]
    steps = [m.step for m in MlflowClient(store).get_metric_history(created, "train/reward")]
    assert sorted(steps) == [1, 2, 3, 4]


def test_points_that_landed_despite_a_timeout_and_old_ledger_lines_are_not_sent_twice(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    store = local_store_uri(tmp_path / "store")
    client = MlflowClient(store)
    run_id = client.create_run(client.create_experiment("landed")).info.run_id
    client.log_metric(run_id, "train/reward", 0.2, timestamp=1000, step=1)  # the server did get it
    ledger = tmp_path / UNLOGGED_FILE
    timed_out = NotLogged("metric", 2, run_id, "2 metrics", "timed out", True, {
        "step": 1, "metrics": {"train/reward": 0.2, "train/loss": 0.5},
        "points": [["train/reward", 0.2, 1, 1000], ["train/loss", 0.5, 1, 1000]],
    })  # fmt: skip
    old = {  # a line from before points and placeholders were kept
        "kind": "metric", "count": 2, "run_id": run_id, "what": "2 metrics at step 2", "error": "timed out",
        "transient": True, "payload": {"step": 2, "metrics": {"train/reward": 0.3, "train/loss": 0.4}},
    }  # fmt: skip
    ledger.write_text(json.dumps(timed_out.to_json()) + "\n" + json.dumps(old) + "\n")
    client.log_metric(run_id, "train/loss", 0.4, step=2)  # old line, half landed: same key and step

    result = sync(tmp_path, store, retry=FAST)
    assert result.ok and result.replayed == {"metric": 2} and result.already_there == {"metric": 2}
    assert sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/reward")) == [
        (1, 0.2),
        (2, 0.3),
    ]
    assert sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")) == [
        (1, 0.5),
        (2, 0.4),
    ]


def test_what_cannot_be_replayed_stays_and_is_replayed_by_the_next_sync(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    from cli.main import app

    work = tmp_path / "work"
    _, parent, _ = _outage(work)
    lines = len(read_ledger(work / UNLOGGED_FILE).entries)

    # MLflow still down: nothing replayed, nothing lost, one line, exit 1, fast
    started = time.monotonic()
    runner = CliRunner()
    down = runner.invoke(app, ["mlflow", "sync", str(work), "--tracking-uri", _dead()])
    assert time.monotonic() - started < 30
    assert down.exit_code == 1, down.output
    assert "error: synced 0 of" in down.stderr and "unreachable (connection refused)" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1
    assert len(read_ledger(work / UNLOGGED_FILE).entries) == lines

    # a file gone: the rest is replayed, that call stays (naming its run by the id the sync gave it)
    report = work / "probe" / "probe_report.json"
    moved = report.rename(tmp_path / "report.json")
    store = local_store_uri(tmp_path / "store")
    partial = runner.invoke(app, ["mlflow", "sync", str(work), "--tracking-uri", store, "--json"])
    assert partial.exit_code == 1, partial.output
    data = json.loads(partial.stdout)
    assert data["leftCalls"] == 1 and data["left"] == {"artifact": 1} and data["replayedCalls"] == lines - 1
    assert "probe_report.json is gone" in data["error"]
    (left,) = read_ledger(work / UNLOGGED_FILE).entries
    assert left.run_id == data["runsCreated"][parent.local_id]

    moved.rename(report)
    done = runner.invoke(app, ["mlflow", "sync", str(work), "--tracking-uri", store])
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("synced 1 calls into") and "the ledger is empty" in done.stdout
    assert "probe_report.json" in {a.path for a in MlflowClient(store).list_artifacts(left.run_id or "")}
    nothing = runner.invoke(app, ["mlflow", "sync", str(work)])
    assert nothing.exit_code == 0 and nothing.stdout.strip() == f"nothing to sync in {work}"


def test_a_missed_registration_is_registered_by_the_sync_once(
    trained_run: dict[str, Any], tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    patch = work / "train"
    shutil.copytree(trained_run["out"], patch)
    tracker = Tracker(_dead(), "sync-register", local_dir=work, retry=FAST)
    with tracker.start_run("adapt") as run:
        with pytest.raises(LayerpilotError, match="never created the run"):
            tracker.register_patch(
                run, patch, name="synced-model", eval_before=0.25, eval_after=0.5, eval_items=32,
                probe_report={"strategy": "top-k", "layers": []}, strategy="top-k", spec_hash="abc",
            )  # fmt: skip
        # what `adapt` records when registration fails (it knows no more than this)
        tracker.record(NotLogged("registration", 1, run.run_id, "version of synced-model", "down", True, {}))
    line = next(f for f in read_ledger(work / UNLOGGED_FILE).entries if f.kind == "registration")
    assert line.local_run_id == run.local_id and line.payload["review"]["eval_after"] == 0.5
    saved = (work / UNLOGGED_FILE).read_bytes()

    store = local_store_uri(tmp_path / "store")
    result = sync(work, store, retry=FAST)
    assert result.ok, result.line()
    run_id = result.runs_created[str(run.local_id)]
    assert result.registered == [{"name": "synced-model", "version": "1", "runId": run_id}]
    client = MlflowClient(store)
    version = client.get_model_version_by_alias("synced-model", review.CANDIDATE)
    assert str(version.version) == "1" and version.run_id == run_id
    assert version.tags[review.EVAL_SCORE] == "0.5" and version.tags[review.SPEC_HASH] == "abc"
    tags = client.get_run(run_id).data.tags
    assert tags[review.REGISTERED_MODEL] == "synced-model" and tags[review.MODEL_VERSION] == "1"

    (work / UNLOGGED_FILE).write_bytes(saved)  # replayed again: found, not registered twice
    again = sync(work, store, retry=FAST)
    assert again.ok and again.registered == [] and again.already_there["registration"] == 1
    assert [str(v.version) for v in client.search_model_versions("name = 'synced-model'")] == ["1"]


def test_tracking_calls_use_mlflows_own_bounded_retries(clean_mlflow_env: pytest.MonkeyPatch) -> None:
    import os

    policy = RetryPolicy(attempts=3, initial_delay_s=1.5, request_timeout_s=7)
    seen = with_retries(policy, lambda: {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_HTTP")})
    assert seen == {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.5",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "7",
        "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false",
    }
    assert not [k for k in os.environ if k.startswith("MLFLOW_HTTP")]  # only for the call
    clean_mlflow_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")  # the user's own setting wins
    assert with_retries(policy, lambda: os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) == "5"
    calls: list[int] = []

    def failing() -> None:
        calls.append(1)
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        with_retries(policy, failing)
    assert calls == [1]  # no loop of ours on top of MLflow's
    clean_mlflow_env.setenv("LAYERPILOT_MLFLOW_ATTEMPTS", "12")
    with pytest.raises(LayerpilotError, match="LAYERPILOT_MLFLOW_ATTEMPTS: MLflow allows at most 11"):
        RetryPolicy.from_env()
