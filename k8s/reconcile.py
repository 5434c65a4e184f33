"""One reconcile of one `LayerAdaptation`: read where it is, take the next step, write status.

Level-triggered: every call starts from the resource's status and the Jobs that exist, so it is
safe to call again at any time (a Job event, the resume after an operator restart, a periodic
resync). Stages run in order, each as one Job (see `k8s.builders`):

    Pending → Probing (plan, probe, merge) → Training (train) → Registering (register) → Succeeded
                                                                                      ↘ Failed

A spec that reuses a profile (`probe.reuse`) skips Probing: its train Job takes the profile and
tags its run with it, and `Probed` turns True (reason `ProfileReused`) when training ends.

A stage's Job is created only when the previous stage's Job has completed; a finished stage is
recorded in `status.completedStages` and never re-run, even if its Job is later deleted. The
operator opens the MLflow parent run and one run per stage; the Jobs adopt them (`MLFLOW_RUN_ID`)
and the operator ends them with the Job. What the probe found and which version was registered
are read back from those runs' tags.

Runs synchronously (the kubernetes client and MLflow are blocking); the operator calls it in a
worker thread, one call per resource at a time.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

from k8s.builders import Build, config_map, stage_object, workspace_claim
from k8s.cluster import Cluster
from k8s.naming import DEFAULT_IMAGE, Resource
from k8s.status import (
    CONDITION_OF_STAGE,
    FAILED,
    PENDING,
    PHASE_OF_STAGE,
    READY,
    SUCCEEDED,
    TERMINAL,
    job_state,
    layer_list,
    now,
    one_line,
    set_condition,
)
from service.errors import InputError
from service.spec.loading import parse_spec
from service.spec.models import KIND, LayerAdaptationSpec
from service.tracking import review
from service.tracking.stages import FAILED as RUN_FAILED
from service.tracking.stages import FINISHED, KILLED, StageRuns

log = logging.getLogger(__name__)


class InvalidSpec(InputError):
    """The resource's spec does not validate: the resource is Failed and will not be retried."""


@dataclass(frozen=True)
class OperatorConfig:
    """The operator's defaults, from its Deployment's environment."""

    default_image: str = DEFAULT_IMAGE
    tracking_uri: str | None = None  # MLFLOW_TRACKING_URI of the operator: the default for resources


def effective_spec(body: dict[str, Any], config: OperatorConfig) -> LayerAdaptationSpec:
    """The validated spec with what the operator fills in: the tracking server, the model name."""
    try:
        spec = parse_spec({"spec": body.get("spec") or {}})
    except InputError as error:
        raise InvalidSpec(error.field, error.problem, error.fix) from None
    if not spec.mlflow.tracking_uri:
        if not config.tracking_uri:
            raise InvalidSpec(
                "spec.mlflow.trackingUri",
                "is not set and the operator has no MLFLOW_TRACKING_URI",
                "set it to your MLflow server (e.g. http://mlflow.mlflow:5000); Jobs on several nodes "
                "cannot share a local store",
            )
        spec.mlflow.tracking_uri = config.tracking_uri
    if (
        spec.mlflow.tracking_uri.startswith(("sqlite:", "file:", "/"))
        or "://" not in spec.mlflow.tracking_uri
    ):
        raise InvalidSpec(
            "spec.mlflow.trackingUri",
            f"'{spec.mlflow.tracking_uri}' is a local store, which pods on a cluster do not share",
            "point it at an MLflow server (http://…)",
        )
    if not spec.mlflow.registered_model:
        spec.mlflow.registered_model = str(body["metadata"]["name"])
    return spec


