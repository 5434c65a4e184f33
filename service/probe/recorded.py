"""What a probe records: the answer per layer (over depth), its summary, the tags the operator reads.

A probe's record is its directory (`service.record`); its units record themselves as they finish
(`service.probe.units`), each a child run. Metric names: `probe/*` for the summaries a run table
compares, `by_layer/*` with step = layer index so that MLflow draws them over depth.
"""

from __future__ import annotations

from pathlib import Path

from service.probe.report import REPORT_JSON, REPORT_PNG, ProbeReport
from service.record import Record
from service.tracking import review

PROBE_METRICS: dict[str, str] = {
    "probe/baseline": "S_base: eval score of the base model (exact mode)",
    "probe/full": "S_full: eval score after RL of every layer (exact mode)",
    "probe/full_gain": "S_full − S_base (exact mode)",
    "probe/best_contribution": "the highest C(k) over the probed layers (exact mode)",
    "probe/selected_score": "mean probe score of the selected layers",
    "probe/selected_contribution": "mean C(k) of the selected layers (exact mode)",
    "probe/score": "one probe unit's eval score, at the step it trained to (in its unit run)",
    "probe/seconds": "one probe unit's wall time (in its unit run)",
    "by_layer/score": "probe score S_k (exact) or proxy score, step = layer index",
    "by_layer/contribution": "C(k) = (S_k − S_base) / (S_full − S_base), step = layer index",
    "by_layer/rank": "the layer's rank in the probe (1 = best), step = layer index",
}
"""The metric names a probe records (the reference lists them)."""


def record_probe(record: Record, report: ProbeReport, probe_dir: Path) -> None:
    """Per-layer curves, the summary, the tags, and the report and chart as artifacts."""
    record.log_by_layer(
        {
            layer.index: {
                "by_layer/score": layer.score,
                "by_layer/contribution": layer.contribution,
                "by_layer/rank": layer.rank,
            }
            for layer in report.layers
        }
    )
    record.log_metrics(probe_summary(report))
    record.set_tags(probe_tags(report))
    record.add_artifact(probe_dir / REPORT_JSON)
    record.add_artifact(probe_dir / REPORT_PNG)


def record_profile(record: Record, report: ProbeReport, directory: Path) -> None:
    """A reused profile in a training's record: the tags (the operator reads the layers from them) and
    the report and chart, without the probe's metrics (the training did not measure them)."""
    record.set_tags(probe_tags(report))
    record.add_artifact(directory / REPORT_JSON)
    record.add_artifact(directory / REPORT_PNG)


def probe_tags(report: ProbeReport) -> dict[str, str]:
    """The probe's answer as run tags, which the operator reads into a resource's status.

    >>> from service.probe.report import LayerScore
    >>> ranks = {0: 4, 1: 1, 2: 2, 3: 3}
    >>> layers = [LayerScore(i, f"l.{i}", 1 / rank, None, rank) for i, rank in ranks.items()]
    >>> probe_tags(ProbeReport("m", 4, "gradient", "l", layers, selected=[1, 2]))
    {'layerpilot.probe_mode': 'gradient', 'layerpilot.selected_layers': '1,2',
     'layerpilot.top_layers': '1,2,3'}
    """
    tags = {
        review.PROBE_MODE: report.mode,
        review.SELECTED_LAYERS: ",".join(map(str, report.selected)),
        review.TOP_LAYERS: ",".join(map(str, report.ranking[:3])),
    }
    optional = {
        review.BASE_FINGERPRINT: report.base_fingerprint,  # how `probe.reuse: mlflow` finds this probe
        review.PROBE_TASK: report.task,
        review.PROBE_REUSED: report.describe() if report.reused_from is not None else None,
    }
    return {**tags, **{key: value for key, value in optional.items() if value}}


def probe_summary(report: ProbeReport) -> dict[str, float]:
    """The probe's numbers a reviewer compares across runs (absent ones are left out).

    >>> from service.probe.report import LayerScore
    >>> layers = [LayerScore(0, "l.0", 0.4, 0.5, 2), LayerScore(1, "l.1", 0.5, 1.0, 1)]
    >>> report = ProbeReport("m", 2, "exact", "l", layers, selected=[1], baseline_score=0.3, full_score=0.5)
    >>> probe_summary(report)["probe/selected_contribution"], probe_summary(report)["probe/full_gain"]
    (1.0, 0.2)
    """
    chosen = [layer for layer in report.layers if layer.index in set(report.selected)]
    contributions = [layer.contribution for layer in report.layers if layer.contribution is not None]
    picked = [layer.contribution for layer in chosen if layer.contribution is not None]
    summary: dict[str, float | None] = {
        "probe/baseline": report.baseline_score,
        "probe/full": report.full_score,
        "probe/full_gain": (
            round(report.full_score - report.baseline_score, 6)
            if report.full_score is not None and report.baseline_score is not None
            else None
        ),
        "probe/best_contribution": max(contributions) if contributions else None,
        "probe/selected_score": sum(layer.score for layer in chosen) / len(chosen) if chosen else None,
        "probe/selected_contribution": sum(picked) / len(picked) if picked else None,
    }
    return {k: float(v) for k, v in summary.items() if v is not None}
