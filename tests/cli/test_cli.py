"""The CLI as a user drives it: exit codes, one-line errors, JSON results, patch apply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from cli.main import app
from service.delta import PATCH_TENSORS
from service.layers import DEMO_MODEL_DIR

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, doc: Any, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def _resource(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "layerpilot.dev/v1alpha1",
        "kind": "LayerAdaptation",
        "metadata": {"name": "t"},
        "spec": spec,
    }


# (document, the field the one-line error must name)
BAD_SPECS: list[tuple[Any, str]] = [
    ({"algorithm": {"numGenerations": 3}}, "spec.algorithm.numGenerations"),
    ({"algorithm": {"numGenerations": 1}}, "spec.algorithm.numGenerations"),
    ({"algorithm": {"learningRate": -1}}, "spec.algorithm.learningRate"),
    ({"algorithm": {"lossType": "ppo"}}, "spec.algorithm.lossType"),
    ({"algorithm": {"lernRate": 1e-5}}, "spec.algorithm.lernRate"),
    ({"algorithm": {"temperature": 0}}, "spec.algorithm.temperature"),
    ({"algorithm": {"beta": -0.1}}, "spec.algorithm.beta"),
    ({"training": {"batchSize": 0}}, "spec.training.batchSize"),
    ({"training": {"maxSteps": "ten"}}, "spec.training.maxSteps"),
    ({"training": {"precision": "fp8"}}, "spec.training.precision"),
    ({"model": {"uri": "s3://bucket/model"}}, "spec.model.uri"),
    ({"model": {"uri": "builtin:gpt5"}}, "spec.model.uri"),
    ({"dataset": {"uri": "builtin:gsm8k"}}, "spec.dataset.uri"),
    ({"dataset": {"evalSize": 0}}, "spec.dataset.evalSize"),
    ({"rewards": []}, "spec.rewards"),
    ({"rewards": [{"weight": 1.0}]}, "spec.rewards[0].name"),
    ({"probe": {"mode": "vibes"}}, "spec.probe.mode"),
    ({"probe": {"layers": [1, 1]}}, "spec.probe.layers"),
    ({"selection": {"strategy": "manual"}}, "spec.selection.layers"),
    ({"selection": {"strategy": "top-k", "layers": [2]}}, "spec.selection.layers"),
    ({"selection": {"k": 0}}, "spec.selection.k"),
    ({"resources": {"gpus": -1}}, "spec.resources.gpus"),
    ({"mlflow": {"experiment": ""}}, "spec.mlflow.experiment"),
]


@pytest.mark.parametrize(("spec", "field"), BAD_SPECS, ids=[f for _, f in BAD_SPECS])
def test_bad_spec_gives_one_line_naming_the_field(tmp_path: Path, spec: dict[str, Any], field: str) -> None:
    for doc in (_resource(**spec), spec):  # the whole resource, and only its spec
        result = runner.invoke(app, ["eval", str(_write(tmp_path, doc))])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, result.output
        assert field.removeprefix("spec.") in lines[0]
        assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["eval", "/nonexistent/spec.yaml"], "SPEC: no file"),
        (["eval"], "pass a SPEC file or --model"),
        (["eval", "--model", "/nonexistent/model"], "model.uri"),
        (["train", "--model", "builtin:demo", "--layers", "9"], "layer 9 does not exist"),
        (["train", "--model", "builtin:demo", "--layers", "x"], "--layers"),
        (["train", "--model", "builtin:demo", "--layers", "2", "--reward", "nope"], "rewards[0].name"),
        (["train", "--model", "builtin:demo"], "selection.strategy"),
        (["patch", "apply", "builtin:demo", "/nonexistent", "/tmp/x"], "PATCH_DIR"),
    ],
)
def test_bad_command_line_input_exits_2(args: list[str], needle: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_invalid_yaml_and_wrong_kind(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(_write(tmp_path, "spec: {model: [unclosed"))])
    assert result.exit_code == 2 and "not valid YAML at line" in result.output
    wrong = {"apiVersion": "v1", "kind": "Pod", "spec": {}}
    result = runner.invoke(app, ["eval", str(_write(tmp_path, wrong))])
    assert result.exit_code == 2 and "apiVersion" in result.output


def test_rewards_lists_the_registry() -> None:
    result = runner.invoke(app, ["rewards", "--json"])
    assert result.exit_code == 0
    assert "exact_answer" in json.loads(result.output)["rewards"]


def test_eval_is_deterministic_and_json(tmp_path: Path) -> None:
    spec = _write(tmp_path, _resource(dataset={"evalSize": 40}))
    first = runner.invoke(app, ["eval", str(spec), "--json"])
    second = runner.invoke(app, ["eval", str(spec), "--json"])
    assert first.exit_code == 0, first.output
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["numItems"] == 40 and 0.0 < a["score"] < 1.0
    assert a["score"] == b["score"]


def test_train_then_patch_apply_then_eval(tmp_path: Path) -> None:
    spec = _write(
        tmp_path,
        _resource(
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

    from service.delta import apply_to_model, read_patch
    from service.layers import load_model_and_tokenizer
    from service.spec import ModelSpec

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


def test_demo_model_ships_in_the_package() -> None:
    assert (DEMO_MODEL_DIR / "model.safetensors").stat().st_size < 10_000_000
    info = json.loads((DEMO_MODEL_DIR / "build_info.json").read_text())
    assert 0.2 <= info["evalAccuracy"] <= 0.5


def test_demo_probes_trains_registers_and_says_where_to_look(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    """`make demo` on a shortened schedule: the local store it leaves is what a reviewer opens."""
    from mlflow import MlflowClient

    args = ["demo", "--workdir", str(tmp_path), "--probe-steps", "2", "--max-steps", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    store = f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert f"mlflow ui --backend-store-uri {store}" in result.stdout
    assert "registered:   demo-arith version 1 (alias candidate)" in result.stdout

    report = json.loads((tmp_path / "probe" / "probe_report.json").read_text())
    top = next(layer["index"] for layer in report["layers"] if layer["rank"] == 1)
    assert report["selected"] == [top]
    assert (tmp_path / "train" / PATCH_TENSORS).exists()
    assert (tmp_path / "model" / "model.safetensors").exists()

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("layerpilot-demo")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    parent = runs["adapt builtin:demo"]
    for child in ("probe", "train", "eval"):
        assert runs[child].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert {a.path for a in client.list_artifacts(runs["probe"].info.run_id)} == {
        "probe_report.json",
        "probe_report.png",
    }
    version = client.get_model_version_by_alias("demo-arith", "candidate")
    assert str(version.version) == "1" and version.run_id == parent.info.run_id
    assert version.tags["layerpilot.layers"] == str(top)
