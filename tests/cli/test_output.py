"""What a person or a script reads: progress in logs and on a terminal, JSON errors, help, notes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from cli.main import app
from cli.progress import LogProgress, TerminalProgress
from tests.cli.helpers import resource, runner, write_spec
from tests.mlflow_server import free_port

LAYERPILOT = Path(sys.executable).parent / "layerpilot"


def test_adapt_in_a_log_shows_every_phase_as_plain_lines(tmp_path: Path) -> None:
    """stderr to a file (CI, a pod's log): one line per phase start and end, state lines between."""
    spec = write_spec(
        tmp_path,
        resource(
            dataset={"evalSize": 16},
            algorithm={"numGenerations": 4, "maxCompletionLength": 4, "learningRate": 1e-3},
            probe={"mode": "exact", "steps": 2, "layers": [1]},
            training={"maxSteps": 2, "batchSize": 8, "saveSteps": 2},
        ),
    )
    env = {**os.environ, "LAYERPILOT_PROGRESS_SECONDS": "0"}
    done = subprocess.run(
        [str(LAYERPILOT), "adapt", str(spec), "--workdir", str(tmp_path / "w"), "--parallel", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    for expected in (
        "probe: started, 3 units",
        "train: started, 2 steps",
        "eval: started, 16 items",
        "probe [3/3] base: score",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, done.stderr)
    assert any(line.startswith("probe: ") and "layer 1 train 1/2" in line for line in lines), done.stderr
    assert any(line.startswith("train: 2/2 steps · 0:00:") and "reward" in line for line in lines)
    assert any(line.startswith("train: done in 0:00:") for line in lines)
    # nothing but our own lines: no bars, no library INFO or warnings
    assert "\r" not in done.stderr and "%|" not in done.stderr
    assert not [line for line in lines if " INFO " in line or "Warning" in line], done.stderr
    assert "--resume" not in done.stderr  # a user who never passed it hears nothing of it


def test_a_terminal_gets_one_bar_per_phase_started_when_the_phase_starts() -> None:
    screen = io.StringIO()
    display = TerminalProgress(Console(file=screen, force_terminal=True, width=80))
    display.start("train", 3)
    assert "probe" not in screen.getvalue()  # no bar waits on a phase that has not started
    display.update("train", 2, "reward 0.500")
    display.note("a line worth keeping")
    display.finish("train", "reward 0.600")
    display.start("eval", 10)
    display.finish("eval", "score 0.4000")
    shown = screen.getvalue()
    assert "3/3 steps" in shown and "reward 0.600" in shown and "a line worth keeping" in shown
    assert "10/10 items" in shown and "score 0.4000" in shown


def test_log_lines_come_at_most_every_interval() -> None:
    lines = io.StringIO()
    display = LogProgress(Console(file=lines, width=80), interval=3600)
    display.start("train", 100)
    for step in range(1, 101):
        display.update("train", step, f"reward {step / 100:.3f}")
    display.finish("train", "reward 1.000")
    assert lines.getvalue().splitlines()[0] == "train: started, 100 steps"
    assert len(lines.getvalue().splitlines()) == 2  # start and end: the steps fell inside the interval


def test_errors_under_json_are_json(tmp_path: Path) -> None:
    bad = write_spec(tmp_path, resource(algorithm={"numGenerations": 3}))
    result = runner.invoke(app, ["eval", str(bad), "--json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["field"] == "spec.algorithm.numGenerations" and error["exitCode"] == 2
    assert error["fix"] and error["message"].startswith("spec.algorithm.numGenerations:")

    usage = runner.invoke(app, ["train", "--bogus", "--json"])
    assert usage.exit_code == 2 and "--bogus" in json.loads(usage.stdout)["error"]["message"]

    dead = f"http://127.0.0.1:{free_port()}"
    env = {"LAYERPILOT_MLFLOW_ATTEMPTS": "1", "LAYERPILOT_MLFLOW_TIMEOUT_S": "2"}
    down = runner.invoke(app, ["registry", "list", "--tracking-uri", dead, "--json"], env=env)
    assert down.exit_code == 1 and "unreachable" in json.loads(down.stdout)["error"]["message"]


def test_version_and_help_read_at_80_columns() -> None:
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.startswith("layerpilot 0.1.0 (torch ")
    for args in (["train", "--help"], ["probe", "--help"], ["registry", "promote", "--help"]):
        shown = runner.invoke(app, args, env={"COLUMNS": "80"}).stdout
        assert not [token for token in ("<bool>", "<int", "<path>", "<str>", "[x>=") if token in shown], shown
        assert max(len(line) for line in shown.splitlines()) <= 80
    probe = runner.invoke(app, ["probe", "--help"]).stdout
    assert "--layer-index" in probe and "--mode" in probe  # the options of `probe SPEC` …
    assert "merge" in probe and "validate" in probe  # … and the other subcommands


def test_defaults_standing_in_for_unnamed_data_are_noted() -> None:
    result = runner.invoke(app, ["eval", "--model", "builtin:demo", "--json"])
    assert result.exit_code == 0, result.output
    note = " ".join(result.stderr.split())
    assert "note: no SPEC, so these defaults apply: dataset builtin:arith (--dataset)" in note
    # every default that changes the result, each with how to set it
    for default in ("reward exact_answer (--reward)", "64 eval rows", "(--eval-size)", "200 training steps"):
        assert default in note, note
    assert "learning rate 1e-05 × 1" in note
    assert (
        "note:" not in runner.invoke(app, ["eval", "--model", "x/none", "--json"]).stderr
    )  # bad input: 1 line


def test_probe_refuses_a_directory_holding_another_models_probe(tmp_path: Path) -> None:
    (tmp_path / "probe_report.json").write_text(
        json.dumps({"model": "hf://org/other", "numLayers": 2, "mode": "exact", "layers": []})
    )
    result = runner.invoke(
        app, ["probe", "--model", "builtin:demo", "--mode", "spectrum", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "holds a probe of hf://org/other" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("as_json", [False, True])
def test_registry_list_says_where_it_looked(tmp_path: Path, *, as_json: bool) -> None:
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(store).search_experiments()  # creates an empty store
    result = runner.invoke(
        app, ["registry", "list", "--tracking-uri", store, *(["--json"] if as_json else [])]
    )
    assert result.exit_code == 0, result.output
    if as_json:
        assert json.loads(result.stdout) == {"trackingUri": store, "models": []}
    else:
        assert f"no registered models in {store}" in result.stdout.replace("\n", "")
    missing = runner.invoke(app, ["registry", "list", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"])
    assert missing.exit_code == 2 and "no MLflow store at" in missing.output
    assert not (tmp_path / "none.db").exists()  # looking never creates a store


def test_demo_spec_is_the_example_users_copy() -> None:
    from service.spec.demo import DEMO_SPEC, demo_spec

    example = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"
    assert DEMO_SPEC.read_text() == example.read_text()
    assert (
        demo_spec().training.max_steps == yaml.safe_load(example.read_text())["spec"]["training"]["maxSteps"]
    )