@dataclass
class StatusWriter:
    """Collects one reconcile's status changes and events; writes them in one patch."""

    cluster: Cluster
    body: dict[str, Any]
    patch: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status: dict[str, Any] = dict(self.body.get("status") or {})
        self.conditions: list[dict[str, Any]] = list(self.status.get("conditions") or [])
        self.generation = self.body.get("metadata", {}).get("generation")

    def get(self, key: str, default: Any = None) -> Any:
        return self.patch.get(key, self.status.get(key, default))

    def set(self, **values: Any) -> None:
        for key, value in values.items():
            if self.get(key) != value:
                self.patch[key] = copy.deepcopy(value)  # never share a dict the caller goes on changing

    def condition(self, kind: str, status: str, reason: str, message: str) -> bool:
        self.conditions, changed = set_condition(
            self.conditions, kind, status, reason, one_line(message), self.generation
        )
        if changed:
            self.patch["conditions"] = self.conditions
        return changed

    def phase(self, phase: str, reason: str, message: str, *, warning: bool = False) -> None:
        message = one_line(message)
        if self.get("phase") != phase or self.get("message") != message:
            self.events.append(("Warning" if warning else "Normal", reason, message))
        self.set(phase=phase, message=message)
        if self.generation is not None:
            self.set(observedGeneration=self.generation)

    def flush(self) -> None:
        meta = self.body["metadata"]
        if self.patch:
            self.cluster.patch_status(meta.get("namespace") or "default", meta["name"], self.patch)
            self.status.update(self.patch)
            self.patch = {}
        for kind, reason, message in self.events:
            level = logging.WARNING if kind == "Warning" else logging.INFO
            where = f"{meta.get('namespace') or 'default'}/{meta['name']}"
            log.log(level, "%s: %s (%s)", where, message, reason)
            try:
                self.cluster.event(self.body, kind, reason, message)
            except Exception as error:  # an event is a courtesy; the status already says it
                log.warning("could not post event %s on %s: %s", reason, meta["name"], error)
        self.events = []


