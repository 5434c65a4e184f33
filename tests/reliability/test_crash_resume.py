"""Crashes: `kill -9` in the middle, then the same command again. Nothing finished is lost, nothing
is done twice, and no result file is ever left half-written.

Faults are injected at a random checkpoint (seeded, so a failure reproduces) by SIGKILL, which runs
no cleanup at all: the only protection is that every result is written atomically.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from safetensors.torch import load_file

from cli.main import app
from service.patch import PATCH_META, PATCH_TENSORS, read_patch
from service.training.rundir import latest_checkpoint
from tests.cli.helpers import runner
from tests.conftest import small_spec_data

LAYERPILOT = str(Path(sys.executable).parent / "layerpilot")
SPEC: dict[str, Any] = small_spec_data(
    dataset={"evalSize": 16},
    probe={"mode": "exact", "steps": 2, "layers": [1, 2]},
    selection={"strategy": "top-k", "k": 1},
    training={"maxSteps": 8, "saveSteps": 2},
    mlflow={"experiment": "crash"},
)


def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def kill_at_checkpoint(args: list[str], out: Path, step: int, cwd: Path, timeout: float = 240) -> int:
    """Start `layerpilot ARGS`, SIGKILL it as soon as checkpoint `step` is complete under `out`;
    returns the signal it died of (the fault happened: it did not finish on its own)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    process = subprocess.Popen(
        [LAYERPILOT, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            found = latest_checkpoint(out)
            if found is not None and int(found.name.split("-")[1]) >= step:
                break
            if process.poll() is not None:
                raise AssertionError(f"finished before the fault: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise AssertionError("no checkpoint in time")
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        code = process.wait(timeout=30)
    return -code


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    return subprocess.run([LAYERPILOT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def no_half_files(root: Path) -> None:
    """Every result file under `root` parses whole (leftover hidden temp files are harmless)."""
    for path in root.rglob("*.json"):
        if not path.name.startswith("."):
            json.loads(path.read_text())
    for path in root.rglob("*.safetensors"):
        if not path.name.startswith("."):
            load_file(str(path))


@pytest.mark.heavy
def test_train_killed_at_a_random_checkpoint_resumes_to_the_same_result(tmp_path: Path) -> None:
    spec = spec_file(tmp_path)
    out = tmp_path / "run"
    step = random.Random(10).choice([2, 4, 6])
    args = ["train", str(spec), "--layers", "2", "--out", str(out), "--no-mlflow"]
    assert kill_at_checkpoint(args, out, step, tmp_path) == signal.SIGKILL
    no_half_files(out)
    assert not (out / PATCH_META).exists()  # the patch is written only at the end

    resumed = runner.invoke(app, [*args, "--resume", "--json"])
    assert resumed.exit_code == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["globalStep"] == 8 and result["resumedFrom"].endswith(f"checkpoint-{step}")
    patch = read_patch(out)
    assert patch.meta["trainedSteps"] == 8 and patch.layers == [2]
    assert all(name.startswith("model.layers.2.") for name in patch.tensors)
    no_half_files(out)

    # Resuming a finished run changes nothing, and says so.
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    again = runner.invoke(app, [*args, "--resume", "--json"])
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["globalStep"] == 8
    assert "already finished its 8 steps; nothing to train" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()} == before
    assert latest_checkpoint(out).name == "checkpoint-8"  # type: ignore[union-attr]


def test_resume_into_an_empty_directory_says_it_starts_fresh(tmp_path: Path) -> None:
    spec = spec_file(tmp_path)
    result = runner.invoke(
        app,
        [
            "train",
            str(spec),
            "--layers",
            "1",
            "--out",
            str(tmp_path / "new"),
            "--resume",
            "--max-steps",
            "1",
            "--no-mlflow",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert "no checkpoint in" in result.stderr and "starting from step 0" in result.stderr


@pytest.mark.heavy
def test_adapt_killed_during_training_does_not_redo_the_probe(tmp_path: Path) -> None:
    spec = spec_file(tmp_path)
    work = tmp_path / "work"
    args = ["adapt", str(spec), "--workdir", str(work)]
    assert (
        kill_at_checkpoint(args, work / "train", random.Random(11).choice([2, 4]), tmp_path) == signal.SIGKILL
    )
    no_half_files(work)
    partials = {p: p.stat().st_mtime_ns for p in (work / "probe" / "partials").glob("*.json")}
    assert len(partials) == 4  # base, full, layer 1, layer 2: the probe had finished

    rerun = cli([*args, "--json"], tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in partials} == partials  # no unit ran again
    assert json.loads(rerun.stdout)["trainedSteps"] == 8
    no_half_files(work)

    # Phase-level restart: evaluate and register again without probing or training.
    tensors = (work / "train" / PATCH_TENSORS).stat().st_mtime_ns
    again = cli([*args, "--from-phase", "eval", "--json"], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "reusing the probe report" in again.stderr
    assert (work / "train" / PATCH_TENSORS).stat().st_mtime_ns == tensors
    assert {p: p.stat().st_mtime_ns for p in partials} == partials


def test_from_phase_refuses_what_is_not_there(tmp_path: Path) -> None:
    spec = spec_file(tmp_path)
    for phase, needle in (("train", "holds no probe report"), ("sideways", "is not a phase")):
        result = runner.invoke(
            app, ["adapt", str(spec), "--workdir", str(tmp_path / "w"), "--from-phase", phase]
        )
        assert result.exit_code == 2 and needle in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
