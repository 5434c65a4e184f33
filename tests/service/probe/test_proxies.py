"""The fast proxies: gradient (one round of GRPO rollouts) and spectrum (weights only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.probe.report import REPORT_JSON, REPORT_PNG
from service.probe.run import run_probe
from tests.service.probe.helpers import NUM_LAYERS, probe_spec


def test_gradient_proxy_scores_every_layer_without_training(tmp_path: Path) -> None:
    report = run_probe(probe_spec(), tmp_path, mode="gradient")
    assert report.mode == "gradient" and len(report.layers) == NUM_LAYERS
    assert all(layer.score > 0 and layer.contribution is None for layer in report.layers)
    assert all(layer.details["l2sqPerParam"] > 0 for layer in report.layers)
    assert sorted(layer.rank for layer in report.layers) == list(range(1, NUM_LAYERS + 1))
    assert report.extra["exactCostEstimateSeconds"] > 0
    assert (tmp_path / REPORT_PNG).exists()
    saved = json.loads((tmp_path / REPORT_JSON).read_text())
    assert saved["layers"][0]["contribution"] is None and saved["mode"] == "gradient"


def test_gradient_proxy_is_repeatable_on_a_subset_of_layers() -> None:
    """Same base weights and seed give the same rollouts, hence the same gradient scores."""
    from service.probe.proxies import gradient_scores

    result = gradient_scores(probe_spec(), [1, 4], batches=2)
    assert set(result.scores) == {1, 4}
    assert result.step_seconds is not None and result.step_seconds > 0
    again = gradient_scores(probe_spec(), [1, 4], batches=2)
    assert again.scores == pytest.approx(result.scores, rel=1e-5)


def test_spectrum_proxy_needs_no_rollouts(tmp_path: Path) -> None:
    report = run_probe(probe_spec(probe={"layers": [0, 2, 5]}), tmp_path, mode="spectrum")
    assert [layer.index for layer in report.layers] == [0, 2, 5]
    assert all(0.0 < layer.score <= 1.0 for layer in report.layers)
    assert report.extra.get("exactCostEstimateSeconds") is None
    assert len(report.selected) == 2 and set(report.selected) <= {0, 2, 5}
