"""Publish a work directory onto MLflow: one idempotent projection of its record.

The work directory is the record (`service.record`); MLflow shows it. A publish walks the record
tree and, for each record, finds its run by the record's key (tag `layerpilot.record_key`), or
creates it under its parent's run, or continues the run a record names (the operator's). It then
sends what the run does not hold yet — params, tags, metric points (with the step and timestamp
they were recorded at), artifacts, the status — and registers a layer patch that a record asks to
register, once. Publishing twice, after a timeout, from another process, or after the server lost
a minute, sends only what is missing; publishing a finished work directory again sends nothing.

A server that is down stops the publish at the first request that fails for that reason (nothing
is lost: the files are the record and the next publish catches up). A request the server refuses
(say, a param that differs from the run's) is reported and the rest goes on.

`Publisher` remembers, for its lifetime, what each run already holds, so that publishing every few
seconds while a job runs (`service.tracking.publishing`) costs a few small requests; a new
`Publisher` (`layerpilot mlflow sync`) reads what each run holds from MLflow first.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from service import __version__
from service.errors import InputError, first_line
from service.files import write_json
from service.record import RUNNING, Record, Tracking, enclosing, walk
from service.tracking import review
from service.tracking.client import client_for, ensure_experiment, error_code, metric_key
from service.tracking.published import PUBLISH_FIELDS, PUBLISHED, PublishResult
from service.tracking.registration import register_patch
from service.tracking.retries import RetryPolicy, is_transient, short_error
from service.tracking.uris import ENV_TRACKING_URI, check_tracking_uri, without_credentials

log = logging.getLogger(__name__)
T = TypeVar("T")

RECORD_KEY = "layerpilot.record_key"  # on every run a publish created: the record it shows
PUBLISHED_FILE = "published.json"
_METRICS_PER_REQUEST, _OTHERS_PER_REQUEST = 1000, 100  # MLflow's log_batch limits
_PARAM_LENGTH = 6000  # MLflow's limit on a param value


class _Down(Exception):
    """MLflow did not answer: the rest of this publish waits for the next one."""


@dataclass
class RunState:
    """What one MLflow run holds, as far as this publisher knows."""

    run_id: str
    experiment_id: str
    adopted: bool  # the operator's run: filled in, never ended, its own tags and files stand
    fresh: bool = False  # created by this publisher: holds nothing it did not send
    status: str = RUNNING
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    seen: dict[str, set[tuple[int, int]]] = field(default_factory=dict)  # key -> (step, timestamp)
    offset: int = 0  # bytes of metrics.jsonl published
    files: dict[str, dict[str, int]] = field(default_factory=dict)  # folder -> run path -> size


class Publisher:
    """Publishes one work directory, again and again, remembering what each run holds."""

    def __init__(self, workdir: Path, tracking_uri: str | None = None, *, retry: RetryPolicy | None = None):
        self.workdir = workdir
        root = Record.read(workdir)
        above = enclosing(workdir) if root is None or root.tracking is None else None
        if above is not None and above.directory != workdir.absolute():
            raise InputError(
                "WORKDIR",
                f"{workdir} is part of the work directory {above.directory}",
                f"publish {above.directory}, the work directory it belongs to",
            )
        if root is None:
            raise InputError(
                "WORKDIR",
                f"{workdir} holds no layerpilot record",
                "pass the --workdir of adapt or the --out of probe, train or register",
            )
        self.target = _target(root, tracking_uri)
        (retry or RetryPolicy.from_env()).apply()
        self.client = client_for(self.target.tracking_uri)
        self.states: dict[str, RunState] = {}  # record key -> its run
        self._experiment_id: str | None = None
        self._refused: set[str] = set()  # problems already reported once

    @property
    def tracking_uri(self) -> str:
        return self.target.tracking_uri

    def publish(self) -> PublishResult:
        """Send what MLflow does not hold yet; never raises for MLflow being down or refusing."""
        started = time.perf_counter()
        result = PublishResult(self.workdir, self.tracking_uri)
        records = list(walk(self.workdir))
        try:
            for record, parent in records:
                state = self._run(record, parent, result)
                if state is not None:
                    self._fill(record, state, result)
            for record, _ in records:
                if record.registration and record.key in self.states:
                    self._register(record, self.states[record.key], result)
        except _Down as down:
            result.error = f"MLflow at {self.tracking_uri} unreachable ({down})"
        root = self.states.get(records[0][0].key) if records else None
        result.experiment_id = root.experiment_id if root else None
        result.runs = {
            _relative(record.directory, self.workdir): self.states[record.key].run_id
            for record, _ in records
            if record.key in self.states
        }
        result.left = self._left(records)
        result.seconds = time.perf_counter() - started
        self._write(result)
        return result

    # -- one request --

    def _call(self, what: str, action: Callable[[], T], result: PublishResult) -> T | None:
        """One MLflow call: its answer, or None after a refusal (reported); `_Down` when unreachable."""
        try:
            return action()
        except InputError:
            raise
        except Exception as error:
            if is_transient(error):
                raise _Down(short_error(error)) from None
            self._refusal(f"{what}: {short_error(error)}", result)
            return None

    def _do(self, what: str, action: Callable[[], Any], result: PublishResult) -> bool:
        """One MLflow call whose answer does not matter: whether it was done."""

        def done() -> bool:
            action()
            return True

        return bool(self._call(what, done, result))

    def _refusal(self, problem: str, result: PublishResult) -> None:
        result.problems.append(problem)
        if problem not in self._refused:  # once per publisher, not once per publish
            self._refused.add(problem)
            log.warning("MLflow refused %s", problem)

    # -- runs --

    def _run(self, record: Record, parent: Record | None, result: PublishResult) -> RunState | None:
        """The run of `record`: known, adopted, found by key, or created now (None: not yet)."""
        if record.key in self.states:
            return self.states[record.key]
        if parent is None and self.target.run_id:
            state = self._adopt(self.target.run_id, result)
        else:
            above = self.states.get(parent.key) if parent is not None else None
            if parent is not None and above is None:
                return None  # its parent's run does not exist yet
            experiment = above.experiment_id if above is not None else self._experiment(result)
            if experiment is None:
                return None
            state = self._find(record, experiment, result) or self._create(record, above, experiment, result)
        if state is not None:
            self.states[record.key] = state
        return state

    def _experiment(self, result: PublishResult) -> str | None:
        if self._experiment_id is None:
            name = self.target.experiment
            self._experiment_id = self._call(
                f"experiment {name}", lambda: ensure_experiment(self.client, self.tracking_uri, name), result
            )
        return self._experiment_id

    def _adopt(self, run_id: str, result: PublishResult) -> RunState | None:
        run = self._call(f"run {run_id}", partial(self._operators_run, run_id), result)
        return self._state(run, adopted=True, result=result) if run is not None else None

    def _operators_run(self, run_id: str) -> Any:
        """The run `MLFLOW_RUN_ID` names; bad input when the server does not hold it."""
        try:
            return self.client.get_run(run_id)
        except Exception as error:
            if error_code(error) == "RESOURCE_DOES_NOT_EXIST":
                raise InputError(
                    "MLFLOW_RUN_ID",
                    f"no run {run_id} at {self.tracking_uri}",
                    f"unset MLFLOW_RUN_ID or point {ENV_TRACKING_URI} at the server that holds it",
                ) from None
            raise

    def _find(self, record: Record, experiment: str, result: PublishResult) -> RunState | None:
        runs = self._search(record, experiment, result)
        return self._state(runs[0], adopted=False, result=result) if runs else None

    def _search(self, record: Record, experiment: str, result: PublishResult) -> list[Any]:
        """The runs carrying `record`'s key, oldest first (more than one: a create that was retried)."""
        query = f"tags.`{RECORD_KEY}` = '{record.key}'"
        found = self._call(
            f"run search for {record.name}",
            lambda: self.client.search_runs([experiment], filter_string=query, max_results=10),
            result,
        )
        return sorted(found or [], key=lambda run: (run.info.start_time, run.info.run_id))

    def _create(
        self, record: Record, parent: RunState | None, experiment: str, result: PublishResult
    ) -> RunState | None:
        tags = {
            **dict(self.target.context),
            **record.tags,
            RECORD_KEY: record.key,
            "layerpilot.version": __version__,
        }
        if parent is not None:
            tags[MLFLOW_PARENT_RUN_ID] = parent.run_id
        start = record.data.start_time
        created = self._call(
            f"run {record.name}",
            lambda: self.client.create_run(experiment, start_time=start, tags=tags, run_name=record.name),
            result,
        )
        if created is None:
            return None
        result.count("runs")
        # MLflow retries a request whose answer it lost: a second run may carry the same key. The
        # oldest is the record's run; later twins are deleted.
        runs = self._search(record, experiment, result) or [created]
        for twin in runs[1:]:
            self._do(
                f"duplicate run {twin.info.run_id}",
                partial(self.client.delete_run, twin.info.run_id),
                result,
            )
        if runs[0].info.run_id != created.info.run_id:
            return self._state(runs[0], adopted=False, result=result)
        return RunState(created.info.run_id, experiment, adopted=False, fresh=True, tags=dict(tags))

    def _state(self, run: Any, *, adopted: bool, result: PublishResult) -> RunState:
        """What a run MLflow already had holds: params, tags, status, every metric point."""
        run_id = run.info.run_id
        seen: dict[str, set[tuple[int, int]]] = {}
        for key in run.data.metrics:
            history = self._call(
                f"metric {key} of run {run_id}",
                partial(self.client.get_metric_history, run_id, key),
                result,
            )
            seen[key] = {(m.step, m.timestamp) for m in history or []}
        return RunState(
            run_id,
            str(run.info.experiment_id),
            adopted=adopted,
            status=str(run.info.status),
            params=dict(run.data.params),
            tags=dict(run.data.tags),
            seen=seen,
        )

    # -- what a run holds --

    def _fill(self, record: Record, state: RunState, result: PublishResult) -> None:
        self._params(record, state, result)
        self._tags(record, state, result)
        self._metrics(record, state, result)
        self._artifacts(record, state, result)
        self._status(record, state, result)

    def _params(self, record: Record, state: RunState, result: PublishResult) -> None:
        wanted = {k: v[:_PARAM_LENGTH] for k, v in record.params.items()}
        missing = [Param(k, v) for k, v in wanted.items() if k not in state.params]
        for chunk in _chunks(missing, _OTHERS_PER_REQUEST):
            if self._do(f"params of {record.name}", partial(self._batch, state, params=chunk), result):
                state.params.update({p.key: p.value for p in chunk})
                result.count("params", len(chunk))
        differ = sorted(k for k, v in wanted.items() if state.params.get(k, v) != v)
        if differ:
            self._refusal(f"params of {record.name}: {', '.join(differ)} differ from the run's", result)

    def _tags(self, record: Record, state: RunState, result: PublishResult) -> None:
        # An adopted run's own tags stand (the operator finds its runs by them): only fill in.
        changed = {
            k: v
            for k, v in record.tags.items()
            if state.tags.get(k) != v and not (state.adopted and k in state.tags)
        }
        entries = [RunTag(k, v) for k, v in changed.items()]
        for chunk in _chunks(entries, _OTHERS_PER_REQUEST):
            if self._do(f"tags of {record.name}", partial(self._batch, state, tags=chunk), result):
                state.tags.update({t.key: t.value for t in chunk})
                result.count("tags", len(chunk))

    def _metrics(self, record: Record, state: RunState, result: PublishResult) -> None:
        points, offset = record.points(state.offset)
        fresh = [
            Metric(metric_key(p.key), p.value, p.timestamp, p.step)
            for p in points
            if (p.step, p.timestamp) not in state.seen.get(metric_key(p.key), set())
        ]
        for chunk in _chunks(fresh, _METRICS_PER_REQUEST):
            if not self._do(f"metrics of {record.name}", partial(self._batch, state, metrics=chunk), result):
                return  # refused: these points stay unpublished; the next publish tries them again
            for metric in chunk:
                state.seen.setdefault(metric.key, set()).add((metric.step, metric.timestamp))
            result.count("metricPoints", len(chunk))
        state.offset = offset

    def _artifacts(self, record: Record, state: RunState, result: PublishResult) -> None:
        for local, folder, run_path in _files(record):
            there = self._listed(state, folder, result)
            if there is None:
                continue
            size = local.stat().st_size
            if run_path in there and (there[run_path] == size or state.adopted):
                continue
            if self._do(
                f"artifact {run_path} of {record.name}",
                partial(self.client.log_artifact, state.run_id, str(local), folder),
                result,
            ):
                there[run_path] = size
                result.count("artifacts")

    def _listed(self, state: RunState, folder: str | None, result: PublishResult) -> dict[str, int] | None:
        """The files in one folder of the run's artifacts, by path, with their sizes (read once)."""
        key = folder or ""
        if key not in state.files and state.fresh:
            state.files[key] = {}
        if key not in state.files:
            found = self._call(
                f"artifacts of run {state.run_id}",
                lambda: self.client.list_artifacts(state.run_id, folder),
                result,
            )
            if found is None:
                return None
            state.files[key] = {item.path: int(item.file_size or 0) for item in found if not item.is_dir}
        return state.files[key]

    def _status(self, record: Record, state: RunState, result: PublishResult) -> None:
        if state.adopted or record.status == state.status:
            return
        if record.status == RUNNING:
            done = self._do(
                f"status of {record.name}",
                lambda: self.client.update_run(state.run_id, status=RUNNING),
                result,
            )
        else:
            end = record.data.end_time
            done = self._do(
                f"status of {record.name}",
                lambda: self.client.set_terminated(state.run_id, record.status, end_time=end),
                result,
            )
        if done:
            state.status = record.status
            result.count("statuses")

    def _batch(self, state: RunState, **entries: Any) -> None:
        self.client.log_batch(state.run_id, **entries)

    # -- the registration --

    def _register(self, record: Record, state: RunState, result: PublishResult) -> None:
        wanted = record.registration
        assert wanted is not None
        patch_dir = Path(wanted.patch_dir)
        registered = self._call(
            f"registration of {wanted.name}",
            lambda: register_patch(
                self.client,
                self.tracking_uri,
                wanted,
                patch_dir if patch_dir.is_absolute() else record.directory / patch_dir,
                run_id=state.run_id,
                experiment_id=state.experiment_id,
                runs=self._stage_runs(state, result),
            ),
            result,
        )
        if registered is None:
            return
        version, created = registered
        result.registered.append(version)
        result.count("versions", int(created))
        tags = {review.REGISTERED_MODEL: wanted.name, review.MODEL_VERSION: version["version"]}
        if any(state.tags.get(k) != v for k, v in tags.items()) and self._do(
            f"tags of {record.name}",
            lambda: self._batch(state, tags=[RunTag(k, v) for k, v in tags.items()]),
            result,
        ):
            state.tags.update(tags)

    def _stage_runs(self, state: RunState, result: PublishResult) -> dict[str, str]:
        """The source run and its children by stage (`probe`, `train`, `eval`): what a review links."""
        query = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{state.run_id}'"
        children = self._call(
            f"children of run {state.run_id}",
            lambda: self.client.search_runs(
                [state.experiment_id],
                filter_string=query,
                order_by=["attributes.start_time ASC"],
                max_results=1000,
            ),
            result,
        )
        stages = {
            run.data.tags[review.STAGE]: run.info.run_id
            for run in children or []
            if review.STAGE in run.data.tags
        }
        return {
            "source run": state.run_id,
            **{s: stages[s] for s in ("probe", "train", "eval") if s in stages},
        }

    # -- what is left --

    def _left(self, records: list[tuple[Record, Record | None]]) -> dict[str, int]:
        left: Counter[str] = Counter()
        for record, _ in records:
            state = self.states.get(record.key)
            files = list(_files(record))
            left["runs"] += state is None
            left["metricPoints"] += len(record.points(state.offset if state else 0)[0])
            left["artifacts"] += sum(
                1
                for _, folder, run_path in files
                if not state or run_path not in state.files.get(folder or "", {})
            )
            left["statuses"] += bool(state and not state.adopted and state.status != record.status)
            left["registrations"] += bool(
                record.registration and (state is None or review.MODEL_VERSION not in state.tags)
            )
        return {kind: n for kind, n in left.items() if n}

    def _write(self, result: PublishResult) -> None:
        """`published.json`: where the work directory is in MLflow, rewritten when that changes."""
        data = PUBLISH_FIELDS.json(result, only=PUBLISHED)
        path = self.workdir / PUBLISHED_FILE
        try:
            if path.is_file() and json.loads(path.read_text()) == data:
                return
            write_json(path, data)
        except OSError as error:  # a full disk must not fail a job for a file about MLflow
            log.warning("cannot write %s: %s", path, first_line(error))


