"""What the probe tests share: a probe spec small enough that every unit is a real, quick TRL run."""

from __future__ import annotations

from typing import Any

from tests.conftest import small_spec

NUM_LAYERS = 6


def probe_spec(**overrides: Any) -> Any:
    """Two RL steps per unit: every unit is a real TRL run, the probe stays a few seconds."""
    return small_spec(
        probe={"steps": 2, **overrides.pop("probe", {})},
        selection={"strategy": "top-k", "k": 2, **overrides.pop("selection", {})},
        **overrides,
    )
