"""Bad input as a user meets it: one line naming the field and the fix, exit 2, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cli.main import app
from tests.cli.helpers import resource, runner, write_spec

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
    for doc in (resource(**spec), spec):  # the whole resource, and only its spec
        result = runner.invoke(app, ["eval", str(write_spec(tmp_path, doc))])
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
    result = runner.invoke(app, ["eval", str(write_spec(tmp_path, "spec: {model: [unclosed"))])
    assert result.exit_code == 2 and "not valid YAML at line" in result.output
    wrong = {"apiVersion": "v1", "kind": "Pod", "spec": {}}
    result = runner.invoke(app, ["eval", str(write_spec(tmp_path, wrong))])
    assert result.exit_code == 2 and "apiVersion" in result.output
