"""`layerpilot train` → `patch apply` → `eval --patch`, as a user chains them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cli.main import app
from service.patch import PATCH_TENSORS
from tests.cli.helpers import resource, runner, write_spec


def test_train_then_patch_apply_then_eval(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        resource(
            dataset={"evalSize": 24},
            algorithm={"numGenerations": 4, "maxCompletionLength": 4, "learningRate": 1e-3},
            training={"maxSteps": 2, "batchSize": 8, "saveSteps": 2},
        ),
    )
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(spec), "--layers", "3", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output

    summary = json.loads(result.stdout)
    assert summary["layers"] == [3] and summary["globalStep"] == 2
    assert (out / PATCH_TENSORS).exists()

    again = runner.invoke(app, ["train", str(spec), "--layers", "3", "--out", str(out)])
    assert again.exit_code == 2 and "--resume" in again.output

    applied = tmp_path / "model"
    result = runner.invoke(app, ["patch", "apply", "builtin:demo", str(out), str(applied), "--json"])
    assert result.exit_code == 0, result.output
    from transformers import AutoModelForCausalLM

    from service.models.loading import load_model_and_tokenizer
    from service.patch import apply_to_model, read_patch
    from service.spec.models import ModelSpec

    full = AutoModelForCausalLM.from_pretrained(applied, dtype=torch.float32).eval()
    base, tokenizer = load_model_and_tokenizer(ModelSpec())
    apply_to_model(base, read_patch(out))
    batch = tokenizer(["41+17="], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(full(**batch).logits, base.eval()(**batch).logits)

    refused = runner.invoke(app, ["patch", "apply", str(applied), str(out), str(tmp_path / "m2")])
    assert refused.exit_code == 2 and "BASE" in refused.output

    scored = runner.invoke(app, ["eval", str(spec), "--patch", str(out), "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["numItems"] == 24


def test_a_training_with_its_server_down_keeps_its_record_in_its_own_directory(
    tmp_path: Path, clean_mlflow_env: Any
) -> None:
    """The record belongs to the job's directory, never to the directory the user stands in, and
    `mlflow sync` publishes it from there once a server answers."""
    from mlflow import MlflowClient

    from tests.mlflow_server import free_port

    clean_mlflow_env.setenv("LAYERPILOT_MLFLOW_ATTEMPTS", "1")
    clean_mlflow_env.setenv("LAYERPILOT_MLFLOW_TIMEOUT_S", "2")
    dead = f"http://127.0.0.1:{free_port()}"
    spec = write_spec(
        tmp_path,
        resource(
            algorithm={"numGenerations": 4, "maxCompletionLength": 4, "learningRate": 1e-3},
            training={"maxSteps": 2, "batchSize": 8, "saveSteps": 2},
            mlflow={"trackingUri": dead, "experiment": "down"},
        ),
    )
    checkout = tmp_path / "checkout"  # where the user runs the command
    checkout.mkdir()
    clean_mlflow_env.chdir(checkout)
    out = tmp_path / "runs" / "x"
    result = runner.invoke(app, ["train", str(spec), "--layers", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output  # the training is done; MLflow only waits
    said = " ".join(result.stderr.split())
    assert f"MLflow at {dead} unreachable" in said and f"`layerpilot mlflow sync {out}`" in said
    assert list(checkout.iterdir()) == []  # nothing written where the user stands
    assert {"record.json", "metrics.jsonl", "spec.json", "published.json"} <= {p.name for p in out.iterdir()}

    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    synced = runner.invoke(app, ["mlflow", "sync", str(out), "--tracking-uri", store, "--json"])
    assert synced.exit_code == 0, synced.output
    run_id = json.loads(synced.stdout)["runs"]["."]
    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["layers"] == "2"
    assert [m.step for m in MlflowClient(store).get_metric_history(run_id, "train/reward")] == [1, 2]
    again = runner.invoke(app, ["mlflow", "sync", str(out), "--tracking-uri", store, "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["sent"] == {}
