"""The runs of a job run in stages by someone else (the Kubernetes operator): found again, never doubled.

The operator opens one parent run per resource and one child per stage (`probe`, `train`); each
stage's Job adopts its run through `MLFLOW_RUN_ID` and the operator ends it when the Job ends. Runs
are found by tags (the resource's uid, the stage), so an operator that restarts, or retries a
handler half way, reuses the runs it created instead of opening new ones.

Unlike a publish, these calls raise: the operator cannot start a stage without its run, and turns a
`LayerpilotError` into a retry with backoff.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from service import __version__
from service.errors import LayerpilotError
from service.spec.fingerprint import fingerprint
from service.spec.models import LayerAdaptationSpec
from service.tracking import review
from service.tracking.client import client_for, ensure_experiment
from service.tracking.retries import RetryPolicy, short_error
from service.tracking.uris import run_url

T = TypeVar("T")

STAGE = review.STAGE
RESOURCE_UID = "layerpilot.k8s.uid"
RESOURCE = "layerpilot.k8s.resource"
NAMESPACE = "layerpilot.k8s.namespace"
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


class StageRuns:
    """Parent and stage runs of one resource on one tracking server."""

    def __init__(self, tracking_uri: str, experiment: str, *, retry: RetryPolicy | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment
        (retry or RetryPolicy.from_env()).apply()
        self.client = client_for(tracking_uri)
        self._experiment_id: str | None = None

    def _call(self, what: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except LayerpilotError:
            raise
        except Exception as error:
            raise LayerpilotError(
                f"MLflow at {self.tracking_uri}: {what} failed ({short_error(error)})"
            ) from None

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self._call(
                f"experiment {self.experiment_name}",
                lambda: ensure_experiment(self.client, self.tracking_uri, self.experiment_name),
            )
        return self._experiment_id

    def _find(self, filters: Mapping[str, str]) -> str | None:
        query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in filters.items())

        def search() -> list[Any]:
            return list(self.client.search_runs([self.experiment_id], filter_string=query, max_results=2))

        found = self._call("run search", search)
        return str(found[0].info.run_id) if found else None

    def _create(self, name: str, tags: Mapping[str, str]) -> str:
        all_tags = {"layerpilot.version": __version__, **tags}
        run = self._call(
            f"run {name}",
            lambda: self.client.create_run(self.experiment_id, run_name=name, tags=all_tags),
        )
        return str(run.info.run_id)

    def ensure_parent(self, uid: str, namespace: str, name: str, spec: LayerAdaptationSpec) -> str:
        """The resource's parent run: found by its uid, else created with the spec logged."""
        found = self._find({RESOURCE_UID: uid, STAGE: "adapt"})
        if found is not None:
            return found
        run_id = self._create(
            f"{namespace}/{name}",
            {
                RESOURCE_UID: uid,
                STAGE: "adapt",
                RESOURCE: name,
                NAMESPACE: namespace,
                review.MODEL: spec.model.uri,
                review.STRATEGY: str(spec.selection.strategy),
                review.SPEC_HASH: fingerprint(spec),
            },
        )
        params = review.flatten_params(spec.model_dump(mode="json", by_alias=True))

        def log() -> None:
            from mlflow.entities import Param

            entries = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
            for start in range(0, len(entries), 100):
                self.client.log_batch(run_id, params=entries[start : start + 100])
            self.client.log_dict(run_id, spec.model_dump(mode="json", by_alias=True), "spec.json")

        self._call("logging the spec", log)
        return run_id

    def ensure_child(self, parent_id: str, uid: str, stage: str) -> str:
        """The parent's run for `stage`, found by tag, else created under the parent."""
        found = self._find({RESOURCE_UID: uid, STAGE: stage, MLFLOW_PARENT_RUN_ID: parent_id})
        if found is not None:
            return found
        return self._create(stage, {RESOURCE_UID: uid, STAGE: stage, MLFLOW_PARENT_RUN_ID: parent_id})

    def end(self, run_id: str, status: str) -> None:
        """End a run that is still running (a run already ended keeps its status)."""

        def end() -> None:
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, status)

        self._call(f"ending run {run_id}", end)

    def tags(self, run_id: str) -> dict[str, str]:
        return dict(self._call(f"reading run {run_id}", lambda: self.client.get_run(run_id)).data.tags)

    def url(self, run_id: str) -> str | None:
        return run_url(self.tracking_uri, self._experiment_id, run_id)
