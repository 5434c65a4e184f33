"""The last stage of a job: evaluate base and base + patch, and ask for the patch to be registered.

`adapt` ends with it; `layerpilot register` runs it alone (the operator's last Job, in the run the
operator created). The evaluation is an `eval` child of the job's record; the registration is a
request in the job's record, carried out by the publish (`service.tracking.publish`) — once, with a
review of what was measured — so that a tracking server that is down delays it and nothing else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import InputError
from service.evaluation import EvalResult, evaluate, evaluation_summary
from service.fields import Fields
from service.files import check_output_dir, write_json
from service.patch import read_patch
from service.probe.recorded import probe_summary
from service.probe.report import RL_MODES, ProbeReport, read_report
from service.progress import SILENT, Progress
from service.record import Record, Registration, Tracking
from service.spec.fingerprint import fingerprint
from service.spec.models import LayerAdaptationSpec
from service.tracking import review
from service.tracking.publishing import TRACKED_FIELDS, Publishing, Tracked, job_record, tracking_for

EVAL_DIR = "eval"
EVAL_JSON = "eval_after.json"


@dataclass
class Evaluation:
    """The evaluation that ends a job (`adapt`, `register`): base and base + patch, same items."""

    eval_before: float
    eval_after: float
    eval_items: int


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
    registered model, ask for the patch to be registered from `record` with alias `candidate`."""
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
            Registration(
                name=name,
                patch_dir=str(patch_dir.absolute()),
                alias=review.CANDIDATE,
                eval_before=before,
                eval_after=after.score,
                eval_items=after.num_items,
                probe_layers=report.to_json()["layers"],
                strategy=report.strategy,
                spec_hash=fingerprint(spec),
                max_new_tokens=spec.algorithm.max_completion_length,
                score_name="success rate" if spec.environment is not None else "eval score",
                algorithm=spec.algorithm.describe(),
                probe=report.describe(),
            )
        )
    return Evaluation(before, after.score, after.num_items)


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
        return REGISTER_FIELDS.json(self)


def _tracked(key: str) -> tuple[str, Any]:
    meaning, read = TRACKED_FIELDS[key]
    return meaning, lambda r: read(r.tracked)


REGISTER_FIELDS: Fields[RegisterResult] = Fields(
    {
        "model": ("the spec's `model.uri`", lambda r: r.model),
        "layers": ("the layers the patch holds", lambda r: r.layers),
        "evalBefore": (
            "eval score of the base model (S_base of an exact probe when it has one)",
            lambda r: r.evaluation.eval_before,
        ),
        "evalAfter": ("eval score of base + layer patch", lambda r: r.evaluation.eval_after),
        "evalItems": ("evaluation items", lambda r: r.evaluation.eval_items),
        "probeDir": ("the probe directory (`--probe`)", lambda r: str(r.probe_dir)),
        "patchDir": ("the layer patch directory (`--patch`)", lambda r: str(r.patch_dir)),
        "registeredModel": _tracked("registeredModel"),
        "trackingUri": _tracked("trackingUri"),
        "experimentId": _tracked("experimentId"),
        "runIds": (
            "`register` (the run the version comes from: the operator's with `MLFLOW_RUN_ID`) and `eval` "
            "(its child)",
            lambda r: r.tracked.run_ids,
        ),
        "whereToLook": _tracked("whereToLook"),
        "notLogged": _tracked("notLogged"),
        "seconds": ("wall time of the command", lambda r: round(r.seconds, 1)),
    }
)
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
    """Evaluate and register, with the record in `out_dir`.

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
    tags = {review.STAGE: "register"}
    record = job_record(out_dir, f"register {spec.model.uri}", spec, tracking=tracking, tags=tags)
    with Publishing(record) as publishing:
        evaluation = evaluate_for_registration(spec, report, patch_dir, record, progress=progress)
        progress.note(f"registering the patch as a version of {name}")
    tracked = publishing.tracked({"register": ".", "eval": EVAL_DIR})
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
