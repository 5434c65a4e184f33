"""MLflow runs that never cost finished work: the tracker, its runs, and what they log.

Every call has bounded retries with exponential backoff (`service.tracking.retries`); a call that
still fails is recorded in the ledger (with its payload kept on disk) instead of raised, and
`Tracker.summary()` says in one line what did not reach MLflow.

The run tree: one parent run per `adapt`/`demo` (or the run an operator created, adopted from
`MLFLOW_RUN_ID`), with nested child runs (tag `mlflow.parentRunId`) for probes and training. What
each run holds is decided in `service.tracking.records`; this module only knows how to log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from service import __version__
from service.errors import LayerpilotError, SpecError
from service.spec.models import MlflowSpec
from service.tracking.client import EXPERIMENT_TAGS, client_for, error_code
from service.tracking.ledger import UNLOGGED_FILE, Ledger, NotLogged
from service.tracking.registry import Registry
from service.tracking.retries import RetryPolicy, is_transient, short_error, with_retries
from service.tracking.uris import (
    ENV_TRACKING_URI,
    LOCAL_ARTIFACTS,
    local_db_path,
    resolve_tracking_uri,
    run_url,
)

log = logging.getLogger(__name__)

ENV_RUN_ID = "MLFLOW_RUN_ID"  # set by the operator on Jobs: log into the run it created
UNLOGGED_DIR = "mlflow_unlogged"
T = TypeVar("T")


_METRIC_KEY = re.compile(r"[^/\w.\- ]")


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
        self.ledger = Ledger(local_dir / UNLOGGED_FILE)
        self._down_until: float | None = None  # set while MLflow is known unreachable (see RetryPolicy)
        self._experiment_id: str | None = None
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
    ) -> tuple[bool, T | None]:
        """Run one MLflow call under the retry policy; on final failure record it and return (False, None)."""
        if self._down_until is not None and time.monotonic() < self._down_until:
            error = "skipped: MLflow was unreachable moments before"
            self.record(NotLogged(kind, count, run_id, what, error, True, payload), quiet=True)
            return False, None
        try:
            result = with_retries(self.retry, action, attempts=1 if self._down_until is not None else None)
        except SpecError:
            raise
        except Exception as error:
            transient = is_transient(error)
            if transient:
                self._mark_down()
            self.record(NotLogged(kind, count, run_id, what, short_error(error), transient, payload))
            return False, None
        self._down_until = None
        return True, result

    def _mark_down(self) -> None:
        self._down_until = time.monotonic() + self.retry.cooldown_s

    def record(self, failure: NotLogged, quiet: bool = False) -> None:
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
            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is None:
                db = local_db_path(self.tracking_uri)
                location = (db.parent / LOCAL_ARTIFACTS).as_uri() if db is not None else None
                try:
                    self._experiment_id = self.client.create_experiment(
                        self.experiment_name, artifact_location=location, tags=EXPERIMENT_TAGS
                    )
                except MlflowException as error:  # created meanwhile by a parallel Job
                    found = self.client.get_experiment_by_name(self.experiment_name)
                    if found is None:
                        raise error from None
                    self._experiment_id = found.experiment_id
            else:
                self._experiment_id = found.experiment_id
        return cast(str, self._experiment_id)

    def start_run(self, name: str, tags: Mapping[str, Any] | None = None) -> TrackedRun:
        """The parent run: the operator's (env `MLFLOW_RUN_ID`) if set, else a new one.

        An adopted run keeps the tags it has; `tags` are set only where it has none of that name.
        """
        adopted = os.environ.get(ENV_RUN_ID)
        if adopted:
            return self._adopt(adopted, tags or {})
        return self._create(name, tags or {}, parent=None)

    def _create(self, name: str, tags: Mapping[str, Any], parent: TrackedRun | None) -> TrackedRun:
        all_tags = {"layerpilot.version": __version__, **{k: str(v) for k, v in tags.items()}}
        if parent is not None:
            all_tags[MLFLOW_PARENT_RUN_ID] = str(parent.run_id)

        def create() -> tuple[str, str]:
            experiment = (parent.experiment_id if parent else None) or self.experiment_id()
            run = self.client.create_run(experiment, run_name=name, tags=resolve_tags(all_tags))
            return run.info.run_id, experiment

        ok, created = self.attempt(
            "run", 1, parent.run_id if parent else None, f"run {name}", all_tags, create
        )
        run_id, experiment_id = created if ok and created else (None, None)
        return TrackedRun(self, run_id, experiment_id, name)

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
        if run.run_id is None:
            raise LayerpilotError(
                f"cannot register the patch: MLflow at {self.tracking_uri} never created the run"
            )
        registry = Registry(self.tracking_uri, retry=self.retry)
        return registry.register_patch(
            patch_dir, run_id=run.run_id, experiment_id=run.experiment_id, **review
        )


class TrackedRun:
    """One MLflow run; every method records instead of raising when MLflow does not answer."""

    def __init__(
        self,
        tracker: Tracker,
        run_id: str | None,
        experiment_id: str | None,
        name: str,
        adopted: bool = False,
    ) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.name = name
        self.adopted = adopted  # the operator's run: its owner, not this process, ends it

    @property
    def url(self) -> str | None:
        return run_url(self.tracker.tracking_uri, self.experiment_id, self.run_id)

    def _log(
        self, kind: str, count: int, what: str, payload: dict[str, Any], action: Callable[[str], Any]
    ) -> bool:
        if self.run_id is None:
            failure = NotLogged(kind, count, None, what, "the run was never created", True, payload)
            self.tracker.record(failure)
            return False
        run_id = self.run_id
        ok, _ = self.tracker.attempt(kind, count, run_id, what, payload, lambda: action(run_id))
        return ok

    def child(self, name: str, tags: Mapping[str, Any] | None = None) -> TrackedRun:
        """A nested run (tag `mlflow.parentRunId`), e.g. one per probed layer."""
        if self.run_id is None:
            self.tracker.record(
                NotLogged("run", 1, None, f"run {name}", "parent run was never created", True, {})
            )
            return TrackedRun(self.tracker, None, None, name)
        if self.experiment_id is None:
            ok, run = self.tracker.attempt(
                "run",
                1,
                self.run_id,
                f"run {name}",
                {},
                lambda: self.tracker.client.get_run(str(self.run_id)),
            )
            if not ok or run is None:
                return TrackedRun(self.tracker, None, None, name)
            self.experiment_id = run.info.experiment_id
        return self.tracker._create(name, tags or {}, parent=self)

    def children_by(self, tag: str) -> dict[str, str]:
        """Run ids of this run's children that carry `tag`, by the tag's value (the newest of each).

        How the last stage of a job finds its siblings: the operator's stage runs under the run it
        created, tagged `layerpilot.stage`. A read, not a log: when MLflow does not answer, the
        answer is empty (with a warning), and nothing is recorded as not logged.
        """
        if self.run_id is None:
            return {}
        run_id, client = self.run_id, self.tracker.client

        def search() -> list[Any]:
            experiment = self.experiment_id or client.get_run(run_id).info.experiment_id
            return list(
                client.search_runs(
                    [experiment],
                    filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{run_id}'",
                    order_by=["attributes.start_time ASC"],
                    max_results=1000,
                )
            )

        try:
            found = with_retries(self.tracker.retry, search)
        except Exception as error:
            log.warning("MLflow: cannot list the child runs of %s (%s)", run_id, short_error(error))
            return {}
        return {run.data.tags[tag]: run.info.run_id for run in found if tag in run.data.tags}

    def log_params(self, params: Mapping[str, Any]) -> bool:
        entries = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        payload = {p.key: p.value for p in entries}
        return self._log(
            "param", len(entries), f"{len(entries)} params", payload,
            lambda rid: self.tracker.client.log_batch(rid, params=entries),
        )  # fmt: skip

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> bool:
        """Numeric values only; keys MLflow would reject get `_` for the offending characters."""
        now = int(time.time() * 1000)
        entries = [
            Metric(_METRIC_KEY.sub("_", str(k)), float(v), now, step or 0)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        if not entries:
            return True
        payload = {"step": step, "metrics": {m.key: m.value for m in entries}}
        return self._log(
            "metric", len(entries), f"{len(entries)} metrics at step {step or 0}", payload,
            lambda rid: self.tracker.client.log_batch(rid, metrics=entries),
        )  # fmt: skip

    def log_metric(self, key: str, value: float, step: int | None = None) -> bool:
        return self.log_metrics({key: value}, step=step)

    def log_layer_metrics(self, by_layer: Mapping[int, Mapping[str, Any]]) -> bool:
        """Per-layer values (`probe/score`, `delta/relative`, …) with step = layer index, in one batch,
        so the MLflow UI plots them against the layer axis."""
        now = int(time.time() * 1000)
        entries = [
            Metric(_METRIC_KEY.sub("_", str(k)), float(v), now, int(layer))
            for layer, values in by_layer.items()
            for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        if not entries:
            return True
        payload = {"byLayer": {str(layer): dict(values) for layer, values in by_layer.items()}}
        return self._log(
            "metric", len(entries), f"{len(entries)} per-layer metrics", payload,
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
        payload = {"path": str(path), "artifactPath": artifact_path}
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
        ok = self._log(
            "artifact", 1, f"artifact {name}", {"name": name},
            lambda rid: self.tracker.client.log_dict(rid, dict(data), name),
        )  # fmt: skip
        if not ok:
            keep = self.tracker.local_dir / UNLOGGED_DIR / (self.run_id or self.name) / name
            keep.parent.mkdir(parents=True, exist_ok=True)
            keep.write_text(json.dumps(data, indent=2, default=str) + "\n")
        return ok

    def end(self, status: str = "FINISHED") -> bool:
        if self.adopted:
            return True
        return self._log(
            "status", 1, f"status {status} of run {self.name}", {"status": status},
            lambda rid: self.tracker.client.set_terminated(rid, status),
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
