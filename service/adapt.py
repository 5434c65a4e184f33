"""`adapt`: probe → select → train only the selected layers → evaluate → register.

Every stage writes into one work directory, so a Job that dies half way is re-run with the same
command and continues: finished probe units are reused and training resumes from its newest
checkpoint. The work directory is also the job's record (`service.record`): one top record with
`probe/`, `train/` and `eval/` below it (and, in exact mode, one record per probe unit), published
onto MLflow while the job runs and once more at its end (`service.tracking.publishing`). The
result becomes a registered model version with alias `candidate`, registered by that publish. A
tracking server that is down costs nothing but a delay: `layerpilot mlflow sync WORKDIR` publishes
what is left, the registration included.

The operator runs the stages as Jobs (units, `probe merge`, `train`) and ends with `run_register`:
the same `evaluate_for_registration` as the end of `adapt`, in the run the operator created.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.errors import InputError
from service.evaluation import EvalResult, evaluate, evaluation_summary
from service.files import check_output_dir, write_json
from service.patch import read_patch
from service.probe.recorded import probe_summary, record_probe
from service.probe.report import REPORT_JSON, RL_MODES, ProbeReport, read_report
from service.probe.run import run_probe
from service.progress import SILENT, Progress
from service.record import Record, Tracking
from service.spec.fingerprint import fingerprint
from service.spec.models import LayerAdaptationSpec
from service.tracking import review
from service.tracking.publish import PublishResult
from service.tracking.publishing import Publishing, job_record, tracking_for
from service.tracking.uris import where_to_look
from service.training.metrics import training_summary
from service.training.trainer import TrainResult, finished_run, record_patch, train

PROBE_DIR = "probe"
TRAIN_DIR = "train"
EVAL_DIR = "eval"
EVAL_JSON = "eval_after.json"
RESULT_JSON = "adapt_result.json"
PHASES = ("probe", "train", "eval", "register")  # `adapt --from-phase`


@dataclass
class Evaluation:
    """The evaluation that ends a job (`adapt`, `register`): base and base + patch, same items."""

    eval_before: float
    eval_after: float
    eval_items: int


@dataclass
class Tracked:
    """Where a job's record went in MLflow, as its last publish left it."""

    tracking_uri: str | None = None
    experiment_id: str | None = None
    run_ids: dict[str, str] = field(default_factory=dict)  # role -> run id
    registered: dict[str, Any] | None = None  # the version, when one was registered
    where_to_look: str | None = None
    not_logged: str | None = None  # what MLflow does not hold yet, in one line

    @classmethod
    def of(cls, publishing: Publishing, roles: dict[str, str]) -> Tracked:
        """From the last publish; `roles` names the records (their directories) of the result."""
        outcome: PublishResult | None = publishing.outcome
        if outcome is None:
            return cls()
        run_ids = {role: outcome.runs[path] for role, path in roles.items() if path in outcome.runs}
        return cls(
            tracking_uri=outcome.tracking_uri,
            experiment_id=outcome.experiment_id,
            run_ids=run_ids,
            registered=outcome.registered[-1] if outcome.registered else None,
            where_to_look=where_to_look(outcome.tracking_uri, outcome.experiment_id, outcome.runs.get(".")),
            not_logged=publishing.summary(),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "trackingUri": self.tracking_uri,
            "experimentId": self.experiment_id,
            "runIds": self.run_ids,
            "registeredModel": self.registered,
            "whereToLook": self.where_to_look,
            "notLogged": self.not_logged,
        }


