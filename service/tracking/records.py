"""What layerpilot records in MLflow for a probe, a training, an evaluation and an adapt: one place.

Metric names follow one scheme in every run, `section/name`:

- `train/*`: TRL's step metrics at their global step (`train/reward`, `train/loss`, …), and a
  training's totals (`train/global_step`, `train/seconds`, `train/trainable_share`);
- `probe/*`: a probe's summary (`probe/selected_score`, `probe/best_contribution`, …) and one
  unit's score in an exact probe's unit runs;
- `eval/*`: the evaluation before and after training;
- `by_layer/*`: one value per decoder layer with step = layer index, so MLflow draws the curve
  over depth (`by_layer/score`, `by_layer/contribution`, `by_layer/rank`, `by_layer/delta_relative`).
  A run table shows only the last layer's value for these; read them as charts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from service.patch import PATCH_FILES
from service.probe.report import REPORT_JSON, REPORT_PNG, RL_MODES, ProbeReport
from service.probe.units import PARTIALS
from service.spec.fingerprint import fingerprint
from service.spec.models import LayerAdaptationSpec
from service.tracking import review
from service.tracking.retries import short_error, with_retries
from service.tracking.runs import TrackedRun
from service.training.trainer import TrainResult

log = logging.getLogger(__name__)

METRICS: dict[str, str] = {
    "train/<TRL metric>": "TRL's step metrics (reward, loss, rewards/<name>/mean, …) at each step",
    "train/global_step": "optimizer steps the training ran",
    "train/seconds": "wall time of the training",
    "train/trainable_share": "trained parameters as a share of the model's",
    "probe/baseline": "S_base: eval score of the base model (exact mode)",
    "probe/full": "S_full: eval score after RL of every layer (exact mode)",
    "probe/full_gain": "S_full − S_base (exact mode)",
    "probe/best_contribution": "the highest C(k) over the probed layers (exact mode)",
    "probe/selected_score": "mean probe score of the selected layers",
    "probe/selected_contribution": "mean C(k) of the selected layers (exact mode)",
    "probe/score": "one exact-probe unit's eval score (in its unit run)",
    "probe/seconds": "one exact-probe unit's wall time (in its unit run)",
    "eval/before": "eval score of the base model",
    "eval/after": "eval score of base + layer patch",
    "eval/gain": "eval/after − eval/before",
    "eval/items": "evaluation items scored",
    "by_layer/score": "probe score S_k (exact) or proxy score, step = layer index",
    "by_layer/contribution": "C(k) = (S_k − S_base) / (S_full − S_base), step = layer index",
    "by_layer/rank": "the layer's rank in the probe (1 = best), step = layer index",
    "by_layer/delta_relative": "relative weight change ‖ΔW‖/‖W‖ of a trained layer, step = layer index",
}
"""Every metric name layerpilot logs, with what it means (the reference lists them)."""

_CONSTANT_ZERO = ("clip_ratio/",)  # PPO-style clipping never triggers when each batch is used once
_BOOKKEEPING = ("epoch", "num_tokens")  # the trainer's counters, not learning signals


def log_spec(run: TrackedRun, spec: LayerAdaptationSpec) -> None:
    """The spec as params with dotted keys (`algorithm.learningRate`) plus the tags runs are found by."""
    run.log_params(review.flatten_params(spec.model_dump(mode="json", by_alias=True)))
    run.set_tags(
        {
            review.MODEL: spec.model.uri,
            review.STRATEGY: spec.selection.strategy,
            review.SPEC_HASH: fingerprint(spec),
        }
    )


class StepLogger:
    """A training step hook that logs TRL's metrics as `train/*` at their global step.

    Points go to MLflow in batches: the first step's at once, then at most every `interval`
    seconds, and the rest when the `with` block ends (failed or not). One request per step costs a
    fast training more than the training itself on a shared machine; see benchmarks/RESULTS.md.
    """

    MAX_POINTS = 900  # MLflow takes at most 1000 metrics in one request

    def __init__(self, run: TrackedRun | None, spec: LayerAdaptationSpec, interval: float = 10.0) -> None:
        self.run, self.spec, self.interval = run, spec, interval
        self.pending: list[tuple[str, Any, int, int | None]] = []
        self.sent_at: float | None = None

    def __call__(self, step: int, max_steps: int, logs: dict[str, float]) -> None:
        if self.run is None:
            return
        at = int(time.time() * 1000)
        self.pending += [(k, v, step, at) for k, v in trl_metrics(self.spec, logs).items()]
        due = self.sent_at is None or time.monotonic() - self.sent_at >= self.interval
        if due or len(self.pending) >= self.MAX_POINTS or step >= max_steps:
            self.flush()

    def flush(self) -> None:
        if self.run is not None and self.pending:
            steps = sorted({point[2] for point in self.pending})
            self.run.log_points(self.pending, f"step metrics, steps {steps[0]}-{steps[-1]}")
        self.pending, self.sent_at = [], time.monotonic()

    def __enter__(self) -> StepLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


def step_logger(run: TrackedRun | None, spec: LayerAdaptationSpec) -> StepLogger:
    """The step hook for a training tracked in `run` (none: a hook that records nothing)."""
    return StepLogger(run, spec)


def trl_metrics(spec: LayerAdaptationSpec, logs: Mapping[str, Any]) -> dict[str, Any]:
    """TRL's metrics as `train/*`, without the ones that only bury the curves that move.

    Clip ratios are left out when every batch is used for a single update (TRL's defaults): the
    policy ratio is then exactly 1, so they are always 0. The trainer's counters (epoch, tokens
    seen) are left out too.

    >>> trl_metrics(LayerAdaptationSpec(), {"reward": 0.5, "clip_ratio/low_mean": 0.0, "epoch": 0.1})
    {'train/reward': 0.5}
    """
    extra = spec.algorithm.extra
    on_policy = int(extra.get("num_iterations", 1)) == 1 and "steps_per_generation" not in extra
    kept = {
        key: value
        for key, value in logs.items()
        if key not in _BOOKKEEPING and not (on_policy and key.startswith(_CONSTANT_ZERO))
    }
    return _prefixed("train/", kept)


def log_probe(run: TrackedRun, report: ProbeReport, probe_dir: Path, spec: LayerAdaptationSpec) -> None:
    """Per-layer curves, a summary, the report and chart, and (exact mode) one child run per unit.

    Writes the report (with this run's id) into `probe_dir` before logging it.
    """
    if report.mode in RL_MODES:
        for path in sorted((probe_dir / PARTIALS).glob("*.json")):
            _log_unit(run, path, spec)
        report.extra["unitRunsLogged"] = True
    report.mlflow_run_id = run.run_id
    report.write(probe_dir)
    run.log_layer_metrics(
        {
            layer.index: {
                "by_layer/score": layer.score,
                "by_layer/contribution": layer.contribution,
                "by_layer/rank": layer.rank,
            }
            for layer in report.layers
        }
    )
    run.log_metrics(probe_summary(report))
    run.set_tags(probe_tags(report))
    run.log_artifact(probe_dir / REPORT_JSON)
    run.log_artifact(probe_dir / REPORT_PNG)


def probe_tags(report: ProbeReport) -> dict[str, str]:
    """The probe's answer as run tags, which the operator reads into a resource's status.

    >>> from service.probe.report import LayerScore
    >>> ranks = {0: 4, 1: 1, 2: 2, 3: 3}
    >>> layers = [LayerScore(i, f"l.{i}", 1 / rank, None, rank) for i, rank in ranks.items()]
    >>> probe_tags(ProbeReport("m", 4, "gradient", "l", layers, selected=[1, 2]))
    {'layerpilot.probe_mode': 'gradient', 'layerpilot.selected_layers': '1,2',
     'layerpilot.top_layers': '1,2,3'}
    """
    return {
        review.PROBE_MODE: report.mode,
        review.SELECTED_LAYERS: ",".join(map(str, report.selected)),
        review.TOP_LAYERS: ",".join(map(str, report.ranking[:3])),
    }


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


def _log_unit(run: TrackedRun, path: Path, spec: LayerAdaptationSpec) -> None:
    unit = json.loads(path.read_text())
    with run.child(f"probe {path.stem}", tags={"layerpilot.probe_unit": str(unit["unit"])}) as child:
        child.log_params({"unit": unit["unit"], "steps": unit["steps"]})
        child.log_metrics({"probe/score": unit["score"], "probe/seconds": unit["seconds"]})
        child.log_metrics(trl_metrics(spec, unit.get("trainMetrics") or {}))
        child.log_layer_metrics(
            {int(i): {"by_layer/delta_relative": v} for i, v in (unit.get("deltas") or {}).items()}
        )


def log_training(run: TrackedRun, training: TrainResult) -> None:
    """Weight change per layer (step = layer index), totals, and the patch files as artifacts."""
    run.log_layer_metrics(
        {index: {"by_layer/delta_relative": value} for index, value in training.deltas.relative.items()}
    )
    run.log_metrics(training_summary(training))
    for name in PATCH_FILES:
        if (training.out_dir / name).is_file():
            run.log_artifact(training.out_dir / name, "layer_patch")


def training_summary(training: TrainResult) -> dict[str, float]:
    return {
        "train/seconds": training.seconds,
        "train/global_step": training.global_step,
        "train/trainable_share": training.trainable_parameters / max(training.total_parameters, 1),
    }


def evaluation_summary(before: float, after: float, items: int) -> dict[str, float]:
    """
    >>> evaluation_summary(0.25, 0.5, 300)
    {'eval/before': 0.25, 'eval/after': 0.5, 'eval/gain': 0.25, 'eval/items': 300}
    """
    return {"eval/before": before, "eval/after": after, "eval/gain": after - before, "eval/items": items}


def _prefixed(prefix: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {key if key.startswith(prefix) else prefix + key: value for key, value in metrics.items()}


def child_runs(run: TrackedRun, tag: str) -> dict[str, str]:
    """Run ids of this run's children that carry `tag`, by the tag's value (the newest of each).

    How the last stage of a job finds its siblings: the operator's stage runs under the run it
    created, tagged `layerpilot.stage`. A read, not a log: when MLflow does not answer, the
    answer is empty (with a warning), and nothing is recorded as not logged.
    """
    if run.run_id is None:
        return {}
    run_id, client = run.run_id, run.tracker.client

    def search() -> list[Any]:
        experiment = run.experiment_id or client.get_run(run_id).info.experiment_id
        return list(
            client.search_runs(
                [experiment],
                filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{run_id}'",
                order_by=["attributes.start_time ASC"],
                max_results=1000,
            )
        )

    try:
        found = with_retries(run.tracker.retry, search)
    except Exception as error:
        log.warning("MLflow: cannot list the child runs of %s (%s)", run_id, short_error(error))
        return {}
    return {child.data.tags[tag]: child.info.run_id for child in found if tag in child.data.tags}
