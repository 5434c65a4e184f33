"""A tracking outage in the middle of `adapt`: the MLflow server is killed when the probe ends.

Restarted during training, the job publishes what it missed itself. Restarted only after the job,
`layerpilot mlflow sync WORKDIR` publishes it. Either way MLflow ends up holding what a job without
an outage leaves — the same runs, metric points, artifacts and registered version, none twice —
and a second sync sends nothing.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from service.adapt import RESULT_JSON, adapt
from service.tracking import review
from tests.conftest import RecordingProgress, small_spec
from tests.mlflow_server import MlflowServer, start_server


class Outage(RecordingProgress):
    """Kills the server when the probe phase ends (its runs are open, its answer not published yet)
    and starts it again once training reaches `restart_at` (never, when None): deterministic points
    of every `adapt`."""

    def __init__(self, server: MlflowServer, root: Path, restart_at: int | None) -> None:
        super().__init__()
        self.server, self.root, self.restart_at = server, root, restart_at
        self.port = int(server.uri.rsplit(":", 1)[1])
        self.killed_at: float | None = None
        self.restarted_at: float | None = None

    def finish(self, phase: Any, info: str = "") -> None:
        super().finish(phase, info)
        if phase == "probe" and self.killed_at is None:
            self.server.kill()
            self.killed_at = time.monotonic()
        elif phase == "train" and self.restart_at is not None:
            self.restart()  # in case training logged no step at `restart_at`

    def update(self, phase: Any, done: int, info: str = "") -> None:
        super().update(phase, done, info)
        if phase == "train" and self.restart_at is not None and done >= self.restart_at:
            self.restart()

    def restart(self) -> MlflowServer:
        if self.killed_at is not None and self.restarted_at is None:
            self.server = start_server(self.root, port=self.port)
            self.restarted_at = time.monotonic()
        return self.server


def _shape(client: MlflowClient, experiment: str) -> dict[str, Any]:
    """What an experiment holds, without ids and times: each run (by its path of names) with its
    status, params (the spec's, but for the experiment's own name), the steps of every metric point,
    its artifacts, and the registered version's layers and tags."""
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id], max_results=1000)
    names = {run.info.run_id: run.info.run_name for run in runs}
    shape: dict[str, Any] = {}
    for run in runs:
        parent = names.get(run.data.tags.get("mlflow.parentRunId", ""), "")
        steps = {
            key: sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            for key in run.data.metrics
        }
        files = sorted(_files(client, run.info.run_id, None))
        params = {k: v for k, v in run.data.params.items() if not k.startswith("mlflow.")}
        shape[f"{parent}/{run.info.run_name}"] = (run.info.status, params, steps, files)
    return shape


def _files(client: MlflowClient, run_id: str, folder: str | None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, folder):
        found += _files(client, run_id, item.path) if item.is_dir else [item.path]
    return found


def _points(client: MlflowClient, experiment: str) -> Counter[tuple[str, str, int, int]]:
    """Every metric point with its timestamp: a point published twice shows up twice here."""
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return Counter(
        (run.info.run_name, key, m.step, m.timestamp)
        for run in client.search_runs([found.experiment_id], max_results=1000)
        for key in run.data.metrics
        for m in client.get_metric_history(run.info.run_id, key)
    )


@pytest.mark.heavy
def test_a_server_killed_during_adapt_loses_nothing(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    from cli.main import app

    clean_mlflow_env.setenv("LAYERPILOT_PUBLISH_SECONDS", "1")
    root = tmp_path / "server"
    server = start_server(root)

    def spec(experiment: str) -> Any:
        return small_spec(
            probe={"mode": "exact", "steps": 2, "layers": [1, 2]},
            selection={"strategy": "top-k", "k": 1},
            mlflow={"trackingUri": server.uri, "experiment": experiment, "registeredModel": experiment},
        )

    try:
        calm = adapt(spec("calm"), tmp_path / "calm")
        assert calm.tracked.not_logged is None and calm.tracked.registered is not None

        # Back during training: the job publishes what it missed, and ends with nothing left.
        outage = Outage(server, root, restart_at=2)
        started = time.monotonic()
        caught_up = adapt(spec("back-during"), tmp_path / "during", progress=outage)
        during_s = time.monotonic() - started
        assert outage.killed_at is not None and outage.restarted_at is not None
        server = outage.server
        assert caught_up.tracked.not_logged is None, caught_up.tracked.not_logged
        assert caught_up.tracked.registered is not None

        # Back only after the job: it finishes with every output on disk and says what is left.
        outage = Outage(server, root, restart_at=None)
        late = adapt(spec("back-after"), tmp_path / "after", progress=outage)
        work = tmp_path / "after"
        for path in (
            "probe/probe_report.json",
            "train/layer_patch.safetensors",
            "train/metrics.jsonl",
            "eval/eval_after.json",
            RESULT_JSON,
        ):
            assert (work / path).is_file(), path
        assert json.loads((work / RESULT_JSON).read_text())["trainedSteps"] == 3
        assert late.tracked.registered is None and late.tracked.not_logged is not None
        assert "unreachable" in late.tracked.not_logged and f"mlflow sync {work}" in late.tracked.not_logged
        server = outage.restart()

        started = time.monotonic()
        synced = CliRunner().invoke(app, ["mlflow", "sync", str(work), "--json"])
        sync_s = time.monotonic() - started
        assert synced.exit_code == 0, synced.output
        report = json.loads(synced.stdout)
        assert report["complete"] and report["error"] is None and report["left"] == {}
        assert report["trackingUri"] == server.uri and report["registered"][0]["version"] == "1"
        again = CliRunner().invoke(app, ["mlflow", "sync", str(work), "--json"])
        assert again.exit_code == 0 and json.loads(again.stdout)["sent"] == {}

        # The same runs, points and files as the job without an outage; no point twice.
        client = MlflowClient(server.uri)
        expected = _shape(client, "calm")
        assert len(expected) == 1 + 3 + 4  # adapt; probe, train, eval; the probe units
        for experiment in ("back-during", "back-after"):
            assert _shape(client, experiment) == expected, experiment
            twice = [point for point, n in _points(client, experiment).items() if n > 1]
            assert twice == [], twice
        for experiment in ("calm", "back-during", "back-after"):
            version = client.get_model_version_by_alias(experiment, review.CANDIDATE)
            assert version.version == "1" and version.tags[review.LAYERS] == ",".join(map(str, calm.layers))
            top = client.get_run(version.run_id)
            assert top.data.tags[review.MODEL_VERSION] == "1" and top.info.run_name.startswith("adapt ")
        print(
            f"\noutage: adapt with the server back during training {during_s:.0f}s; sync after the "
            f"job {sync_s:.1f}s sent {report['sent']}; duplicate points 0"
        )
    finally:
        server.stop()
