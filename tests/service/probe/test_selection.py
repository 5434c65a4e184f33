"""Ranking and selecting layers from a probe report."""

from __future__ import annotations

import math
from typing import Any

import pytest

from service.errors import InputError
from service.probe.report import LayerScore, ProbeReport, rank_layers
from service.probe.selection import select_layers
from service.spec.models import SelectionSpec


def test_ranks_break_ties_toward_the_middle_then_the_lower_index() -> None:
    assert rank_layers({0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}, 5) == {2: 1, 1: 2, 3: 3, 0: 4, 4: 5}
    assert rank_layers({0: math.nan, 1: 0.0}, 2) == {1: 1, 0: 2}


def _report(scores: dict[int, float], num_layers: int = 8) -> ProbeReport:
    ranks = rank_layers(scores, num_layers)
    layers = [LayerScore(index=i, name=f"layer{i}", score=s, rank=ranks[i]) for i, s in scores.items()]
    return ProbeReport(
        model="m", num_layers=num_layers, mode="gradient", layers_path="model.layers", layers=layers
    )


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        ({"strategy": "top-k", "k": 2}, [3, 6]),
        ({"strategy": "mid-k", "k": 2}, [3, 4]),
        ({"strategy": "only-top", "k": 3}, [5, 6, 7]),
        ({"strategy": "only-bottom", "k": 1}, [0]),
        ({"strategy": "manual", "layers": [7, 1]}, [1, 7]),
    ],
)
def test_selection_strategies(selection: dict[str, Any], expected: list[int]) -> None:
    report = _report({i: float(i in (3, 6)) + i / 100 for i in range(8)})
    assert select_layers(SelectionSpec.model_validate(selection), report) == expected


def test_top_k_beyond_the_probed_layers_is_refused() -> None:
    with pytest.raises(InputError, match=r"selection\.k"):
        select_layers(SelectionSpec(k=3), _report({1: 0.5, 2: 0.1}))