def publish(
    workdir: Path, tracking_uri: str | None = None, *, retry: RetryPolicy | None = None
) -> PublishResult:
    """Publish `workdir` once (`layerpilot mlflow sync`)."""
    if not workdir.is_dir():
        raise InputError("WORKDIR", f"{workdir} is not a directory", "pass the work directory of a job")
    return Publisher(workdir, tracking_uri, retry=retry).publish()


def _target(root: Record, given: str | None) -> Tracking:
    """Where to publish: `--tracking-uri`, else the record's (with credentials from the environment)."""
    tracking = root.tracking or Tracking("", "layerpilot")
    if given:
        return replace(tracking, tracking_uri=check_tracking_uri(given, "--tracking-uri"))
    if not tracking.tracking_uri:
        raise InputError(
            "--tracking-uri",
            f"{root.directory} was recorded without MLflow (--no-mlflow)",
            "pass --tracking-uri URI to publish it",
        )
    # The record keeps the URI without credentials; the environment may hold the same one with them.
    env = os.environ.get(ENV_TRACKING_URI) or ""
    return (
        replace(tracking, tracking_uri=env) if without_credentials(env) == tracking.tracking_uri else tracking
    )


def _files(record: Record) -> Iterator[tuple[Path, str | None, str]]:
    """The files a record shows: each with its folder in the run (a directory's files under its
    folder) and its path there."""
    for path, folder in record.artifacts():
        if path.is_file():
            placed = [(path, folder)]
        else:
            inner = sorted(p for p in path.rglob("*") if p.is_file())
            placed = [
                (f, "/".join([*filter(None, [folder]), *f.parent.relative_to(path).parts]) or None)
                for f in inner
            ]
        for local, where in placed:
            yield local, where, f"{where}/{local.name}" if where else local.name


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)
