"""Profile once per base model, from the CLI: a probe kept in MLflow is found and reused by later jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from cli.main import app
from service.tracking import review
from tests.cli.helpers import runner, write_spec
from tests.conftest import small_spec_data
from tests.mlflow_server import MlflowServer


def test_a_probe_in_mlflow_is_found_by_its_base_and_reused_by_adapt_and_train(
    mlflow_server: MlflowServer, clean_mlflow_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_mlflow_env.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    clean_mlflow_env.chdir(tmp_path)
    experiment = f"reuse-{tmp_path.name}"
    mlflow = {"experiment": experiment, "registeredModel": f"reuse-{tmp_path.name}"}
    probe_spec = write_spec(
        tmp_path, small_spec_data(probe={"mode": "gradient"}, mlflow=mlflow), "probe.yaml"
    )
    probed = runner.invoke(app, ["probe", "run", str(probe_spec), "--out", "probe", "--json"])
    assert probed.exit_code == 0, probed.output
    client = MlflowClient(mlflow_server.uri)
    (probe_run,) = client.search_runs(
        [client.get_experiment_by_name(experiment).experiment_id], "tags.`layerpilot.stage` = 'probe'"
    )
    fingerprint = json.loads((tmp_path / "probe" / "probe_report.json").read_text())["baseFingerprint"]
    assert probe_run.data.tags[review.BASE_FINGERPRINT] == fingerprint
    assert probe_run.data.tags[review.PROBE_TASK] == "builtin:arith"

    # Another job on the same base (a shorter evaluation, its own top-2) takes that profile.
    reuse = small_spec_data(
        dataset={"evalSize": 16},
        probe={"reuse": "mlflow"},
        selection={"strategy": "top-k", "k": 2},
        training={"maxSteps": 2, "saveSteps": 2},
        mlflow=mlflow,
    )
    adapted = runner.invoke(app, ["adapt", str(write_spec(tmp_path, reuse, "reuse.yaml")), "--workdir", "w"])
    assert adapted.exit_code == 0, adapted.output
    used = f"gradient probe on builtin:arith, reused from MLflow run {probe_run.info.run_id}"
    assert used in adapted.output.replace("\n", " ")
    result = json.loads((tmp_path / "w" / "adapt_result.json").read_text())
    assert result["probeReused"] == {
        "source": "mlflow",
        "runId": probe_run.info.run_id,
        "reusedFor": "builtin:arith",
    }
    ranking = json.loads((tmp_path / "probe" / "probe_report.json").read_text())["layers"]
    top2 = sorted(layer["index"] for layer in ranking if layer["rank"] <= 2)
    assert result["selected"] == top2
    assert not list((tmp_path / "w" / "probe").glob("partials*"))  # nothing was probed
    version = client.get_model_version_by_alias(mlflow["registeredModel"], "candidate")
    assert f"| layers chosen by | {used} |" in version.description
    assert version.tags[review.PROBE] == used
    adapt_probe = client.get_run(result["mlflow"]["runIds"]["probe"])
    assert adapt_probe.data.tags[review.PROBE_REUSED] == used

    # The next job still finds the probe that measured the profile, not the job that reused it.
    trained = runner.invoke(app, ["train", str(tmp_path / "reuse.yaml"), "--out", "t", "--max-steps", "1"])
    assert trained.exit_code == 0, trained.output
    kept = json.loads((tmp_path / "t" / "probe_report.json").read_text())
    assert kept["reusedFrom"]["runId"] == probe_run.info.run_id
    assert f"layers {top2} (top-k) from the {used}" in trained.output.replace("\n", " ")


def test_reuse_refuses_another_base_an_unknown_run_and_a_missing_server_in_one_line(
    mlflow_server: MlflowServer, clean_mlflow_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_mlflow_env.chdir(tmp_path)
    probe_spec = write_spec(tmp_path, small_spec_data(probe={"mode": "spectrum"}), "probe.yaml")
    assert runner.invoke(app, ["probe", "run", str(probe_spec), "--out", "p", "--no-mlflow"]).exit_code == 0

    def refused(probe: dict[str, str], *, model: str = "builtin:demo", tracking: str | None = None) -> str:
        data = small_spec_data(model={"uri": model}, probe=probe)
        data["mlflow"] = {"trackingUri": tracking} if tracking else {}
        spec = write_spec(tmp_path, data, "bad.yaml")
        result = runner.invoke(app, ["adapt", str(spec), "--workdir", "w"])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and not (tmp_path / "w" / "train").exists()
        (line,) = result.output.strip().splitlines()
        return line

    assert refused({"reuse": "p"}, model="builtin:demo-agent").startswith(
        "error: spec.probe.reuse: p/probe_report.json is a probe of other weights (builtin:demo"
    )
    assert "has no run 0123abcd" in refused({"reuse": "mlflow:0123abcd"}, tracking=mlflow_server.uri)
    assert "neither spec.mlflow.trackingUri nor MLFLOW_TRACKING_URI" in refused({"reuse": "mlflow"})
    assert "holds no finished probe of this base model" in refused(
        {"reuse": "mlflow"}, tracking=mlflow_server.uri
    )
    mode = runner.invoke(
        app,
        [
            "probe",
            "run",
            str(write_spec(tmp_path, small_spec_data(probe={"reuse": "p"}))),
            "--mode",
            "gradient",
        ],
    )
    assert mode.exit_code == 2 and "error: --mode: the spec reuses a profile" in mode.output
