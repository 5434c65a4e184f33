"""`layerpilot eval`: deterministic greedy scores."""

from __future__ import annotations

import json
from pathlib import Path

from cli.main import app
from tests.cli.helpers import resource, runner, write_spec


def test_eval_is_deterministic_and_json(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, resource(dataset={"evalSize": 40}))
    first = runner.invoke(app, ["eval", str(spec), "--json"])
    second = runner.invoke(app, ["eval", str(spec), "--json"])
    assert first.exit_code == 0, first.output
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["numItems"] == 40 and 0.0 < a["score"] < 1.0
    assert a["score"] == b["score"]
