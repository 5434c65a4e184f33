"""`layerpilot rewards`."""

from __future__ import annotations

import json

from cli.main import app
from tests.cli.helpers import runner


def test_rewards_lists_the_registry() -> None:
    result = runner.invoke(app, ["rewards", "--json"])
    assert result.exit_code == 0
    assert "exact_answer" in json.loads(result.output)["rewards"]