@dataclass
class AdaptResult:
    report: ProbeReport
    training: TrainResult
    evaluation: Evaluation
    workdir: Path
    seconds: float
    tracked: Tracked

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
            "evalBefore": self.evaluation.eval_before,
            "evalAfter": self.evaluation.eval_after,
            "evalItems": self.evaluation.eval_items,
            "trainedSteps": self.training.global_step,
            "layerDeltas": self.training.deltas.relative_json(),
            "probeDir": str(self.workdir / PROBE_DIR),
            "patchDir": str(self.workdir / TRAIN_DIR),
            "seconds": round(self.seconds, 1),
            "mlflow": self.tracked.to_json(),
        }


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
    "mlflow": "as the job's last publish left it: `trackingUri`, `experimentId`, `runIds` (adapt, probe, "
    "train, eval), `registeredModel` (name, version, alias, url, …), `whereToLook`, `notLogged` (what "
    "MLflow does not hold yet, in one line)",
}
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
    workdir.mkdir(parents=True, exist_ok=True)
    tracking = tracking or tracking_for(spec.mlflow, workdir)
    record = job_record(
        workdir, f"adapt {spec.model.uri}", spec, tracking=tracking, tags={review.STAGE: "adapt"}
    )
    with Publishing(record) as publishing:
        progress.note(f"probing the layers of {spec.model.uri} ({chosen_mode} mode)")
        with record.child(PROBE_DIR, "probe", tags={review.STAGE: "probe"}) as probe_record:
            if from_phase == "probe":
                report = run_probe(
                    spec,
                    probe_dir,
                    mode=chosen_mode,
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
            training = train(
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
        tracked=Tracked.of(publishing, roles),
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


def evaluate_for_registration(
    spec: LayerAdaptationSpec,
    report: ProbeReport,
    patch_dir: Path,
    record: Record,
    *,
    register: bool = True,
    progress: Progress = SILENT,
) -> Evaluation:
    """Evaluate base and base + patch in an `eval` child of `record`; then, when the spec names a
    registered model, ask for the patch to be registered from `record` with alias `candidate` (the
    publish does it, once, with a review of what was measured)."""
    with record.child(EVAL_DIR, "eval", tags={review.STAGE: "eval"}) as eval_record:
        if report.mode in RL_MODES and report.baseline_score is not None:
            before = report.baseline_score  # the probe's `base` unit is this very evaluation
        else:
            progress.note("evaluating the base model")
            before = evaluate(spec, progress=progress).score
        progress.note("evaluating base + layer patch")
        after: EvalResult = evaluate(spec, patch_dir=patch_dir, progress=progress)
        summary = evaluation_summary(before, after.score, after.num_items)
        eval_record.log_metrics(summary)
        write_json(eval_record.directory / EVAL_JSON, after.to_json())
        eval_record.add_artifact(eval_record.directory / EVAL_JSON)
    record.log_metrics({**summary, **probe_summary(report)})
    name = spec.mlflow.registered_model
    if register and name:
        record.request_registration(
            {
                "name": name,
                "patchDir": str(patch_dir.absolute()),
                "alias": review.CANDIDATE,
                "review": {
                    "evalBefore": before,
                    "evalAfter": after.score,
                    "evalItems": after.num_items,
                    "probeLayers": report.to_json()["layers"],
                    "strategy": report.strategy,
                    "specHash": fingerprint(spec),
                    "maxNewTokens": spec.algorithm.max_completion_length,
                },
            }
        )
    return Evaluation(before, after.score, after.num_items)


# -- the last stage alone: `layerpilot register` ---------------------------------------------------


@dataclass
class RegisterResult:
    model: str
    layers: list[int]
    probe_dir: Path
    patch_dir: Path
    evaluation: Evaluation
    tracked: Tracked
    error: str | None  # why the version was not registered, or None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        tracked = self.tracked.to_json()
        return {
            "model": self.model,
            "layers": self.layers,
            "evalBefore": self.evaluation.eval_before,
            "evalAfter": self.evaluation.eval_after,
            "evalItems": self.evaluation.eval_items,
            "probeDir": str(self.probe_dir),
            "patchDir": str(self.patch_dir),
            "registeredModel": tracked.pop("registeredModel"),
            **tracked,
            "seconds": round(self.seconds, 1),
        }


REGISTER_FIELDS: dict[str, str] = {
    "model": "the spec's `model.uri`",
    "layers": "the layers the patch holds",
    "evalBefore": "eval score of the base model (S_base of an exact probe when it has one)",
    "evalAfter": "eval score of base + layer patch",
    "evalItems": "evaluation items",
    "probeDir": "the probe directory (`--probe`)",
    "patchDir": "the layer patch directory (`--patch`)",
    "registeredModel": "the new version (name, version, alias, modelUri, loggedModelUri, url, tags); "
    "null when it was not registered",
    "trackingUri": "where the runs and the version are",
    "experimentId": "the experiment of the runs",
    "runIds": "`register` (the run the version comes from: the operator's with `MLFLOW_RUN_ID`) and "
    "`eval` (its child)",
    "whereToLook": "the run's URL, or the `mlflow ui` command for a local store",
    "notLogged": "what MLflow does not hold yet, in one line, or null",
    "seconds": "wall time of the command",
}
"""Every field of `layerpilot register --json` (the reference is generated from this)."""


def registered_model_name(spec: LayerAdaptationSpec) -> str:
    """The name to register under; bad input when the spec names none."""
    if not spec.mlflow.registered_model:
        raise InputError(
            "spec.mlflow.registeredModel",
            "not set, so there is nothing to register the patch as",
            "name the registered model, e.g. `registeredModel: my-model` under `mlflow`",
        )
    return spec.mlflow.registered_model


def run_register(
    spec: LayerAdaptationSpec,
    probe_dir: Path,
    patch_dir: Path,
    out_dir: Path,
    *,
    progress: Progress = SILENT,
    tracking: Tracking | None = None,
) -> RegisterResult:
    """The last stage of `adapt` on its own (its own Job in the operator): evaluate and register,
    with the record in `out_dir`.

    The run is the operator's (`MLFLOW_RUN_ID`) when set; the version's review links the probe and
    train runs it finds under that run. Without a tracking URI, the store is ./mlflow.db.
    """
    started = time.perf_counter()
    name = registered_model_name(spec)
    report = read_report(probe_dir, "--probe")
    try:
        layers = read_patch(patch_dir).layers  # before any evaluation: is there a patch at all?
    except InputError as error:
        raise InputError("--patch", error.problem, error.fix) from None
    check_output_dir(out_dir, "--out")
    tracking = tracking or tracking_for(spec.mlflow, Path.cwd())
    record = job_record(
        out_dir, f"register {spec.model.uri}", spec, tracking=tracking, tags={review.STAGE: "register"}
    )
    with Publishing(record) as publishing:
        evaluation = evaluate_for_registration(spec, report, patch_dir, record, progress=progress)
        progress.note(f"registering the patch as a version of {name}")
    tracked = Tracked.of(publishing, {"register": ".", "eval": EVAL_DIR})
    return RegisterResult(
        model=spec.model.uri,
        layers=layers,
        probe_dir=probe_dir,
        patch_dir=patch_dir,
        evaluation=evaluation,
        tracked=tracked,
        error=None if tracked.registered else (tracked.not_logged or "MLflow did not register it"),
        seconds=time.perf_counter() - started,
    )
