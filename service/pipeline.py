"""`adapt`: probe → select → train only the selected layers → evaluate → register.

Every stage writes into one work directory, so a Job that dies half way is re-run with the same
command and continues: finished probe units are reused and training resumes from its newest
checkpoint. MLflow sees one parent run with children for the probe (and, in exact mode, one child
per probe unit), the training and the evaluation; the result becomes a registered model version
with alias `candidate`. Tracking never stops the job: what could not be logged stays on disk and
is named at the end (see `service.tracking`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.delta import DELTAS, PATCH_META, PATCH_TENSORS
from service.evaluation import evaluate
from service.probe import PARTIALS, UnitHook, run_probe
from service.report import REPORT_JSON, REPORT_PNG, ProbeReport
from service.spec import LayerAdaptationSpec, ProbeMode
from service.training import StepHook, TrainResult, train

if TYPE_CHECKING:
    from service.tracking import TrackedRun, Tracker

PROBE_DIR = "probe"
TRAIN_DIR = "train"
RESULT_JSON = "adapt_result.json"
PATCH_FILES = (PATCH_TENSORS, PATCH_META, DELTAS)


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
            "layerDeltas": {k: v["relative"] for k, v in self.training.deltas["layers"].items()},
            "probeDir": str(self.workdir / PROBE_DIR),
            "patchDir": str(self.workdir / TRAIN_DIR),
            "seconds": round(self.seconds, 1),
            "mlflow": {
                "trackingUri": self.tracking_uri,
                "runIds": self.run_ids,
                "registeredModel": self.registered,
                "whereToLook": self.where_to_look,
                "notLogged": self.not_logged,
            },
        }


def open_tracker(spec: LayerAdaptationSpec, workdir: Path) -> Tracker:
    """The spec's tracking server, `MLFLOW_TRACKING_URI`, or a local store in `workdir`."""
    from service.tracking import Tracker

    return Tracker.for_spec(spec.mlflow, workdir)


def adapt(
    spec: LayerAdaptationSpec,
    workdir: Path,
    *,
    mode: str | None = None,
    parallel: int | None = None,
    max_steps: int | None = None,
    register: bool = True,
    on_unit: UnitHook | None = None,
    on_step: StepHook | None = None,
    log: Callable[[str], Any] = print,
    tracker: Tracker | None = None,
) -> AdaptResult:
    """Run the whole job into `workdir`; returns what a reviewer needs to decide on the result."""
    from service.tracking import where_to_look

    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    probe_dir, train_dir = workdir / PROBE_DIR, workdir / TRAIN_DIR
    chosen_mode = mode or spec.probe.mode
    tracker = tracker or open_tracker(spec, workdir)
    with tracker.start_run(f"adapt {spec.model.uri}", tags={"layerpilot.stage": "adapt"}) as parent:
        parent.log_spec(spec)
        parent.log_dict(spec.model_dump(mode="json", by_alias=True), "spec.json")
        run_ids = {"adapt": parent.run_id or ""}

        log(f"probing the layers of {spec.model.uri} ({chosen_mode} mode)")
        with parent.child("probe", tags={"layerpilot.stage": "probe"}) as probe_run:
            report = run_probe(
                spec, probe_dir, mode=chosen_mode, parallel=parallel, on_unit=on_unit, write=False
            )
            log_probe(probe_run, report, probe_dir)
        run_ids["probe"] = probe_run.run_id or ""
        layers = report.selected
        parent.set_tags({"layerpilot.selected_layers": ",".join(map(str, layers))})

        log(f"selected layers {layers} ({report.strategy}); RL-training them")
        with parent.child("train", tags={"layerpilot.stage": "train"}) as train_run:
            train_run.log_params({"layers": ",".join(map(str, layers))})
            training = train(
                spec,
                layers,
                train_dir,
                resume=True,
                max_steps=max_steps,
                on_step=on_step,
                callbacks=[train_run.trainer_callback()],
            )
            log_training(train_run, training)
        run_ids["train"] = train_run.run_id or ""

        log("evaluating base + layer patch")
        with parent.child("eval", tags={"layerpilot.stage": "eval"}) as eval_run:
            after = evaluate(spec, patch_dir=train_dir)
            if chosen_mode == ProbeMode.exact.value and report.baseline_score is not None:
                before = report.baseline_score  # the probe's `base` unit is this very evaluation
            else:
                log("evaluating the base model")
                before = evaluate(spec).score
            scores = {"eval/before": before, "eval/after": after.score, "eval/gain": after.score - before}
            eval_run.log_metrics({**scores, "eval/items": after.num_items})
            eval_run.log_dict(after.to_json(), "eval_after.json")
        run_ids["eval"] = eval_run.run_id or ""
        parent.log_metrics(scores)

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
            log(f"registering the patch as a version of {spec.mlflow.registered_model}")
            result.registered = _register(tracker, parent, spec, result)
    result.seconds = time.perf_counter() - started
    result.where_to_look = where_to_look(tracker.tracking_uri, parent.experiment_id, parent.run_id)
    result.not_logged = tracker.summary()
    (workdir / RESULT_JSON).write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result