class Reconciler:
    def __init__(self, cluster: Cluster, config: OperatorConfig | None = None) -> None:
        self.cluster = cluster
        self.config = config or OperatorConfig()

    def reconcile(self, namespace: str, name: str) -> str | None:
        """Take the next step for one resource; returns its phase (None when it is gone)."""
        body = self.cluster.get(KIND, namespace, name)
        if body is None:
            return None
        writer = StatusWriter(self.cluster, body)
        if writer.get("phase") in TERMINAL:
            return str(writer.get("phase"))
        resource = Resource.of(body)
        try:
            spec = effective_spec(body, self.config)
        except InvalidSpec as error:
            self._fail(writer, "InvalidSpec", str(error))
            writer.flush()
            raise
        build = Build(resource, spec, self.config.default_image)
        if not writer.get("phase"):
            writer.phase(PENDING, "Accepted", f"accepted; stages: {', '.join(build.stages)}")
            writer.condition(READY, "False", "Pending", "starting")
            writer.set(startedAt=now(), workdir=build.workdir, registeredModel=spec.mlflow.registered_model)
        runs = StageRuns(str(spec.mlflow.tracking_uri), spec.mlflow.experiment)
        run_ids = self._run_ids(writer, runs, resource, spec)
        writer.flush()  # the parent run's id is stored before any Job can refer to it

        self.cluster.create(config_map(build))
        claim = workspace_claim(build)
        if claim is not None:
            self.cluster.create(claim)

        completed: list[str] = list(writer.get("completedStages") or [])
        for stage in build.stages:
            if stage in completed:
                continue
            kind = "TrainJob" if stage == "train" and build.distributed else "Job"
            child = resource.child(stage)
            existing = self.cluster.get(kind, namespace, child)
            if existing is None:
                run_id = self._stage_run(writer, runs, build, run_ids, stage)
                units = writer.get("probeUnits")
                created = self.cluster.create(stage_object(build, stage, run_id, units))
                if not created:
                    log.info("%s/%s: %s %s already existed; following it", namespace, name, kind, child)
                self._enter(writer, stage, kind, child)
                writer.flush()
                return str(writer.get("phase"))
            state = job_state(existing)
            if state.running:
                self._enter(writer, stage, kind, child)
                writer.flush()
                return str(writer.get("phase"))
            if state.failed:
                indexes = f" (failed indexes {state.failed_indexes})" if state.failed_indexes else ""
                why = f"{state.reason}: {state.message}" if state.message else state.reason
                self._fail(
                    writer,
                    "JobFailed",
                    f"{kind} {child} failed{indexes}: {why}; see `kubectl logs -n {namespace} job/{child}`"
                    if kind == "Job"
                    else f"{kind} {child} failed: {why}",
                    stage,
                )
                self._end_runs(runs, run_ids, stage, RUN_FAILED)
                writer.flush()
                return FAILED
            self._after(writer, runs, run_ids, stage, build)
            if writer.get("phase") == FAILED:
                writer.flush()
                return FAILED
            completed.append(stage)
            writer.set(completedStages=list(completed))
            writer.flush()

        runs.end(run_ids["adapt"], FINISHED)
        version = writer.get("modelVersion")
        model = spec.mlflow.registered_model
        writer.condition(READY, "True", "Succeeded", f"registered {model} version {version} as candidate")
        writer.phase(
            SUCCEEDED, "Succeeded", f"{model} version {version} is the candidate; review it in MLflow"
        )
        writer.set(stage=None, finishedAt=now())
        writer.flush()
        return SUCCEEDED

    # -- steps --

    def _run_ids(
        self, writer: StatusWriter, runs: StageRuns, resource: Resource, spec: LayerAdaptationSpec
    ) -> dict[str, str]:
        mlflow = dict(writer.get("mlflow") or {})
        run_ids = dict(mlflow.get("runIds") or {})
        if "adapt" not in run_ids:
            run_ids["adapt"] = runs.ensure_parent(resource.uid, resource.namespace, resource.name, spec)
            writer.set(
                mlflow={
                    "trackingUri": runs.tracking_uri,
                    "experimentId": runs.experiment_id,
                    "runIds": run_ids,
                    "url": runs.url(run_ids["adapt"]),
                }
            )
        return run_ids

    def _stage_run(
        self, writer: StatusWriter, runs: StageRuns, build: Build, run_ids: dict[str, str], stage: str
    ) -> str | None:
        """The run a stage's Job adopts: probe stages share the probe run; register adopts the parent."""
        if stage == "register":
            return run_ids["adapt"]
        if stage == "probe" and "plan" in build.stages:
            return None  # exact units write partial results only; `merge` logs the probe
        group = "train" if stage == "train" else "probe"
        if group not in run_ids:
            run_ids[group] = runs.ensure_child(run_ids["adapt"], build.resource.uid, group)
            mlflow = dict(writer.get("mlflow") or {})
            writer.set(mlflow={**mlflow, "runIds": dict(run_ids)})
            writer.flush()
        return run_ids[group]

    def _enter(self, writer: StatusWriter, stage: str, kind: str, child: str) -> None:
        phase = PHASE_OF_STAGE[stage]
        units = writer.get("probeUnits")
        message = f"{kind} {child} running"
        if stage == "probe" and units:
            message += f" ({units} probe units)"
        writer.set(stage=stage, jobs={**(writer.get("jobs") or {}), stage: child})
        writer.condition(CONDITION_OF_STAGE[stage], "False", phase, f"{stage}: {message}")
        writer.condition(READY, "False", phase, f"{stage}: {message}")
        writer.phase(phase, phase, f"{stage}: {message}")

    def _after(
        self, writer: StatusWriter, runs: StageRuns, run_ids: dict[str, str], stage: str, build: Build
    ) -> None:
        """Read back what a finished stage produced (from its MLflow run) and close what it closes."""
        if stage == "plan":
            units = runs.tags(run_ids["probe"]).get(review.PROBE_UNITS)
            if not units or not units.isdigit():
                self._fail(
                    writer,
                    "PlanMissing",
                    f"the plan Job finished, but MLflow run {run_ids['probe']} has no "
                    f"{review.PROBE_UNITS} tag",
                    stage,
                )
                return
            writer.set(probeUnits=int(units))
        elif stage == "merge" or (stage == "probe" and "merge" not in build.stages):
            tags = runs.tags(run_ids["probe"])
            selected, top = (
                layer_list(tags.get(review.SELECTED_LAYERS)),
                layer_list(tags.get(review.TOP_LAYERS)),
            )
            writer.set(selectedLayers=selected, topLayers=top)
            writer.condition("Probed", "True", "ProbeComplete", f"top layers {top}; selected {selected}")
            runs.end(run_ids["probe"], FINISHED)
        elif stage == "train":
            if "probe" not in build.stages:  # a reused profile: the train Job took it and tagged its run
                self._reused(writer, runs.tags(run_ids["train"]), run_ids["train"])
                if writer.get("phase") == FAILED:
                    return
            multiplier = runs.tags(run_ids["train"]).get(review.LR_MULTIPLIER)
            if multiplier:
                writer.set(learningRateMultiplier=multiplier)
            rate = f" at {multiplier}× the shared learning rate" if multiplier else ""
            writer.condition(
                "Trained", "True", "TrainingComplete", f"trained layers {writer.get('selectedLayers')}{rate}"
            )
            runs.end(run_ids["train"], FINISHED)
        elif stage == "register":
            tags = runs.tags(run_ids["adapt"])
            version = tags.get(review.MODEL_VERSION)
            if not version:
                self._fail(
                    writer,
                    "VersionMissing",
                    f"the register Job finished but run {run_ids['adapt']} names no version",
                )
                return
            model = tags.get(review.REGISTERED_MODEL)
            writer.set(modelVersion=version, registeredModel=model)
            writer.condition(
                "Registered", "True", "Registered", f"{model} version {version}, alias candidate"
            )

    def _reused(self, writer: StatusWriter, tags: dict[str, str], run_id: str) -> None:
        """What the train Job of a resource that reuses a profile read back: its layers and source."""
        profile = tags.get(review.PROBE_REUSED)
        if not profile:
            self._fail(
                writer,
                "ProfileMissing",
                f"the train Job finished, but MLflow run {run_id} names no reused profile "
                f"({review.PROBE_REUSED} tag)",
                "train",
            )
            return
        selected, top = layer_list(tags.get(review.SELECTED_LAYERS)), layer_list(tags.get(review.TOP_LAYERS))
        writer.set(selectedLayers=selected, topLayers=top, profile=profile)
        writer.condition(
            "Probed", "True", "ProfileReused", f"{profile}; top layers {top}; selected {selected}"
        )

    def _fail(self, writer: StatusWriter, reason: str, message: str, stage: str | None = None) -> None:
        if stage is not None:
            writer.condition(CONDITION_OF_STAGE[stage], "False", reason, message)
        writer.condition(READY, "False", reason, message)
        writer.phase(FAILED, reason, message, warning=True)
        writer.set(finishedAt=now())

    def _end_runs(self, runs: StageRuns, run_ids: dict[str, str], stage: str, status: str) -> None:
        group = {"train": "train", "register": None}.get(stage, "probe")
        for key in (group, "adapt"):
            if key and key in run_ids:
                try:
                    runs.end(run_ids[key], status)
                except Exception as error:  # the resource is Failed either way
                    log.warning("could not end MLflow run %s: %s", run_ids[key], error)

    def deleted(self, body: dict[str, Any]) -> None:
        """A resource deleted before it finished: its runs end KILLED (children go with the GC)."""
        status = body.get("status") or {}
        if status.get("phase") in TERMINAL:
            return
        mlflow = status.get("mlflow") or {}
        if not mlflow.get("trackingUri"):
            return
        runs = StageRuns(
            mlflow["trackingUri"], (body.get("spec") or {}).get("mlflow", {}).get("experiment", "")
        )
        for run_id in (mlflow.get("runIds") or {}).values():
            runs.end(run_id, KILLED)
