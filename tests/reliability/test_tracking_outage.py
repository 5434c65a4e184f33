"""A tracking outage in the middle of `adapt`: the MLflow server is killed when the probe ends and
started again (same port, same store) during training.

The job must finish with every local output, name what it could not log, and `layerpilot mlflow
sync WORKDIR` must then give the store the run tree, metrics and artifacts a job without an outage
leaves — with no metric point twice.
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
from service.tracking.ledger import UNLOGGED_FILE, read_ledger
from tests.conftest import RecordingProgress, small_spec
from tests.mlflow_server import MlflowServer, start_server

EXPERIMENT = "outage"
MODEL = "outage-model"


class Outage(RecordingProgress):
    """Kills the server when the probe phase ends (its runs are open, nothing of it logged yet) and
    starts it again once training reaches `restart_at` — deterministic points of every `adapt`."""

    def __init__(self, server: MlflowServer, root: Path, restart_at: int = 2) -> None:
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
        elif phase == "train":
            self._restart()  # in case training logged no step at `restart_at`

    def update(self, phase: Any, done: int, info: str = "") -> None:
        super().update(phase, done, info)
        if phase == "train" and done >= self.restart_at:
            self._restart()

    def _restart(self) -> None:
        if self.killed_at is not None and self.restarted_at is None:
            self.server = start_server(self.root, port=self.port)
            self.restarted_at = time.monotonic()


def _runs(client: MlflowClient) -> list[Any]:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    return list(client.search_runs([experiment.experiment_id], max_results=1000))


def _points(client: MlflowClient, run: Any) -> list[tuple[str, int]]:
    return [
        (key, m.step) for key in run.data.metrics for m in client.get_metric_history(run.info.run_id, key)
    ]


@pytest.mark.heavy
def test_a_server_killed_during_adapt_and_restarted_loses_nothing_after_a_sync(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    from cli.main import app

    # Default retries (MLflow's, bounded); a short cooldown so logging resumes soon after the restart.
    clean_mlflow_env.setenv("LAYERPILOT_MLFLOW_COOLDOWN_S", "2")
    root, work = tmp_path / "server", tmp_path / "work"
    server = start_server(root)
    outage = Outage(server, root)
    spec = small_spec(
        probe={"mode": "exact", "steps": 2, "layers": [1, 2]},
        selection={"strategy": "top-k", "k": 1},
        mlflow={"trackingUri": server.uri, "experiment": EXPERIMENT, "registeredModel": MODEL},
    )
    try:
        started = time.monotonic()
        result = adapt(spec, work, progress=outage)
        adapt_s = time.monotonic() - started
        assert outage.killed_at is not None and outage.restarted_at is not None
        server = outage.server

        # The job finished, every local output is there, and it says what did not reach MLflow.
        for path in (
            "probe/probe_report.json",
            "probe/probe_report.png",
            "train/layer_patch.safetensors",
            "train/layer_patch.json",
            "train/deltas.json",
            RESULT_JSON,
        ):
            assert (work / path).is_file(), path
        saved = json.loads((work / RESULT_JSON).read_text())
        assert saved["trainedSteps"] == 3 and saved["evalAfter"] is not None
        assert result.not_logged is not None and "unreachable: not logged:" in result.not_logged
        assert f"mlflow sync {work}" in result.not_logged
        # back before the registration: the version is there without a sync
        assert result.registered is not None and result.registered["version"] == "1"

        ledger = read_ledger(work / UNLOGGED_FILE).entries
        missed = Counter(entry.kind for entry in ledger)
        named = {entry.what for entry in ledger}
        units = {"probe base", "probe full", "probe layer-1", "probe layer-2"}
        assert {f"run {name}" for name in (*units, "train")} <= named  # runs MLflow never created
        assert {"artifact", "metric", "param", "status", "tag"} <= set(missed)
        assert any("probe_report.json" in what for what in named)
        assert any("layer_patch.safetensors" in what for what in named)

        client = MlflowClient(server.uri)
        before = {run.info.run_name for run in _runs(client)}
        assert "train" not in before and not units & before

        # The sync: into the URI the ledger names, once.
        started = time.monotonic()
        synced = CliRunner().invoke(app, ["mlflow", "sync", str(work), "--json"])
        sync_s = time.monotonic() - started
        assert synced.exit_code == 0, synced.output
        report = json.loads(synced.stdout)
        assert report["trackingUri"] == server.uri and report["leftCalls"] == 0 and report["error"] is None
        assert report["replayedCalls"] == len(ledger)
        assert report["replayed"]["run"] == 5 and len(report["runsCreated"]) == 5
        assert not (work / UNLOGGED_FILE).exists()
        again = CliRunner().invoke(app, ["mlflow", "sync", str(work)])
        assert again.exit_code == 0 and again.stdout.startswith("nothing to sync in")

        # The whole run tree, finished.
        runs = _runs(client)
        by_name = {run.info.run_name: run for run in runs}
        assert len(by_name) == len(runs) == 1 + 3 + 4  # adapt; probe, train, eval; the probe units
        parent = by_name[f"adapt {spec.model.uri}"]
        children = {
            name
            for name, run in by_name.items()
            if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        }
        assert children == {"probe", "train", "eval"}
        probe, train = by_name["probe"], by_name["train"]
        assert {
            name
            for name, run in by_name.items()
            if run.data.tags.get("mlflow.parentRunId") == probe.info.run_id
        } == units
        assert {run.info.status for run in runs} == {"FINISHED"}

        # Metrics: each point once, the training curve whole, the per-layer curves over depth.
        duplicates = {
            run.info.run_name: [p for p, n in Counter(_points(client, run)).items() if n > 1] for run in runs
        }
        assert all(not found for found in duplicates.values()), duplicates
        assert sorted(m.step for m in client.get_metric_history(train.info.run_id, "train/reward")) == [
            1,
            2,
            3,
        ]
        assert {"train/loss", "train/global_step", "train/seconds"} <= set(train.data.metrics)
        assert [m.step for m in client.get_metric_history(train.info.run_id, "by_layer/delta_relative")] == (
            result.layers
        )
        assert sorted(m.step for m in client.get_metric_history(probe.info.run_id, "by_layer/score")) == [
            1,
            2,
        ]
        assert "probe/selected_score" in probe.data.metrics
        assert "train/reward" in by_name["probe layer-1"].data.metrics
        assert by_name["probe base"].data.params["unit"] == "base"
        assert parent.data.tags[review.SELECTED_LAYERS] == ",".join(map(str, result.layers))
        assert parent.data.metrics["eval/after"] == pytest.approx(result.eval_after)

        # Artifacts, and the registered version with its alias.
        assert {a.path for a in client.list_artifacts(probe.info.run_id)} == {
            "probe_report.json",
            "probe_report.png",
        }
        assert {a.path for a in client.list_artifacts(train.info.run_id, "layer_patch")} == {
            f"layer_patch/{n}" for n in ("layer_patch.safetensors", "layer_patch.json", "deltas.json")
        }
        assert "spec.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
        version = client.get_model_version_by_alias(MODEL, review.CANDIDATE)
        assert version.run_id == parent.info.run_id
        assert parent.data.tags[review.MODEL_VERSION] == str(version.version)

        outage_s = outage.restarted_at - outage.killed_at
        print(
            f"\noutage: adapt {adapt_s:.0f}s (server down {outage_s:.0f}s, restart "
            f"{server.started_in_s:.0f}s); missed {len(ledger)} calls ({dict(missed)}); sync {sync_s:.1f}s "
            f"replayed {report['replayed']}, already there {report['alreadyThere']}; duplicate points 0"
        )
    finally:
        server.stop()
        outage.server.stop()
