"""`adapt`: probe → select → train only the selected layers → evaluate → register.

Every stage writes into one work directory, so a Job that dies half way is re-run with the same
command and continues: finished probe units are reused and training resumes from its newest
checkpoint. MLflow sees one parent run with children for the probe (and, in exact mode, one child
per probe unit), the training and the evaluation; the result becomes a registered model version
with alias `candidate` (what each run holds: `service.tracking.records`). Tracking never stops the
job: what could not be logged stays on disk and is named at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.errors import LayerpilotError
from service.evaluation import evaluate
from service.files import write_json
from service.probe.report import ProbeReport
from service.probe.run import run_probe
from service.progress import SILENT, Progress
from service.spec.fingerprint import fingerprint
from service.spec.models import LayerAdaptationSpec, ProbeMode
from service.tracking import records
from service.tracking.ledger import NotLogged
from service.tracking.runs import TrackedRun, Tracker
from service.tracking.uris import where_to_look
from service.training.trainer import TrainResult, train

PROBE_DIR = "probe"
TRAIN_DIR = "train"
RESULT_JSON = "adapt_result.json"

RESULT_FIELDS: dict[str, str] = {
    "model": "the spec's `model.uri`",
    "selected": "the layers trained",
    "strategy": "the selection rule",
    "probeMode": "the probe's mode",
    "layers": "the probe report's per-layer entries",
    "baselineScore": "S_base of an exact probe, else null",
    "fullScore": "S_full of an exact probe, else null",
    "evalBefore": "eval score of the base model",
    "evalAfter": "eval score of base + layer patch",
    "evalItems": "evaluation items",
    "trainedSteps": "optimizer steps of the training",
    "layerDeltas": "relative weight change per trained layer",
    "probeDir": "the probe directory",
    "patchDir": "the layer patch directory",
    "seconds": "wall time of the whole job",
    "mlflow": "`trackingUri`, `experimentId`, `runIds` (adapt, probe, train, eval), `registeredModel` "
    "(name, version, alias, url, …), `whereToLook`, `notLogged`",
}
"""Every field of `adapt_result.json` (the reference is generated from this)."""


@dataclass
class AdaptResult:
    report: ProbeReport
    training: TrainResult
    eval_before: float
    eval_after: float
    eval_items: int
    workdir: Path
    seconds: float
    run_ids: dict[str, str] = field(default_factory=dict)
    registered: dict[str, Any] | None = None
    tracking_uri: str | None = None
    experiment_id: str | None = None
    where_to_look: str | None = None
    not_logged: str | None = None

    @property
    def layers(self) -> list[int]:
        return self.training.layers

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.report.model,
            "selected": self.layers,
            "strategy": self.report.strategy,
            "probeMode": self.report.mode,
            "layers": [layer.to_json() for layer in sorted(self.report.layers, key=lambda x: x.index)],
            "baselineScore": self.report.baseline_score,
            "fullScore": self.report.full_score,
            "evalBefore": self.eval_before,
            "evalAfter": self.eval_after,
            "evalItems": self.eval_items,
            "trainedSteps": self.training.global_step,
            "layerDeltas": self.training.deltas.relative_json(),
            "probeDir": str(self.workdir / PROBE_DIR),
            "patchDir": str(self.workdir / TRAIN_DIR),
            "seconds": round(self.seconds, 1),
            "mlflow": {
                "trackingUri": self.tracking_uri,
                "experimentId": self.experiment_id,
                "runIds": self.run_ids,
                "registeredModel": self.registered,
                "whereToLook": self.where_to_look,
                "notLogged": self.not_logged,
            },
        }


def adapt(
    spec: LayerAdaptationSpec,
    workdir: Path,
    *,
    mode: str | None = None,
    parallel: int | None = None,
    max_steps: int | None = None,
    register: bool = True,
    progress: Progress = SILENT,
    tracker: Tracker | None = None,
) -> AdaptResult:
    """Run the whole job into `workdir`; returns what a reviewer needs to decide on the result."""
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    probe_dir, train_dir = workdir / PROBE_DIR, workdir / TRAIN_DIR
    chosen_mode = mode or spec.probe.mode
    tracker = tracker or Tracker.for_spec(spec.mlflow, workdir)
    with tracker.start_run(f"adapt {spec.model.uri}", tags={"layerpilot.stage": "adapt"}) as parent:
        records.log_spec(parent, spec)
        parent.log_dict(spec.model_dump(mode="json", by_alias=True), "spec.json")
        run_ids = {"adapt": parent.run_id or ""}

        progress.note(f"probing the layers of {spec.model.uri} ({chosen_mode} mode)")
        with parent.child("probe", tags={"layerpilot.stage": "probe"}) as probe_run:
            report = run_probe(
                spec, probe_dir, mode=chosen_mode, parallel=parallel, progress=progress, write=False
            )
            records.log_probe(probe_run, report, probe_dir, spec)
        run_ids["probe"] = probe_run.run_id or ""
        layers = report.selected
        parent.set_tags({"layerpilot.selected_layers": ",".join(map(str, layers))})

        progress.note(f"selected layers {layers} ({report.strategy}); RL-training only them")
        with parent.child("train", tags={"layerpilot.stage": "train"}) as train_run:
            train_run.log_params({"layers": ",".join(map(str, layers))})
            training = train(
                spec,
                layers,
                train_dir,
                resume=True,
                max_steps=max_steps,
                progress=progress,
                on_step=[records.step_logger(train_run, spec)],
            )
            records.log_training(train_run, training)
        run_ids["train"] = train_run.run_id or ""

        with parent.child("eval", tags={"layerpilot.stage": "eval"}) as eval_run:
            if chosen_mode == ProbeMode.exact.value and report.baseline_score is not None:
                before = report.baseline_score  # the probe's `base` unit is this very evaluation
            else:
                progress.note("evaluating the base model")
                before = evaluate(spec, progress=progress).score
            progress.note("evaluating base + layer patch")
            after = evaluate(spec, patch_dir=train_dir, progress=progress)
            summary = records.evaluation_summary(before, after.score, after.num_items)
            eval_run.log_metrics(summary)
            eval_run.log_dict(after.to_json(), "eval_after.json")
        run_ids["eval"] = eval_run.run_id or ""
        parent.log_metrics({**summary, **records.probe_summary(report), **records.training_summary(training)})

        result = AdaptResult(
            report=report,
            training=training,
            eval_before=before,
            eval_after=after.score,
            eval_items=after.num_items,
            workdir=workdir,
            seconds=0.0,
            run_ids=run_ids,
            tracking_uri=tracker.tracking_uri,
        )
        if register and spec.mlflow.registered_model:
            progress.note(f"registering the patch as a version of {spec.mlflow.registered_model}")
            result.registered = _register(tracker, parent, spec, result)
    result.seconds = time.perf_counter() - started
    result.experiment_id = parent.experiment_id
    result.where_to_look = where_to_look(tracker.tracking_uri, parent.experiment_id, parent.run_id)
    result.not_logged = tracker.summary()
    write_json(workdir / RESULT_JSON, result.to_json())
    return result


def _register(
    tracker: Tracker, parent: TrackedRun, spec: LayerAdaptationSpec, result: AdaptResult
) -> dict[str, Any] | None:
    """A registry failure must not lose the finished job: the patch and its runs stay, and we say so."""
    try:
        return tracker.register_patch(
            parent,
            result.workdir / TRAIN_DIR,
            name=str(spec.mlflow.registered_model),
            eval_before=result.eval_before,
            eval_after=result.eval_after,
            eval_items=result.eval_items,
            probe_report=result.report.to_json(),
            strategy=result.report.strategy,
            spec_hash=fingerprint(spec),
            max_new_tokens=spec.algorithm.max_completion_length,
            runs={k: v for k, v in result.run_ids.items() if v and k != "adapt"},
        )
    except LayerpilotError as error:
        what = f"version of {spec.mlflow.registered_model}"
        tracker.record(NotLogged("registration", 1, parent.run_id, what, str(error), True, {}))
        return None
