"""Under `torchrun` (2 processes, CPU, gloo) every rank trains; only the main process writes and prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from service.patch import read_patch
from tests.conftest import small_spec_data
from tests.mlflow_server import free_port

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def launch(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    torchrun = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port())]
    return subprocess.run([*torchrun, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def write_spec(tmp_path: Path, **sections: Any) -> Path:
    """A small spec on the demo model (a high learning rate: a few steps change the weights)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(small_spec_data(dataset={"evalSize": 16}, **sections)))
    return spec


@pytest.mark.heavy
def test_two_ranks_train_the_same_weights_and_one_patch_is_written(tmp_path: Path) -> None:
    done = launch([str(REPO / "tests" / "service" / "training" / "rank_weights.py"), str(tmp_path)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert rank0.keys() == rank1.keys() and all(k.startswith("model.layers.2.") for k in rank0)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # DDP kept the replicas in step
    patch = read_patch(tmp_path / "run")
    assert patch.tensors.keys() == rank0.keys()
    assert all(torch.equal(patch.tensors[k], rank0[k]) for k in rank0)


@pytest.mark.heavy
def test_the_cli_under_torchrun_prints_one_result_and_resumes(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, training={"maxSteps": 4, "batchSize": 8, "saveSteps": 2})
    args = ["--no-python", str(BIN / "layerpilot"), "train", str(spec), "--layers", "2", "--out", "run"]
    first = launch([*args, "--max-steps", "2", "--no-mlflow", "--json"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads(first.stdout)  # exactly one JSON document: one rank printed
    assert result["globalStep"] == 2 and first.stderr.count("training layers [2]") == 1
    patch = read_patch(tmp_path / "run")
    assert patch.layers == [2] and all(k.startswith("model.layers.2.") for k in patch.tensors)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoints",
        "deltas.json",
        "layer_patch.json",
        "layer_patch.safetensors",
        "metrics.jsonl",
        "record.json",
        "run.json",
        "spec.json",
    ]
    # one record, the main rank's: one line per step, not one per rank
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "train/loss" in line["metrics"]] == [1, 2]

    resumed = launch([*args, "--resume", "--no-mlflow", "--json"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = json.loads(resumed.stdout)
    assert again["globalStep"] == 4 and again["resumedFrom"].endswith("checkpoint-2")
    assert read_patch(tmp_path / "run").meta["trainedSteps"] == 4


@pytest.mark.heavy
def test_a_probe_unit_under_torchrun_writes_one_partial(tmp_path: Path) -> None:
    """An exact unit (as an Indexed Job or TrainJob runs it) trains on every rank; one scores and writes."""
    spec = write_spec(tmp_path, training={"batchSize": 8}, probe={"mode": "exact", "steps": 2})
    probe = [str(BIN / "layerpilot"), "probe", str(spec), "--out", "probe", "--no-mlflow", "--json"]
    done = launch(["--no-python", *probe, "--layer-index", "3"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout)  # one JSON document: one rank printed
    assert str(record["unit"]) == "3" and record["trainedSteps"] == 2 and 0.0 <= record["score"] <= 1.0
    partials = list((tmp_path / "probe" / "partials").iterdir())
    assert [p.name for p in partials] == ["layer-3.json"]
    assert json.loads(partials[0].read_text())["score"] == record["score"]
    run_dir = next((tmp_path / "probe" / "runs").iterdir())
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "layer_patch.safetensors").exists()


@pytest.mark.parametrize("name", ["ddp", "fsdp2", "zero2"])
def test_the_shipped_launcher_configs_are_what_accelerate_reads(name: str) -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(REPO / "examples" / "launchers" / f"{name}.yaml"))
    assert config.distributed_type.value == {"ddp": "MULTI_GPU", "fsdp2": "FSDP", "zero2": "DEEPSPEED"}[name]
    if name == "fsdp2":
        assert config.fsdp_config["fsdp_version"] == 2
    if name == "zero2":
        assert config.deepspeed_config["zero_stage"] == 2


@pytest.mark.heavy
def test_auto_under_torchrun_chooses_one_rate_for_every_rank(tmp_path: Path) -> None:
    """Rank 0 scores the ladder and every rank trains at its choice: one result, one patch."""
    training = {
        "maxSteps": 4,
        "batchSize": 8,
        "saveSteps": 4,
        "learningRateMultiplier": "auto",
        "calibration": {"multipliers": [1, 3], "items": 16},
    }
    spec = write_spec(tmp_path, training=training)
    args = ["--no-python", str(BIN / "layerpilot"), "train", str(spec), "--layers", "2", "--out", "run"]
    done = launch([*args, "--no-mlflow", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    race = json.loads((tmp_path / "run" / "calibration" / "calibration.json").read_text())
    assert result["learningRate"]["multiplier"] == race["chosen"] and result["globalStep"] == 4
    assert read_patch(tmp_path / "run").meta["learningRate"]["chosenBy"] == "calibration"
