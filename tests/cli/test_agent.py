"""An agent end to end from the CLI: `adapt` on a gridworld spec probes, trains, evaluates and
registers, and MLflow holds what a reviewer of an agent needs; bad environments are bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cli.main import app
from service.models.hub import DEMO_AGENT_DIR
from service.spec.demo import demo_document
from tests.cli.helpers import runner


def _agent_spec(tmp_path: Path, algorithm: dict | None = None, **environment: object) -> Path:
    document = demo_document("agent")
    spec = document["spec"]
    spec["environment"].update(trainEpisodes=40, evalEpisodes=16, **environment)
    spec["algorithm"].update(algorithm or {})
    spec["probe"].update(steps=2, layers=[1, 4])
    spec["training"].update(batchSize=16, maxSteps=2)
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_the_agent_demo_model_ships_partly_competent() -> None:
    assert (DEMO_AGENT_DIR / "model.safetensors").stat().st_size < 10_000_000
    info = json.loads((DEMO_AGENT_DIR / "build_info.json").read_text())
    assert 0.3 <= info["evalSuccess"] <= 0.5


def test_an_agent_adapts_end_to_end_and_mlflow_holds_its_episodes(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    clean_mlflow_env.setenv("MLFLOW_TRACKING_URI", store)
    args = ["adapt", str(_agent_spec(tmp_path)), "--workdir", str(tmp_path / "w")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "success rate" in result.stdout and "registered demo-agent version 1" in result.stdout
    summary = json.loads((tmp_path / "w" / "adapt_result.json").read_text())
    assert summary["scoreName"] == "success rate" and summary["evalItems"] == 16
    assert summary["selected"][0] in (1, 4)

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("layerpilot-demo")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    train = runs["train"]
    history = client.get_metric_history(train.info.run_id, "train/episode/success")
    assert [m.step for m in history] == [1, 2]
    assert {"train/episode/turns", "train/episode/invalid_actions", "train/episode/env_errors"} <= set(
        train.data.metrics
    )
    assert "transcripts" in {a.path for a in client.list_artifacts(train.info.run_id)}
    version = client.get_model_version_by_alias("demo-agent", "candidate")
    assert "success rate" in (version.description or "")


@pytest.mark.parametrize(
    ("environment", "words"),
    [
        (
            {"uri": "builtin:gridwold"},
            "error: environment.uri: no built-in environment 'gridwold'; did you mean",
        ),
        ({"uri": "no_such_pkg:Env"}, "error: environment.uri: cannot import module 'no_such_pkg'"),
        ({"maxTurns": 0}, "error: spec.environment.maxTurns: "),
        ({"evalSeed": 10}, "error: spec.environment.evalSeed: evaluation seeds 10…25 overlap training seeds"),
    ],
)
def test_a_bad_environment_is_one_line_and_exit_2_before_any_model_loads(
    tmp_path: Path, environment: dict, words: str
) -> None:
    result = runner.invoke(
        app, ["train", str(_agent_spec(tmp_path, **environment)), "--layers", "1", "--no-mlflow"]
    )
    assert result.exit_code == 2, result.output
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "layerpilot-train").exists()


@pytest.mark.parametrize(
    ("algorithm", "environment", "words"),
    [
        (
            {"advantageEstimator": "gigpo"},
            {"uri": "tests.service.environments.envs:Counter", "params": {}},
            "error: algorithm.advantageEstimator: gigpo groups actions by the state they were taken in, and "
            "tests.service.environments.envs:Counter has no state_key(); add a state_key() method",
        ),
        (
            {"advantageEstimator": "gigpo", "extra": {"scale_rewards": "batch"}},
            {},
            "error: spec.algorithm.extra.scale_rewards: under gigpo the normalisation of both levels is one "
            "setting; set algorithm.gigpo.normalization",
        ),
        ({"gigpo": {"gamma": 1.5}}, {}, "error: spec.algorithm.gigpo.gamma: "),
        ({"advantageEstimator": "gipgo"}, {}, "error: spec.algorithm.advantageEstimator: "),
    ],
)
def test_gigpo_without_what_it_needs_is_one_line_and_exit_2(
    tmp_path: Path, algorithm: dict, environment: dict, words: str
) -> None:
    path = _agent_spec(tmp_path, algorithm, **environment)
    result = runner.invoke(app, ["train", str(path), "--layers", "1", "--no-mlflow"])
    assert result.exit_code == 2, result.output
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_gigpo_without_an_environment_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "arith.yaml"
    path.write_text(yaml.safe_dump({"spec": {"algorithm": {"advantageEstimator": "gigpo"}}}))
    result = runner.invoke(app, ["train", str(path), "--layers", "1", "--no-mlflow"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        "error: spec.algorithm.advantageEstimator: gigpo groups an agent's actions by the environment state"
    ), result.stderr
