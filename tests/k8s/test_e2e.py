"""The operator's Jobs really work: every command runs, and the resource ends with a registered version.

The operator (kopf) runs against the emulator; `Kubelet` runs each Job's container command here
with the Job's env and volumes; MLflow is a real server. A canary token in the MLflow Secret (and in
the operator's own environment) must appear nowhere: status, events, Jobs, logs, MLflow.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from k8s.reconcile import OperatorConfig
from tests.conftest import small_spec_data
from tests.k8s.emulator import (
    LA,
    NAMESPACE,
    apply,
    client,
    declare,
    objects,
    operator,
    phase,
    resource,
)
from tests.k8s.emulator import base as child_base
from tests.k8s.kubelet import SECRETS, Kubelet

CANARY = "canary-7f3a9c51e2b04d6e"
SPEC: dict[str, Any] = small_spec_data(
    dataset={"evalSize": 16},
    probe={"mode": "exact", "steps": 2, "layers": [1, 2]},
    training={  # `auto`: the train Job races ×1 and ×3 to step 2, and the winner is the training
        "maxSteps": 2,
        "saveSteps": 2,
        "learningRateMultiplier": "auto",
        "calibration": {"multipliers": [1, 3], "items": 16},
    },
    mlflow={"experiment": "k8s-e2e", "registeredModel": "k8s-e2e", "tokenSecret": {"name": "mlflow-token"}},
    resources={"probeParallelism": 2},
)


@pytest.mark.heavy
async def test_jobs_run_for_real_and_the_resource_succeeds_with_a_registered_version(
    kmock: Any, mlflow_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("LAYERPILOT_MLFLOW_TOKEN", CANARY)  # the operator's own token: sent, never shown
    declare(kmock)
    kmock.resources[SECRETS] = {"kind": "Secret", "namespaced": True, "verbs": ["get", "create", "list"]}
    core = client(kmock).core
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "mlflow-token", "namespace": NAMESPACE},
        "data": {"token": base64.b64encode(CANARY.encode()).decode()},
    }
    import asyncio

    await asyncio.to_thread(core.create_namespaced_secret, NAMESPACE, secret)
    kubelet = Kubelet(kmock, tmp_path)
    body = resource("e2e", SPEC)
    async with operator(kmock, OperatorConfig(tracking_uri=mlflow_server.uri)):
        await apply(client(kmock), body)
        await kubelet.run_until(lambda: phase(kmock, "e2e") in ("Succeeded", "Failed"))
    status = objects(kmock, LA)["e2e"]["status"]
    assert status["phase"] == "Succeeded", (status.get("message"), kubelet.logs)
    base = child_base(body)
    assert [p.rsplit("-", 2)[0] for p in kubelet.ran] == [
        f"{base}-plan",
        *[f"{base}-probe"] * 4,
        f"{base}-merge",
        f"{base}-train",
        f"{base}-register",
    ]

    # Real files on the shared workspace: the merged probe report, and a patch of the selected layer.
    work = tmp_path / "claims" / f"{base}-workspace" / base
    report = json.loads((work / "probe" / "probe_report.json").read_text())
    assert sorted(layer["index"] for layer in report["layers"]) == [1, 2]
    assert report["selected"] == status["selectedLayers"]
    assert (work / "train" / "layer_patch.safetensors").is_file()
    race = json.loads((work / "train" / "calibration" / "calibration.json").read_text())
    assert status["learningRateMultiplier"] == f"{race['chosen']:g}"
    trained = next(c for c in status["conditions"] if c["type"] == "Trained")
    assert f"at {race['chosen']:g}× the shared learning rate" in trained["message"]

    # A real registered version with alias candidate, the one the status names.
    mlflow = MlflowClient(mlflow_server.uri)
    version = mlflow.get_model_version_by_alias("k8s-e2e", "candidate")
    assert status["modelVersion"] == version.version
    assert version.run_id == status["mlflow"]["runIds"]["adapt"]
    assert {mlflow.get_run(r).info.status for r in status["mlflow"]["runIds"].values()} == {"FINISHED"}

    # The canary is nowhere: not in any object but its Secret, no log line, no pod output, no run.
    everything = json.dumps(
        {str(key): obj.raw for key, obj in kmock.objects.items() if key[0].plural != "secrets"}, default=str
    )
    assert CANARY not in everything
    assert CANARY not in caplog.text
    assert all(CANARY not in log for log in kubelet.logs.values())
    for run_id in status["mlflow"]["runIds"].values():
        run = mlflow.get_run(run_id)
        assert CANARY not in json.dumps({"p": run.data.params, "t": run.data.tags})
    # The token reached the pods only as a mounted file.
    token_files = list((tmp_path / "pods").glob("*/mlflow-token/token"))
    assert token_files and all(f.read_text() == CANARY for f in token_files)

    # A second resource on the same base reuses that probe from MLflow: it runs no probe Jobs.
    again = resource("e2e-reuse", {**SPEC, "probe": {"reuse": "mlflow"}})
    async with operator(kmock, OperatorConfig(tracking_uri=mlflow_server.uri)):
        await apply(client(kmock), again)
        await kubelet.run_until(lambda: phase(kmock, "e2e-reuse") in ("Succeeded", "Failed"))
    reused = objects(kmock, LA)["e2e-reuse"]["status"]
    assert reused["phase"] == "Succeeded", (reused.get("message"), kubelet.logs)
    second = child_base(again)
    assert [p.rsplit("-", 2)[0] for p in kubelet.ran if p.startswith(second)] == [
        f"{second}-train",
        f"{second}-register",
    ]
    probe_run = status["mlflow"]["runIds"]["probe"]
    assert reused["profile"] == f"exact probe on builtin:arith, reused from MLflow run {probe_run}"
    assert reused["selectedLayers"] == status["selectedLayers"]
    version = mlflow.get_model_version_by_alias("k8s-e2e", "candidate")
    assert version.version == reused["modelVersion"] != status["modelVersion"]
    assert f"| layers chosen by | {reused['profile']} |" in version.description


AGENT: dict[str, Any] = {
    "model": {"uri": "builtin:demo-agent"},
    "environment": {"uri": "builtin:gridworld", "params": {"size": 4}, "maxTurns": 4, "evalEpisodes": 16},
    "algorithm": {
        "numGenerations": 8,
        "maxCompletionLength": 8,
        "learningRate": 1e-4,
        "advantageEstimator": "gigpo",
    },
    "probe": {"mode": "exact", "steps": 2, "layers": [1, 2]},
    "training": {"maxSteps": 2, "batchSize": 16, "saveSteps": 2},
    "mlflow": {"experiment": "k8s-agent", "registeredModel": "k8s-agent"},
}


@pytest.mark.heavy
async def test_an_agent_resource_runs_its_episodes_in_the_jobs_and_registers_a_version(
    kmock: Any, mlflow_server: Any, tmp_path: Path
) -> None:
    """The spec carries the environment to every Job: probe units, training and registration play
    episodes (trained with GiGPO), and the version's review reads as an agent's (success rate)."""
    declare(kmock)
    kubelet = Kubelet(kmock, tmp_path)
    async with operator(kmock, OperatorConfig(tracking_uri=mlflow_server.uri)):
        await apply(client(kmock), resource("agent", AGENT))
        await kubelet.run_until(lambda: phase(kmock, "agent") in ("Succeeded", "Failed"))
    status = objects(kmock, LA)["agent"]["status"]
    assert status["phase"] == "Succeeded", (status.get("message"), kubelet.logs)
    mlflow = MlflowClient(mlflow_server.uri)
    version = mlflow.get_model_version_by_alias("k8s-agent", "candidate")
    assert (
        "success rate (greedy)" in version.description and "on 16 evaluation episodes" in version.description
    )
    assert "| algorithm | gigpo (ω 1, γ 0.95, normalization auto), grpo loss |" in version.description
    train = next(
        r
        for r in mlflow.search_runs([mlflow.get_experiment_by_name("k8s-agent").experiment_id])
        if r.info.run_name == "train"
    )
    assert {"train/episode/success", "train/gigpo/grouped_actions"} <= set(train.data.metrics)