def _register(
    tracker: Tracker, parent: TrackedRun, spec: LayerAdaptationSpec, result: AdaptResult
) -> dict[str, Any] | None:
    """A registry failure must not lose the finished job: the patch and its runs stay, and we say so."""
    from service.errors import LayerpilotError

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
            spec_hash=spec.fingerprint(),
            max_new_tokens=spec.algorithm.max_completion_length,
            runs={k: v for k, v in result.run_ids.items() if v and k != "adapt"},
        )
    except LayerpilotError as error:
        from service.tracking_config import NotLogged

        what = f"version of {spec.mlflow.registered_model}"
        tracker.record(NotLogged("registration", 1, parent.run_id, what, str(error), True, {}))
        return None


def log_probe(run: TrackedRun, report: ProbeReport, probe_dir: Path) -> None:
    """Per-layer metrics (step = layer index), the report and chart, and one child run per exact unit."""
    if report.mode == ProbeMode.exact.value:
        for path in sorted((probe_dir / PARTIALS).glob("*.json")):
            unit = json.loads(path.read_text())
            with run.child(f"probe {path.stem}", tags={"layerpilot.probe_unit": str(unit["unit"])}) as child:
                child.log_params({"unit": unit["unit"], "steps": unit["steps"]})
                child.log_metrics({"probe/score": unit["score"], "probe/seconds": unit["seconds"]})
                child.log_metrics({f"train/{k}": v for k, v in (unit.get("trainMetrics") or {}).items()})
                child.log_layer_metrics(
                    {int(i): {"delta/relative": v} for i, v in (unit.get("deltas") or {}).items()}
                )
        report.extra["unitRunsLogged"] = True
    report.mlflow_run_id = run.run_id
    report.write(probe_dir)
    run.log_probe_report(report.to_json())
    totals = {"probe/baseline": report.baseline_score, "probe/full": report.full_score}
    run.log_metrics({k: v for k, v in totals.items() if v is not None})
    selected = ",".join(map(str, report.selected))
    run.set_tags({"layerpilot.probe_mode": report.mode, "layerpilot.selected_layers": selected})
    run.log_artifact(probe_dir / REPORT_JSON)
    run.log_artifact(probe_dir / REPORT_PNG)


def log_training(run: TrackedRun, training: TrainResult) -> None:
    """Weight deltas per layer (step = layer index) and the patch files as artifacts."""
    run.log_deltas(training.deltas)
    run.log_metrics({"train/seconds": training.seconds, "train/global_step": training.global_step})
    for name in PATCH_FILES:
        if (training.out_dir / name).is_file():
            run.log_artifact(training.out_dir / name, "layer_patch")
