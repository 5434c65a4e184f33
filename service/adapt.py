"""`adapt`: probe → select → train only the selected layers → evaluate → register.

Every stage writes into one work directory, so a Job that dies half way is re-run with the same
command and continues: finished probe units are reused and training resumes from its newest
checkpoint. The work directory is also the job's record (`service.record`): one top record with
`probe/`, `train/` and `eval/` below it (and, in exact mode, one record per probe unit), published
onto MLflow while the job runs and once more at its end (`service.tracking.publishing`). The
result becomes a registered model version with alias `candidate`, registered by that publish. A
tracking server that is down costs nothing but a delay: `layerpilot mlflow sync WORKDIR` publishes
what is left, the registration included.

The operator runs the stages as Jobs (units, `probe merge`, `train`) and ends with the same last
stage on its own (`service.register`), in the run the operator created.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.calibration import train_layers
from service.errors import InputError
from service.fields import Fields
from service.files import check_output_dir, write_json
from service.probe.recorded import record_probe
from service.probe.report import REPORT_JSON, ProbeReport, read_report
from service.probe.reuse import ADAPT_PROBE_DIR, check_no_mode, reused_profile, take_profile
from service.probe.run import check_probe_dir, run_probe
from service.progress import SILENT, Progress
from service.record import Tracking
from service.register import EVAL_DIR, Evaluation, evaluate_for_registration
from service.spec.models import LayerAdaptationSpec
from service.tracking import review
from service.tracking.publishing import TRACKED_FIELDS, Publishing, Tracked, job_record, tracking_for
from service.training.metrics import training_summary
from service.training.trainer import TrainResult, finished_run, record_patch

PROBE_DIR = ADAPT_PROBE_DIR  # `probe.reuse` finds an adapt work directory's probe there too
TRAIN_DIR = "train"
RESULT_JSON = "adapt_result.json"
PHASES = ("probe", "train", "eval", "register")  # `adapt --from-phase`


@dataclass
class AdaptResult:
    report: ProbeReport
    training: TrainResult
    evaluation: Evaluation
    workdir: Path
    seconds: float
    tracked: Tracked
    score_name: str = "eval score"

    @property
    def layers(self) -> list[int]:
        return self.training.layers

    def to_json(self) -> dict[str, Any]:
        return RESULT_FIELDS.json(self)


RESULT_FIELDS: Fields[AdaptResult] = Fields(
    {
        "model": ("the spec's `model.uri`", lambda r: r.report.model),
        "selected": ("the layers trained", lambda r: r.layers),
        "strategy": ("the selection rule", lambda r: r.report.strategy),
        "probeMode": ("the probe's mode", lambda r: r.report.mode),
        "probeTask": ("what the probe measured on (its report's `task`)", lambda r: r.report.task),
        "probeReused": (
            "with `probe.reuse`: where the reused report came from (its `reusedFrom`), else null",
            lambda r: r.report.reused_from,
        ),
        "layers": (
            "the probe report's per-layer entries",
            lambda r: [layer.to_json() for layer in sorted(r.report.layers, key=lambda x: x.index)],
        ),
        "baselineScore": ("S_base of an exact probe, else null", lambda r: r.report.baseline_score),
        "fullScore": ("S_full of an exact probe, else null", lambda r: r.report.full_score),
        "scoreName": (
            "what the scores measure: `eval score` (mean weighted reward) or, for an agent, `success rate`",
            lambda r: r.score_name,
        ),
        "evalBefore": ("eval score of the base model", lambda r: r.evaluation.eval_before),
        "evalAfter": ("eval score of base + layer patch", lambda r: r.evaluation.eval_after),
        "evalItems": ("evaluation items", lambda r: r.evaluation.eval_items),
        "trainedSteps": ("optimizer steps of the training", lambda r: r.training.global_step),
        "learningRate": (
            "the rate trained at, as `layerpilot train --json` gives it (with `auto`: the calibration)",
            lambda r: r.training.learning_rate,
        ),
        "layerDeltas": (
            "relative weight change per trained layer",
            lambda r: r.training.deltas.relative_json(),
        ),
        "probeDir": ("the probe directory", lambda r: str(r.workdir / PROBE_DIR)),
        "patchDir": ("the layer patch directory", lambda r: str(r.workdir / TRAIN_DIR)),
        "seconds": ("wall time of the whole job", lambda r: round(r.seconds, 1)),
        "mlflow": (
            "as the job's last publish left it: "
            + ", ".join(f"`{key}` ({meaning})" for key, meaning in TRACKED_FIELDS.help.items())
            + "; `runIds` has `adapt`, `probe`, `train` and `eval`",
            lambda r: r.tracked.to_json(),
        ),
    }
)
"""Every field of `adapt_result.json` (the reference is generated from this)."""


def adapt(
    spec: LayerAdaptationSpec,
    workdir: Path,
    *,
    mode: str | None = None,
    parallel: int | None = None,
    max_steps: int | None = None,
    register: bool = True,
    from_phase: str = "probe",
    progress: Progress = SILENT,
    tracking: Tracking | None = None,
) -> AdaptResult:
    """Run the whole job into `workdir`; returns what a reviewer needs to decide on the result.

    `from_phase` reuses what earlier phases left: `train` keeps the probe report and trains from step
    0 (the old training moves to `train.before-<time>`); `eval`/`register` keep the finished training.
    `tracking` is where the record is published (default: the spec's, else the environment's, else a
    local store in `workdir`).
    """
    started = time.perf_counter()
    check_output_dir(workdir, "--workdir")
    probe_dir, train_dir = workdir / PROBE_DIR, workdir / TRAIN_DIR
    chosen_mode = mode or spec.probe.mode
    _check_from_phase(from_phase, probe_dir, train_dir, spec, max_steps)
    check_no_mode(spec, mode)
    # A reused profile is looked up and checked against the base before the job records anything.
    profile = None
    if spec.probe.reuse is not None and from_phase == "probe":
        check_probe_dir(probe_dir, spec)
        profile = reused_profile(spec, probe_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    tracking = tracking or tracking_for(spec.mlflow, workdir)
    record = job_record(
        workdir, f"adapt {spec.model.uri}", spec, tracking=tracking, tags={review.STAGE: "adapt"}
    )
    with Publishing(record) as publishing:
        if spec.probe.reuse is None:
            progress.note(f"probing the layers of {spec.model.uri} ({chosen_mode} mode)")
        with record.child(PROBE_DIR, "probe", tags={review.STAGE: "probe"}) as probe_record:
            if profile is not None:
                report = take_profile(profile, probe_dir, record=probe_record, progress=progress)
            elif from_phase == "probe":
                report = run_probe(
                    spec,
                    probe_dir,
                    mode=mode,
                    parallel=parallel,
                    progress=progress,
                    record=probe_record,
                )
            else:
                report = read_report(probe_dir / REPORT_JSON, "--from-phase")
                progress.note(f"--from-phase {from_phase}: reusing the probe report in {probe_dir}")
                record_probe(probe_record, report, probe_dir)
        layers = report.selected
        record.set_tags({review.SELECTED_LAYERS: ",".join(map(str, layers))})

        progress.note(f"selected layers {layers} ({report.strategy}); RL-training only them")
        if from_phase == "train" and train_dir.exists():
            aside = workdir / f"{TRAIN_DIR}.before-{time.strftime('%Y%m%dT%H%M%S')}"
            train_dir.rename(aside)
            progress.note(f"--from-phase train: the previous training is kept in {aside}")
        train_record = record.child(
            TRAIN_DIR, "train", params={"layers": ",".join(map(str, layers))}, tags={review.STAGE: "train"}
        )
        with train_record:
            training = train_layers(
                spec,
                layers,
                train_dir,
                resume=True,
                max_steps=max_steps,
                progress=progress,
                record=train_record,
            )
            record_patch(train_record, train_dir)
        record.log_metrics(
            training_summary(
                training.seconds,
                training.global_step,
                training.trainable_parameters,
                training.total_parameters,
            )
        )
        evaluation = evaluate_for_registration(
            spec, report, train_dir, record, register=register, progress=progress
        )
        if register and spec.mlflow.registered_model:
            progress.note(f"registering the patch as a version of {spec.mlflow.registered_model}")
    roles = {"adapt": ".", "probe": PROBE_DIR, "train": TRAIN_DIR, "eval": EVAL_DIR}
    result = AdaptResult(
        report=report,
        training=training,
        evaluation=evaluation,
        workdir=workdir,
        seconds=time.perf_counter() - started,
        tracked=publishing.tracked(roles),
        score_name="success rate" if spec.environment is not None else "eval score",
    )
    write_json(workdir / RESULT_JSON, result.to_json())
    return result


def _check_from_phase(
    phase: str, probe_dir: Path, train_dir: Path, spec: LayerAdaptationSpec, max_steps: int | None
) -> None:
    if phase not in PHASES:
        raise InputError("--from-phase", f"'{phase}' is not a phase", f"use one of {', '.join(PHASES)}")
    if phase != "probe" and not (probe_dir / REPORT_JSON).is_file():
        raise InputError("--from-phase", f"{probe_dir} holds no probe report", "re-run from the probe phase")
    steps = max_steps or spec.training.max_steps
    if phase in ("eval", "register") and finished_run(train_dir, spec, steps) is None:
        what = f"{train_dir} holds no training finished at {steps} steps"
        raise InputError("--from-phase", what, "re-run from the train phase, or without --from-phase")
