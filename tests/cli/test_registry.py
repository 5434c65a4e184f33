"""`layerpilot registry` against a real MLflow server: list, show, the promotion gate, --force on record,
and one-line errors with the right exit codes."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from cli.main import app
from service.tracking.review import EVAL_SCORE
from tests.mlflow_server import MlflowServer, free_port
from tests.service.tracking.helpers import register_by_publishing

runner = CliRunner()


@pytest.fixture(scope="module")
def registered(
    mlflow_server: MlflowServer, trained_run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Two versions of one patch with eval scores 0.30 and 0.45."""
    name = f"cli-{uuid.uuid4().hex[:8]}"
    root = tmp_path_factory.mktemp("reg")
    for score in (0.30, 0.45):
        register_by_publishing(
            root,
            mlflow_server.uri,
            "registry-cli",
            trained_run["out"],
            name,
            eval_before=0.25,
            eval_after=score,
        )
    return {"name": name, "uri": mlflow_server.uri}


def _cli(*args: str) -> Any:
    return runner.invoke(app, ["registry", *args])


def _champion(uri: str, name: str) -> str:
    return str(MlflowClient(uri).get_model_version_by_alias(name, "champion").version)


def test_list_and_show(registered: dict[str, Any]) -> None:
    name, uri = registered["name"], registered["uri"]
    listed = _cli("list", "--tracking-uri", uri, "--json")
    assert listed.exit_code == 0, listed.output
    entry = next(m for m in json.loads(listed.stdout)["models"] if m["name"] == name)
    assert entry["latestVersion"] == "2" and entry["aliases"] == {"candidate": "2"}

    shown = _cli("show", name, "--tracking-uri", uri, "--json")
    versions = json.loads(shown.stdout)["versions"]
    assert [(v["version"], v["evalScore"], v["layers"], v["aliases"]) for v in versions] == [
        ("2", 0.45, "2", ["candidate"]),
        ("1", 0.3, "2", []),
    ]

    one = _cli("show", name, "1", "--tracking-uri", uri)
    assert one.exit_code == 0, one.output
    assert "Layer patch for builtin:demo" in one.stdout and "0.250 → 0.300" in one.stdout
    assert f"{EVAL_SCORE} = 0.3" in one.stdout


def test_promote_moves_champion_only_past_the_gate_and_records_force(
    registered: dict[str, Any], clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    name, uri = registered["name"], registered["uri"]
    first = _cli("promote", name, "1", "--tracking-uri", uri, "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["promoted"] is True and _champion(uri, name) == "1"

    better = _cli("promote", name, "2", "--tracking-uri", uri)
    assert better.exit_code == 0 and "version 2 scores 0.4500 > 0.3000" in better.stdout
    assert _champion(uri, name) == "2"

    worse = _cli("promote", name, "1", "--tracking-uri", uri)
    assert worse.exit_code == 1 and _champion(uri, name) == "2"
    assert worse.stderr.strip().count("\n") == 0
    assert "not promoted: version 1 scores 0.3000, not above champion version 2 (0.4500)" in worse.stderr

    no_reason = _cli("promote", name, "1", "--force", "--tracking-uri", uri)
    assert no_reason.exit_code == 2 and "--reason: --force needs a reason" in no_reason.stderr

    clean_mlflow_env.setenv("LAYERPILOT_USER", "ana")
    forced = _cli(
        "promote", name, "1", "--force", "--reason", "rollback: v2 regressed", "--tracking-uri", uri
    )
    assert forced.exit_code == 0, forced.output
    assert _champion(uri, name) == "1"
    tags = MlflowClient(uri).get_model_version(name, "1").tags
    assert tags["layerpilot.champion.forced"] == "true"
    assert tags["layerpilot.champion.reason"] == "rollback: v2 regressed"
    assert tags["layerpilot.champion.promoted_by"] == "ana"
    assert tags["layerpilot.champion.replaced_version"] == "2"

    again = _cli("promote", name, "1", "--tracking-uri", uri, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["promoted"] is False


NO_MODEL = "NAME: no registered model 'no-such-model'"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (
            ["show", "no-such-model"],
            "NAME: no registered model 'no-such-model'; see `layerpilot registry list`",
        ),
        (
            ["show", "no-such-model", "1"],
            "NAME: no registered model 'no-such-model'; see `layerpilot registry list`",
        ),
        (
            ["show", "{name}", "99"],
            "VERSION: {name} has no version 99; see `layerpilot registry show {name}`",
        ),
        (["promote", "{name}", "99"], "VERSION: {name} has no version 99"),
        (
            ["list", "--tracking-uri", "mlflow:5000"],
            "--tracking-uri: 'mlflow:5000' is not an MLflow tracking URI",
        ),
    ],
)
def test_bad_input_exits_2_naming_the_field(registered: dict[str, Any], args: list[str], field: str) -> None:
    args = [a.format(name=registered["name"]) for a in args]
    if "--tracking-uri" not in args:
        args += ["--tracking-uri", registered["uri"]]
    result = _cli(*args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {field.format(name=registered['name'])}")
    assert result.stderr.strip().count("\n") == 0


def test_an_unreachable_server_exits_1_with_one_line(clean_mlflow_env: pytest.MonkeyPatch) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    clean_mlflow_env.setenv("MLFLOW_TRACKING_URI", uri)  # the option's environment variable
    started = time.monotonic()
    result = _cli("list")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: MLflow at {uri} is unreachable (connection refused); start it or pass --tracking-uri / "
        "set MLFLOW_TRACKING_URI"
    )
    assert time.monotonic() - started < 10


def test_without_a_store_the_error_says_where_to_point(
    tmp_path: Path, clean_mlflow_env: pytest.MonkeyPatch
) -> None:
    clean_mlflow_env.chdir(tmp_path)
    result = _cli("list")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"error: --tracking-uri: no MLflow store at {tmp_path.resolve()}/mlflow.db"
    )
    assert not (tmp_path / "mlflow.db").exists()  # looking did not create an empty store
