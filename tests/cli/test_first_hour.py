"""The first hour with your own data, as a new user meets it: the README's command on a small file,
a run that could not learn saying so, and every command answering `--json` and `--help` alike."""

from __future__ import annotations

import json
from pathlib import Path

import typer.main
import yaml

from cli.main import app
from cli.reference import _walk
from tests.cli.helpers import runner


def _rows(path: Path, prompts: list[str], answers: list[str]) -> Path:
    path.write_text(
        "".join(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in zip(prompts, answers, strict=True))
    )
    return path


def test_the_readme_command_trains_on_a_fifty_row_file(tmp_path: Path) -> None:
    """`layerpilot train --model builtin:demo --dataset my50rows.jsonl --reward exact_answer --layers 2
    --out runs/x`: a fifth of a small file is held out for evaluation, the rest trains."""
    data = _rows(
        tmp_path / "my50rows.jsonl", [f"{i}+{i}=" for i in range(50)], [str(2 * i) for i in range(50)]
    )
    args = ["train", "--model", "builtin:demo", "--dataset", str(data), "--reward", "exact_answer"]
    result = runner.invoke(
        app, [*args, "--layers", "2", "--out", str(tmp_path / "runs" / "x"), "--max-steps", "2"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "runs" / "x" / "spec.json").read_text())["dataset"]["evalSize"] is None
    assert "a fifth of a small dataset (--eval-size)" in " ".join(result.stderr.split())

    from service.data import load_rows
    from service.spec.models import DatasetSpec

    train, evaluation = load_rows(DatasetSpec(uri=str(data)))
    assert (len(train), len(evaluation)) == (40, 10)
    train, evaluation = load_rows(DatasetSpec(uri=str(data), evalSize=5))  # --eval-size 5
    assert (len(train), len(evaluation)) == (45, 5)


def test_a_run_that_could_not_learn_says_so_and_why(tmp_path: Path) -> None:
    """Letters the demo's tokenizer does not know become <pad>: the model cannot read the prompts,
    no answer is ever right, every reward is 0 and the weights do not move."""
    words = ["What is two plus two?", "How much is three and four?"] * 10
    data = _rows(tmp_path / "words.jsonl", words, ["four", "seven"] * 10)
    args = ["train", "--model", "builtin:demo", "--dataset", str(data), "--layers", "2", "--max-steps", "2"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run"), "--no-mlflow", "--json"])
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["warnings"]
    assert len(warnings) == 2, warnings
    unread, nothing = warnings
    assert unread.startswith("the tokenizer of builtin:demo maps ") and "<pad>" in unread and "'W'" in unread
    assert nothing.startswith("every reward was 0.0 in all 2 steps, so GRPO had nothing to learn from")
    shown = " ".join(result.stderr.split())
    assert f"warning: {' '.join(nothing.split())}" in shown  # said at the end of the run too


def test_every_command_answers_json_and_shows_a_plain_usage_line() -> None:
    root = typer.main.get_command(app)
    for path, command in _walk(root, ["layerpilot"]):
        name = " ".join(part.strip("[]") for part in path[1:])
        options = {option for param in command.params for option in getattr(param, "opts", [])}
        if name != "operator run":  # a long-running process, not a result
            assert "--json" in options, name
        shown = runner.invoke(app, [*name.split(), "--help"])
        usage = next(line for line in shown.stdout.splitlines() if "Usage:" in line)
        assert "{" not in usage, usage  # `patch apply BASE PATCH_DIR OUT`, never `{BASE}`


def test_k8s_manifests_as_json_and_the_example_is_the_demo(tmp_path: Path) -> None:
    from service.spec.demo import demo_document

    result = runner.invoke(app, ["k8s", "manifests", "--json"])
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert set(files) == {"crd.yaml", "rbac.yaml", "operator.yaml", "example.yaml"}
    example = yaml.safe_load(files["example.yaml"])
    demo = demo_document()
    assert {k: v for k, v in example["spec"].items() if k != "resources"} == demo["spec"]
    assert (
        example["spec"]["training"]["learningRateMultiplier"]
        == demo["spec"]["training"]["learningRateMultiplier"]
    )
    written = runner.invoke(app, ["k8s", "manifests", "--write", str(tmp_path / "m"), "--json"])
    assert json.loads(written.stdout)["written"] == [str(tmp_path / "m" / name) for name in files]
    bad = runner.invoke(app, ["k8s", "manifests", "--write", str(tmp_path / "m" / "crd.yaml")])
    assert bad.exit_code == 2 and "--write" in bad.stderr
