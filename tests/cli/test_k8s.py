"""`layerpilot k8s manifests|submit|status`: the real CLI process against the kmock emulator."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from k8s import manifests
from tests.cli.helpers import runner, write_spec
from tests.k8s.emulator import LA, declare, objects

REPO = Path(__file__).resolve().parents[2]


def kubeconfig(tmp_path: Path, kmock: Any) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": str(kmock.url).rstrip("/")}}],
                "users": [{"name": "dev", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "emulator", "context": {"cluster": "emulator", "user": "dev", "namespace": "ml"}}
                ],
                "current-context": "emulator",
            }
        )
    )
    return path


async def cli(config: Path, *args: str) -> tuple[int, str, str]:
    """The installed `layerpilot` in its own process (the test's loop keeps serving the emulator)."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "layerpilot"),
        *args,
        env={**os.environ, "KUBECONFIG": str(config)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


def test_manifests_prints_and_writes_what_is_committed(tmp_path: Path) -> None:
    printed = runner.invoke(__import__("cli.main").main.app, ["k8s", "manifests"])
    assert printed.exit_code == 0
    assert printed.stdout == "---\n".join(manifests.rendered_files().values())
    kinds = [doc["kind"] for doc in yaml.safe_load_all(printed.stdout)]
    assert kinds[0] == "CustomResourceDefinition" and kinds[-1] == "LayerAdaptation" and "Deployment" in kinds
    written = runner.invoke(
        __import__("cli.main").main.app,
        [
            "k8s",
            "manifests",
            "--write",
            str(tmp_path),
            "--image",
            "reg/lp:1",
            "--tracking-uri",
            "http://m:5000",
        ],
    )
    assert written.exit_code == 0
    operator = list(yaml.safe_load_all((tmp_path / "operator.yaml").read_text()))
    assert operator[0]["data"] == {"MLFLOW_TRACKING_URI": "http://m:5000", "LAYERPILOT_IMAGE": "reg/lp:1"}
    assert operator[1]["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/lp:1"


async def test_submit_creates_the_resource_from_the_cli_file_and_status_reads_it(
    kmock: Any, tmp_path: Path
) -> None:
    declare(kmock)
    config = kubeconfig(tmp_path, kmock)
    code, out, err = await cli(config, "k8s", "submit", str(REPO / "examples" / "demo.yaml"))
    assert code == 0, err
    assert "created LayerAdaptation ml/demo-arith" in out and "layerpilot k8s status demo-arith -n ml" in out
    created = objects(kmock, LA)["demo-arith"]
    assert created["metadata"]["namespace"] == "ml"  # the kubeconfig context's namespace
    assert (
        created["spec"]["probe"]["steps"] == 30
        and created["spec"]["mlflow"]["registeredModel"] == "demo-arith"
    )

    code, _, err = await cli(config, "k8s", "submit", str(REPO / "examples" / "demo.yaml"))
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: metadata.name: LayerAdaptation ml/demo-arith already exists")

    code, out, _ = await cli(config, "k8s", "status", "demo-arith", "--json")
    assert code == 0 and json.loads(out)["status"] == {}
    kmock.objects[LA, "ml", "demo-arith"].patch(
        {
            "status": {
                "phase": "Training",
                "message": "train: Job demo-arith-x-train is running",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "Training",
                        "message": "m",
                        "lastTransitionTime": "2026-11-25T10:00:00Z",
                    }
                ],
                "jobs": {"train": "demo-arith-x-train"},
                "selectedLayers": [1],
                "mlflow": {"url": "http://mlflow:5000/#/experiments/1/runs/abc"},
            }
        }
    )
    code, out, _ = await cli(config, "k8s", "status", "demo-arith")
    assert code == 0
    assert (
        "ml/demo-arith: Training" in out
        and "selected:" in out
        and "http://mlflow:5000/#/experiments/1/runs/abc" in out
    )
    assert "demo-arith-x-train" in out and "missing" in out  # the Job was never created here
    code, _, err = await cli(config, "k8s", "status", "nope")
    assert code == 2 and "no LayerAdaptation ml/nope" in err


async def test_submit_refuses_a_bad_spec_before_talking_to_any_cluster(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, {"metadata": {"name": "x"}, "spec": {"algorithm": {"lossTyp": "grpo"}}})
    code, _, err = await cli(tmp_path / "no-kubeconfig", "k8s", "submit", str(spec))
    assert code == 2 and err.startswith("error: spec.algorithm.lossTyp") and err.count("\n") == 1
