"""`adapt`: probe → select → train only the selected layers → evaluate → register.

Every stage writes into one work directory, so a Job that dies half way is re-run with the same
command and continues: finished probe units are reused and training resumes from its newest
checkpoint. MLflow sees one parent run with children for the probe (and, in exact mode, one child
per probe unit), the training and the evaluation; the result becomes a registered model version
with alias `candidate` (what each run holds: `service.tracking.records`). Tracking never stops the
job: what could not be logged stays on disk and is named at the end.

The operator runs the stages as Jobs (units, `probe merge`, `train`) and ends with `run_register`:
the same `evaluate_and_register` as the end of `adapt`, from the run the operator created.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.errors import LayerpilotError, SpecError, first_line
from service.evaluation import evaluate
from service.files import write_json
from service.patch import read_patch
from service.probe.report import REPORT_JSON, RL_MODES, ProbeReport, read_report
from service.probe.run import run_probe
from service.progress import SILENT, Progress
from service.spec.fingerprint import fingerprint
from service.spec.models import LayerAdaptationSpec
from service.tracking import records, review
from service.tracking.ledger import NotLogged
from service.tracking.runs import TrackedRun, Tracker
from service.tracking.uris import where_to_look
from service.training.trainer import TrainResult, finished_run, train

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
    from_phase: str = "probe",
    progress: Progress = SILENT,
    tracker: Tracker | None = None,
) -> AdaptResult:
    """Run the whole job into `workdir`; returns what a reviewer needs to decide on the result.

    `from_phase` reuses what earlier phases left: `train` keeps the probe report and trains from step
    0 (the old training moves to `train.before-<time>`); `eval`/`register` keep the finished training.
    """
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    probe_dir, train_dir = workdir / PROBE_DIR, workdir / TRAIN_DIR
    chosen_mode = mode or spec.probe.mode
    _check_from_phase(from_phase, probe_dir, train_dir, spec, max_steps)
    tracker = tracker or Tracker.for_spec(spec.mlflow, workdir)
    with tracker.start_run(f"adapt {spec.model.uri}", tags={review.STAGE: "adapt"}) as parent:
        records.log_spec(parent, spec)
        parent.log_dict(spec.model_dump(mode="json", by_alias=True), "spec.json")
        run_ids = {"adapt": parent.run_id or ""}

        progress.note(f"probing the layers of {spec.model.uri} ({chosen_mode} mode)")
        with parent.child("probe", tags={review.STAGE: "probe"}) as probe_run:
            if from_phase == "probe":
                report = run_probe(
                    spec, probe_dir, mode=chosen_mode, parallel=parallel, progress=progress, write=False
                )
            else:
                report = read_report(probe_dir / REPORT_JSON, "--from-phase")
                progress.note(f"--from-phase {from_phase}: reusing the probe report in {probe_dir}")
            records.log_probe(probe_run, report, probe_dir, spec)
        run_ids["probe"] = probe_run.run_id or ""
        layers = report.selected
        parent.set_tags({review.SELECTED_LAYERS: ",".join(map(str, layers))})

        progress.note(f"selected layers {layers} ({report.strategy}); RL-training only them")
        with (
            parent.child("train", tags={review.STAGE: "train"}) as train_run,
            records.step_logger(train_run, spec) as log_steps,
        ):
            train_run.log_params({"layers": ",".join(map(str, layers))})
            if from_phase == "train" and train_dir.exists():
                aside = workdir / f"{TRAIN_DIR}.before-{time.strftime('%Y%m%dT%H%M%S')}"
                train_dir.rename(aside)
                progress.note(f"--from-phase train: the previous training is kept in {aside}")
            training = train(
                spec, layers, train_dir, resume=True, max_steps=max_steps, progress=progress,
                on_step=[log_steps],
            )  # fmt: skip
            records.log_training(train_run, training)
        run_ids["train"] = train_run.run_id or ""
        parent.log_metrics(records.training_summary(training))

        outcome = evaluate_and_register(
            spec,
            report,
            train_dir,
            tracker,
            parent,
            runs={"probe": run_ids["probe"], "train": run_ids["train"]},
            register=register,
            progress=progress,
        )
        run_ids.update(outcome.run_ids)
        result = AdaptResult(
            report=report,
            training=training,
            eval_before=outcome.eval_before,
            eval_after=outcome.eval_after,
            eval_items=outcome.eval_items,
            workdir=workdir,
            seconds=0.0,
            run_ids=run_ids,
            registered=outcome.registered,
            tracking_uri=tracker.tracking_uri,
        )
    result.seconds = time.perf_counter() - started
    result.experiment_id = parent.experiment_id
    result.where_to_look = where_to_look(tracker.tracking_uri, parent.experiment_id, parent.run_id)
    result.not_logged = tracker.summary()
    write_json(workdir / RESULT_JSON, result.to_json())
    return result


PHASES = ("probe", "train", "eval", "register")  # `adapt --from-phase`


def _check_from_phase(
    phase: str, probe_dir: Path, train_dir: Path, spec: LayerAdaptationSpec, max_steps: int | None
) -> None:
    if phase not in PHASES:
        raise SpecError("--from-phase", f"'{phase}' is not a phase", f"use one of {', '.join(PHASES)}")
    if phase != "probe" and not (probe_dir / REPORT_JSON).is_file():
        raise SpecError("--from-phase", f"{probe_dir} holds no probe report", "re-run from the probe phase")
    steps = max_steps or spec.training.max_steps
    if phase in ("eval", "register") and finished_run(train_dir, spec, steps) is None:
        what = f"{train_dir} holds no training finished at {steps} steps"
        raise SpecError("--from-phase", what, "re-run from the train phase, or without --from-phase")


@dataclass
class Registration:
    """The evaluation and registration that end a job (`adapt`, `register`)."""

    eval_before: float
    eval_after: float
    eval_items: int
    run_ids: dict[str, str] = field(default_factory=dict)  # the `eval` child
    registered: dict[str, Any] | None = None  # what `Registry.register_patch` returns
    error: str | None = None  # why a registration that was asked for did not happen


def evaluate_and_register(
    spec: LayerAdaptationSpec,
    report: ProbeReport,
    patch_dir: Path,
    tracker: Tracker,
    parent: TrackedRun,
    *,
    runs: Mapping[str, str] | None = None,
    register: bool = True,
    progress: Progress = SILENT,
) -> Registration:
    """Evaluate base and base + patch in an `eval` child of `parent`, then register the patch from
    `parent` as a version of `mlflow.registeredModel` with alias `candidate` (when the spec names one).

    `runs` are the stage runs the version's review links to (role -> run id). A registration that
    fails does not raise: the patch stays on disk, the failure is in the tracker's ledger and in
    `Registration.error`, and the caller decides how loudly to say so.
    """
    with parent.child("eval", tags={review.STAGE: "eval"}) as eval_run:
        if report.mode in RL_MODES and report.baseline_score is not None:
            before = report.baseline_score  # the probe's `base` unit is this very evaluation
        else:
            progress.note("evaluating the base model")
            before = evaluate(spec, progress=progress).score
        progress.note("evaluating base + layer patch")
        after = evaluate(spec, patch_dir=patch_dir, progress=progress)
        summary = records.evaluation_summary(before, after.score, after.num_items)
        eval_run.log_metrics(summary)
        eval_run.log_dict(after.to_json(), "eval_after.json")
    outcome = Registration(before, after.score, after.num_items, run_ids={"eval": eval_run.run_id or ""})
    parent.log_metrics({**summary, **records.probe_summary(report)})
    name = spec.mlflow.registered_model
    if register and name:
        progress.note(f"registering the patch as a version of {name}")
        refs = {role: rid for role, rid in {**(runs or {}), **outcome.run_ids}.items() if rid}
        try:
            outcome.registered = tracker.register_patch(
                parent,
                patch_dir,
                name=name,
                eval_before=before,
                eval_after=after.score,
                eval_items=after.num_items,
                probe_report=report.to_json(),
                strategy=report.strategy,
                spec_hash=fingerprint(spec),
                max_new_tokens=spec.algorithm.max_completion_length,
                runs=refs,
            )
        except LayerpilotError as error:
            outcome.error = first_line(error)
            tracker.record(
                NotLogged("registration", 1, parent.run_id, f"version of {name}", outcome.error, True, {})
            )
        else:
            version = str(outcome.registered["version"])
            parent.set_tags({review.REGISTERED_MODEL: name, review.MODEL_VERSION: version})
    return outcome


# -- the last stage alone: `layerpilot register` ---------------------------------------------------

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
    "runIds": "`register` (the run the version comes from: the operator's with `MLFLOW_RUN_ID`), "
    "`probe` and `train` (its children with those stages), `eval`",
    "whereToLook": "the run's URL, or the `mlflow ui` command for a local store",
    "notLogged": "what did not reach MLflow, in one line, or null",
    "seconds": "wall time of the command",
}
"""Every field of `layerpilot register --json` (the reference is generated from this)."""


@dataclass
class RegisterResult:
    model: str
    layers: list[int]
    probe_dir: Path
    patch_dir: Path
    outcome: Registration
    run_ids: dict[str, str]
    tracking_uri: str
    experiment_id: str | None
    where_to_look: str
    not_logged: str | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "layers": self.layers,
            "evalBefore": self.outcome.eval_before,
            "evalAfter": self.outcome.eval_after,
            "evalItems": self.outcome.eval_items,
            "probeDir": str(self.probe_dir),
            "patchDir": str(self.patch_dir),
            "registeredModel": self.outcome.registered,
            "trackingUri": self.tracking_uri,
            "experimentId": self.experiment_id,
            "runIds": self.run_ids,
            "whereToLook": self.where_to_look,
            "notLogged": self.not_logged,
            "seconds": round(self.seconds, 1),
        }


def registered_model_name(spec: LayerAdaptationSpec) -> str:
    """The name to register under; bad input when the spec names none."""
    if not spec.mlflow.registered_model:
        raise SpecError(
            "spec.mlflow.registeredModel",
            "not set, so there is nothing to register the patch as",
            "name the registered model, e.g. `registeredModel: my-model` under `mlflow`",
        )
    return spec.mlflow.registered_model


def run_register(
    spec: LayerAdaptationSpec,
    probe_dir: Path,
    patch_dir: Path,
    *,
    progress: Progress = SILENT,
    tracker: Tracker | None = None,
) -> RegisterResult:
    """The last stage of `adapt` on its own (its own Job in the operator): evaluate and register.

    The run is the operator's (`MLFLOW_RUN_ID`) when set; the probe and train runs are found among
    its children by their `layerpilot.stage` tag. Without MLflow's store set, it is ./mlflow.db.
    """
    started = time.perf_counter()
    registered_model_name(spec)
    report = read_report(probe_dir, "--probe")
    try:
        layers = read_patch(patch_dir).layers  # before any evaluation: is there a patch at all?
    except SpecError as error:
        raise SpecError("--patch", error.problem, error.fix) from None
    tracker = tracker or Tracker.for_spec(spec.mlflow, Path.cwd())
    with tracker.start_run(f"register {spec.model.uri}", tags={review.STAGE: "register"}) as parent:
        records.log_spec(parent, spec)
        parent.log_dict(spec.model_dump(mode="json", by_alias=True), "spec.json")
        stages = records.child_runs(parent, review.STAGE)
        siblings: dict[str, str] = {role: stages[role] for role in ("probe", "train") if role in stages}
        outcome = evaluate_and_register(
            spec, report, patch_dir, tracker, parent, runs=siblings, progress=progress
        )
    return RegisterResult(
        model=spec.model.uri,
        layers=layers,
        probe_dir=probe_dir,
        patch_dir=patch_dir,
        outcome=outcome,
        run_ids={"register": parent.run_id or "", **siblings, **outcome.run_ids},
        tracking_uri=tracker.tracking_uri,
        experiment_id=parent.experiment_id,
        where_to_look=where_to_look(tracker.tracking_uri, parent.experiment_id, parent.run_id),
        not_logged=tracker.summary(),
        seconds=time.perf_counter() - started,
    )
