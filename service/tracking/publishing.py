"""A job's record published while it runs: in the background every few seconds, and once at the end.

`Publishing(record)` wraps a job: it publishes once when the job starts (so the run exists at once,
and a bad `MLFLOW_RUN_ID` is bad input before any work), then every `LAYERPILOT_PUBLISH_SECONDS`
(5) in a background thread, so the live curves in the MLflow UI follow the training, and once more
when the job ends (the record ended first: FINISHED, FAILED or KILLED). A tracking server that is
down or slow costs the job nothing but a warning at the end: the files are the record, and
`layerpilot mlflow sync WORKDIR` publishes what is left.

`tracking_for` says where a job publishes: the spec's `mlflow.trackingUri`, else
`MLFLOW_TRACKING_URI`, else a local store; the run of `MLFLOW_RUN_ID` when the operator set it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from service.errors import InputError, first_line
from service.fields import Fields
from service.files import write_json
from service.record import RUNNING, Record, Tracking, ended_status
from service.spec.fingerprint import fingerprint
from service.spec.models import LayerAdaptationSpec, MlflowSpec
from service.tracking import review
from service.tracking.published import SYNC_COMMAND, PublishResult, describe
from service.tracking.uris import resolve_tracking_uri, where_to_look, without_credentials

log = logging.getLogger(__name__)

ENV_RUN_ID = "MLFLOW_RUN_ID"  # set by the operator on Jobs: publish into the run it created
INTERVAL_ENV = "LAYERPILOT_PUBLISH_SECONDS"
DEFAULT_INTERVAL_S = 5.0


def tracking_for(spec: MlflowSpec, store_dir: Path, *, tracking_uri: str | None = None) -> Tracking:
    """Where a job started here publishes: `tracking_uri`, else the spec's or the environment's, else
    a local store in `store_dir`."""
    from mlflow.tracking.context.registry import resolve_tags  # deferred: mlflow takes seconds to import

    uri = tracking_uri or resolve_tracking_uri(spec, store_dir)
    # MLflow's own tags for a run started here (user, source, the Kubernetes pod through our
    # context plugin): resolved now, where the job runs, not where a later publish does.
    context = {key: str(value) for key, value in resolve_tags({}).items()}
    return Tracking(without_credentials(uri), spec.experiment, os.environ.get(ENV_RUN_ID) or None, context)


def interval_from_env() -> float:
    raw = os.environ.get(INTERVAL_ENV)
    if raw is None:
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        raise InputError(
            INTERVAL_ENV, f"'{raw}' is not a number of seconds", "unset it or set e.g. 5"
        ) from None
    if value <= 0:
        raise InputError(INTERVAL_ENV, f"must be positive, got {raw}", "unset it or set e.g. 5")
    return value


@dataclass
class Tracked:
    """Where a job's record went in MLflow, as its last publish left it."""

    tracking_uri: str | None = None
    experiment_id: str | None = None
    run_ids: dict[str, str] = field(default_factory=dict)  # role -> run id
    registered: dict[str, Any] | None = None  # the version, when one was registered
    where_to_look: str | None = None
    not_logged: str | None = None  # what MLflow does not hold yet, in one line

    def to_json(self) -> dict[str, Any]:
        return TRACKED_FIELDS.json(self)


TRACKED_FIELDS: Fields[Tracked] = Fields(
    {
        "trackingUri": ("where the runs and the version are", lambda t: t.tracking_uri),
        "experimentId": ("the experiment of the runs", lambda t: t.experiment_id),
        "runIds": ("the MLflow run of each part of the job, by role", lambda t: t.run_ids),
        "registeredModel": (
            "the new version (name, version, alias, modelUri, loggedModelUri, url, tags); null when it "
            "was not registered",
            lambda t: t.registered,
        ),
        "whereToLook": (
            "the run's URL, or the `mlflow ui` command for a local store",
            lambda t: t.where_to_look,
        ),
        "notLogged": ("what MLflow does not hold yet, in one line, or null", lambda t: t.not_logged),
    }
)


class Publishing:
    """Publishes the work directory of `record` while the `with` block runs (nothing when None).

    `outcome` is the last publish's result; `summary()` one line when it left something behind.
    """

    def __init__(self, record: Record | None, *, interval: float | None = None) -> None:
        self.record = record
        self.interval = interval if interval is not None else interval_from_env()
        self.publisher: Any = None  # a `Publisher`, once there is something to publish
        self.outcome: PublishResult | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Publishing:
        if self.record is None or self.record.tracking is None:
            return self
        # Deferred: MLflow takes seconds to import, and a record without tracking never needs it.
        from service.tracking.publish import Publisher

        self.publisher = Publisher(self.record.directory)
        self._publish()  # raises InputError for a run to adopt that does not exist
        self._thread = threading.Thread(target=self._loop, name="layerpilot-publish", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.record is not None and self.record.status == RUNNING:  # the block did not end it
            self.record.end(ended_status(kind))
        if self.publisher is not None:
            self._publish()

    def _publish(self) -> PublishResult:
        assert self.publisher is not None
        with self._lock:
            self.outcome = self.publisher.publish()
        return self.outcome

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._publish()
            except Exception as error:  # a publish must never take the job down
                log.warning(
                    "publishing %s failed: %s",
                    self.record.directory if self.record else "",
                    first_line(error),
                )

    def tracked(self, roles: Mapping[str, str]) -> Tracked:
        """The last publish, summed up; `roles` names the job's records by their directories."""
        outcome = self.outcome
        if outcome is None:
            return Tracked()
        return Tracked(
            tracking_uri=outcome.tracking_uri,
            experiment_id=outcome.experiment_id,
            run_ids={role: outcome.runs[path] for role, path in roles.items() if path in outcome.runs},
            registered=outcome.registered[-1] if outcome.registered else None,
            where_to_look=where_to_look(outcome.tracking_uri, outcome.experiment_id, outcome.runs.get(".")),
            not_logged=self.summary(),
        )

    def summary(self) -> str | None:
        """One line when MLflow does not hold everything yet (what is left, and how to publish it)."""
        outcome = self.outcome
        if outcome is None or outcome.complete:
            return None
        if outcome.error is not None:
            return outcome.line()
        first = f" ({outcome.problems[0]})" if outcome.problems else ""
        return (
            f"MLflow at {outcome.tracking_uri} refused some requests{first}; not published: "
            f"{describe(outcome.left)}; {outcome.workdir} keeps all of it "
            f"(`{SYNC_COMMAND} {outcome.workdir}` tries again)"
        )


SPEC_JSON = "spec.json"


def job_record(
    directory: Path,
    name: str,
    spec: LayerAdaptationSpec | None,
    *,
    tracking: Tracking | None,
    params: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> Record:
    """The top record of a job in `directory`: the spec as params with dotted keys
    (`algorithm.learningRate`), the tags runs are found by, and the spec itself as `spec.json`."""
    if spec is None:
        return Record.start(directory, name, params=params, tags=tags, tracking=tracking)
    data = spec.model_dump(mode="json", by_alias=True)
    spec_tags = {
        review.MODEL: spec.model.uri,
        review.STRATEGY: spec.selection.strategy,
        review.SPEC_HASH: fingerprint(spec),
    }
    record = Record.start(
        directory,
        name,
        params={**review.flatten_params(data), **(params or {})},
        tags={**spec_tags, **(tags or {})},
        tracking=tracking,
    )
    write_json(directory / SPEC_JSON, data)
    record.add_artifact(directory / SPEC_JSON)
    return record
