"""MLflow runs that never cost finished work: the tracker, its runs, and what they log.

Every call has bounded retries with backoff (MLflow's own, bounded by `service.tracking.retries`);
a call that still fails is recorded in the ledger (with its payload kept on disk) instead of
raised, and `Tracker.summary()` says in one line what did not reach MLflow. `layerpilot mlflow
sync` replays the ledger: a run never created has a placeholder id (`local-…`) its later calls and
children name; metric points keep their timestamps; a JSON artifact is kept as a file.

The run tree: one parent run per `adapt`/`demo` (or the run an operator created, adopted from
`MLFLOW_RUN_ID`), with nested child runs (tag `mlflow.parentRunId`) for probes and training. What
each run holds is decided in `service.tracking.records`; this module only knows how to log.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from service import __version__
from service.errors import LayerpilotError, SpecError
from service.spec.models import MlflowSpec
from service.tracking.client import (
    client_for,
    ensure_experiment,
    error_code,
    is_number,
    metric_key,
    new_local_id,
    now_ms,
)
from service.tracking.ledger import UNLOGGED_FILE, Ledger, NotLogged, inside, metric_points
from service.tracking.registry import Registry
from service.tracking.retries import RetryPolicy, is_transient, short_error, with_retries
from service.tracking.uris import (
    ENV_TRACKING_URI,
    local_db_path,
    resolve_tracking_uri,
    run_url,
)

log = logging.getLogger(__name__)

ENV_RUN_ID = "MLFLOW_RUN_ID"  # set by the operator on Jobs: log into the run it created
UNLOGGED_DIR = "mlflow_unlogged"
T = TypeVar("T")


class Tracker:
    """Opens the experiment and the runs of one workdir; never raises for a tracking failure."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str = "layerpilot",
        *,
        local_dir: Path,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment
        self.local_dir = local_dir
        self.retry = retry or RetryPolicy.from_env()
        self.ledger = Ledger(local_dir / UNLOGGED_FILE, tracking_uri=tracking_uri)
        self._down_until: float | None = None  # set while MLflow is known unreachable (see RetryPolicy)
        self._experiment_id: str | None = None
        # The request of a registration that just failed: attached to the caller's `registration`
        # entry (see `record`), so that `mlflow sync` can register the version later.
        self._registration: tuple[dict[str, Any], str | None] | None = None
        db = local_db_path(tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        self.client = client_for(tracking_uri)

    @classmethod
    def for_spec(cls, spec: MlflowSpec, workdir: Path, retry: RetryPolicy | None = None) -> Tracker:
        return cls(resolve_tracking_uri(spec, workdir), spec.experiment, local_dir=workdir, retry=retry)

    # -- calls that record instead of raising --

    def attempt(
        self,
        kind: str,
        count: int,
        run_id: str | None,
        what: str,
        payload: dict[str, Any],
        action: Callable[[], T],
        local_run_id: str | None = None,
    ) -> tuple[bool, T | None]:
        """Run one MLflow call under the retry policy; on final failure record it and return (False, None)."""
        if self._down_until is not None and time.monotonic() < self._down_until:
            error = "skipped: MLflow was unreachable moments before"
            self.record(NotLogged(kind, count, run_id, what, error, True, payload, local_run_id), quiet=True)
            return False, None
        try:
            result = with_retries(self.retry, action, attempts=1 if self._down_until is not None else None)
        except SpecError:
            raise
        except Exception as error:
            transient = is_transient(error)
            if transient:
                self._mark_down()
            reason = short_error(error)
            self.record(NotLogged(kind, count, run_id, what, reason, transient, payload, local_run_id))
            return False, None
        self._down_until = None
        return True, result

    def _mark_down(self) -> None:
        self._down_until = time.monotonic() + self.retry.cooldown_s

    def record(self, failure: NotLogged, quiet: bool = False) -> None:
        if failure.kind == "registration" and self._registration is not None:
            request, local_run_id = self._registration
            self._registration = None
            failure = replace(
                failure,
                payload={**request, **failure.payload},
                local_run_id=failure.local_run_id or local_run_id,
            )
        self.ledger.record(failure, quiet=quiet)

    @property
    def failures(self) -> list[NotLogged]:
        return self.ledger.failures

    def not_logged(self) -> dict[str, int]:
        """How many items of each kind did not reach MLflow."""
        return self.ledger.counts()

    def summary(self) -> str | None:
        """One line for the CLI ("MLflow at URI unreachable: not logged: 12 metrics, …"), or None."""
        return self.ledger.summary(self.tracking_uri)

    # -- runs --

    def experiment_id(self) -> str:
        """The experiment's id, creating it (artifacts beside a local store) when it does not exist."""
        if self._experiment_id is None:
            self._experiment_id = ensure_experiment(self.client, self.tracking_uri, self.experiment_name)
        return self._experiment_id

    def start_run(self, name: str, tags: Mapping[str, Any] | None = None) -> TrackedRun:
        """The parent run: the operator's (env `MLFLOW_RUN_ID`) if set, else a new one.

        An adopted run keeps the tags it has; `tags` are set only where it has none of that name.
        """
        adopted = os.environ.get(ENV_RUN_ID)
        if adopted:
            return self._adopt(adopted, tags or {})
        return self._create(name, tags or {}, parent=None)

    def _create(self, name: str, tags: Mapping[str, Any], parent: TrackedRun | None) -> TrackedRun:
        """A new run (a child of `parent`); one MLflow did not create gets a placeholder id instead."""
        all_tags = {"layerpilot.version": __version__, **{k: str(v) for k, v in tags.items()}}
        if parent is not None and parent.run_id is not None:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent.run_id
        started = now_ms()
        resolved = resolve_tags(all_tags)  # here, not at a replay: the context is this process's
        local_id = new_local_id()
        payload: dict[str, Any] = {
            "name": name,
            "parent": parent.ref if parent is not None else None,
            "experiment": self.experiment_name,
            "experimentId": parent.experiment_id if parent is not None else self._experiment_id,
            "startTime": started,
            "tags": resolved,
        }
        what = f"run {name}"
        if parent is not None and parent.run_id is None:
            failure = NotLogged("run", 1, None, what, "parent run was never created", True, payload, local_id)
            self.record(failure)
            return TrackedRun(self, None, None, name, local_id=local_id)

        def create() -> tuple[str, str]:
            if parent is None:
                experiment = self.experiment_id()
            else:
                if parent.experiment_id is None:  # adopted while MLflow did not answer
                    parent.experiment_id = str(self.client.get_run(str(parent.run_id)).info.experiment_id)
                experiment = parent.experiment_id
            payload["experimentId"] = experiment
            run = self.client.create_run(experiment, start_time=started, tags=resolved, run_name=name)
            return run.info.run_id, experiment

        parent_id = parent.run_id if parent is not None else None
        ok, created = self.attempt("run", 1, parent_id, what, payload, create, local_run_id=local_id)
        if not ok or not created:
            return TrackedRun(self, None, None, name, local_id=local_id)
        return TrackedRun(self, created[0], created[1], name)

    def _adopt(self, run_id: str, tags: Mapping[str, Any]) -> TrackedRun:
        try:
            run = with_retries(self.retry, lambda: self.client.get_run(run_id))
        except Exception as error:
            if error_code(error) == "RESOURCE_DOES_NOT_EXIST":
                raise SpecError(
                    ENV_RUN_ID,
                    f"no run {run_id} at {self.tracking_uri}",
                    f"unset {ENV_RUN_ID} or point {ENV_TRACKING_URI} at the server that holds it",
                ) from None
            # Not an error yet: the run exists on the operator's side; later calls record what is lost.
            log.warning("MLflow: cannot check adopted run %s (%s)", run_id, short_error(error))
            if is_transient(error):
                self._mark_down()
            run = None
        adopted = TrackedRun(self, run_id, run.info.experiment_id if run else None, "adopted", adopted=True)
        # The owner's tags stand (its `layerpilot.stage` is how it finds the run again): ours only
        # fill in what the run does not carry yet.
        owned = run.data.tags if run is not None else {}
        missing = {key: value for key, value in tags.items() if key not in owned}
        if missing:
            adopted.set_tags(missing)
        return adopted

    def register_patch(self, run: TrackedRun, patch_dir: Path, **review: Any) -> dict[str, Any]:
        """Register the patch from `run` (see `Registry.register_patch`); raises when MLflow is down."""
        request = {
            "patchDir": str(Path(patch_dir).absolute()),
            "workdirPath": inside(Path(patch_dir), self.local_dir),
            "run": run.ref,
            "experimentId": run.experiment_id,
            "review": {key: value for key, value in review.items() if key != "flavor"},
        }
        self._registration = (request, run.local_id)
        if run.run_id is None:
            raise LayerpilotError(
                f"cannot register the patch: MLflow at {self.tracking_uri} never created the run"
            )
        registry = Registry(self.tracking_uri, retry=self.retry)
        registered = registry.register_patch(
            patch_dir, run_id=run.run_id, experiment_id=run.experiment_id, **review
        )
        self._registration = None
        return registered


class TrackedRun:
    """One MLflow run; every method records instead of raising when MLflow does not answer."""

    def __init__(
        self,
        tracker: Tracker,
        run_id: str | None,
        experiment_id: str | None,
        name: str,
        adopted: bool = False,
        local_id: str | None = None,
    ) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.name = name
        self.adopted = adopted  # the operator's run: its owner, not this process, ends it
        self.local_id = local_id  # the placeholder of a run MLflow never created (`local-…`)

    @property
    def ref(self) -> str | None:
        """The run as the ledger names it: its MLflow id, else its placeholder."""
        return self.run_id or self.local_id

    @property
    def url(self) -> str | None:
        return run_url(self.tracker.tracking_uri, self.experiment_id, self.run_id)

    def _log(
        self, kind: str, count: int, what: str, payload: dict[str, Any], action: Callable[[str], Any]
    ) -> bool:
        if self.run_id is None:  # already warned about when the run was not created
            failure = NotLogged(
                kind, count, None, what, "the run was never created", True, payload, self.local_id
            )
            self.tracker.record(failure, quiet=True)
            return False
        run_id = self.run_id
        ok, _ = self.tracker.attempt(kind, count, run_id, what, payload, lambda: action(run_id))
        return ok

    def child(self, name: str, tags: Mapping[str, Any] | None = None) -> TrackedRun:
        """A nested run (tag `mlflow.parentRunId`), e.g. one per probed layer."""
        return self.tracker._create(name, tags or {}, parent=self)

    def log_params(self, params: Mapping[str, Any]) -> bool:
        entries = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        payload = {p.key: p.value for p in entries}
        return self._log(
            "param", len(entries), f"{len(entries)} params", payload,
            lambda rid: self.tracker.client.log_batch(rid, params=entries),
        )  # fmt: skip

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> bool:
        """Numeric values only; keys MLflow would reject get `_` for the offending characters."""
        points = [(k, v, step or 0, None) for k, v in metrics.items()]
        payload = {"step": step, "metrics": {k: v for k, v in metrics.items() if is_number(v)}}
        return self.log_points(points, f"metrics at step {step or 0}", payload)

    def log_metric(self, key: str, value: float, step: int | None = None) -> bool:
        return self.log_metrics({key: value}, step=step)

    def log_layer_metrics(self, by_layer: Mapping[int, Mapping[str, Any]]) -> bool:
        """Per-layer values (`probe/score`, `delta/relative`, …) with step = layer index, in one batch,
        so the MLflow UI plots them against the layer axis."""
        points = [(k, v, int(layer), None) for layer, values in by_layer.items() for k, v in values.items()]
        payload = {"byLayer": {str(layer): dict(values) for layer, values in by_layer.items()}}
        return self.log_points(points, "per-layer metrics", payload)

    def log_points(
        self,
        points: Sequence[tuple[str, Any, int, int | None]],
        what: str,
        payload: Mapping[str, Any] | None = None,
    ) -> bool:
        """Metric points `(key, value, step, timestamp ms or None for now)` in one request."""
        now = now_ms()
        entries = [
            Metric(metric_key(k), float(v), at or now, step) for k, v, step, at in points if is_number(v)
        ]
        if not entries:
            return True
        data = {**(payload or {}), "points": metric_points(entries)}
        return self._log(
            "metric", len(entries), f"{len(entries)} {what}", data,
            lambda rid: self.tracker.client.log_batch(rid, metrics=entries),
        )  # fmt: skip

    def set_tags(self, tags: Mapping[str, Any]) -> bool:
        entries = [RunTag(str(k), str(v)) for k, v in tags.items()]
        payload = {t.key: t.value for t in entries}
        return self._log(
            "tag", len(entries), f"{len(entries)} tags", payload,
            lambda rid: self.tracker.client.log_batch(rid, tags=entries),
        )  # fmt: skip

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> bool:
        """A file or a whole directory; the local copy stays where it is either way."""
        what = f"artifact {path}"
        payload = {
            "path": str(Path(path).absolute()),
            "artifactPath": artifact_path,
            "workdirPath": inside(Path(path), self.tracker.local_dir),
        }
        client = self.tracker.client
        if Path(path).is_dir():
            return self._log(
                "artifact", 1, what, payload, lambda rid: client.log_artifacts(rid, str(path), artifact_path)
            )
        return self._log(
            "artifact", 1, what, payload, lambda rid: client.log_artifact(rid, str(path), artifact_path)
        )

    def log_dict(self, data: Mapping[str, Any], name: str) -> bool:
        """A JSON artifact; when it cannot be logged it is written under the workdir instead."""
        kept = Path(UNLOGGED_DIR) / (self.run_id or self.name) / name
        ok = self._log(
            "artifact", 1, f"artifact {name}", {"name": name, "kept": str(kept)},
            lambda rid: self.tracker.client.log_dict(rid, dict(data), name),
        )  # fmt: skip
        if not ok:
            keep = self.tracker.local_dir / kept
            keep.parent.mkdir(parents=True, exist_ok=True)
            keep.write_text(json.dumps(data, indent=2, default=str) + "\n")
        return ok

    def end(self, status: str = "FINISHED") -> bool:
        if self.adopted:
            return True
        ended = now_ms()
        return self._log(
            "status", 1, f"status {status} of run {self.name}", {"status": status, "endTime": ended},
            lambda rid: self.tracker.client.set_terminated(rid, status, end_time=ended),
        )  # fmt: skip

    def __enter__(self) -> TrackedRun:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None:
            self.end("FINISHED")
        else:
            self.end("KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")
