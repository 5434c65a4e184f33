"""The replay behind `layerpilot mlflow sync` (see `service.tracking.sync`): each ledger line sent
again, idempotently, with placeholder run ids mapped to the runs created for them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from service.errors import LayerpilotError
from service.tracking import review
from service.tracking.client import (
    LOCAL_RUN_PREFIX,
    client_for,
    ensure_experiment,
    is_number,
    metric_key,
    now_ms,
)
from service.tracking.ledger import (
    NotLogged,
    counts,
    describe,
)
from service.tracking.registry import Registry
from service.tracking.retries import RetryPolicy
from service.tracking.uris import local_db_path

LOCAL_RUN_TAG = "layerpilot.local_run_id"  # on a run a sync created: the placeholder it replaces
_BATCH_METRICS, _BATCH_OTHERS = 1000, 100  # MLflow's log_batch limits

SYNC_FIELDS: dict[str, str] = {
    "workdir": "the work directory synced",
    "ledger": "its ledger file (`mlflow_unlogged.jsonl`)",
    "trackingUri": "the store replayed into (null when there was nothing to sync)",
    "calls": "calls (ledger lines) found",
    "replayedCalls": "calls replayed (or found already in the store) and removed from the ledger",
    "replayed": "items sent to MLflow, by kind (metric, param, tag, artifact, run, status, registration)",
    "alreadyThere": "items found in the store already and not sent again, by kind",
    "runsCreated": "placeholder id (`local-…`) → the id of the run created for it",
    "registered": "versions registered by the sync (name, version, runId)",
    "leftCalls": "calls still in the ledger (replay failed or MLflow went away)",
    "left": "items still in the ledger, by kind",
    "error": "why calls are left, in one line, or null",
    "seconds": "wall time of the sync",
}
"""Every field of `layerpilot mlflow sync --json` (the reference is generated from this)."""


class NotReplayable(LayerpilotError):
    """A ledger line that cannot be replayed as it stands (a file gone, a run nobody created)."""


@dataclass
class SyncResult:
    workdir: Path
    ledger: Path
    tracking_uri: str | None = None
    calls: int = 0
    replayed_calls: int = 0
    replayed: dict[str, int] = field(default_factory=dict)
    already_there: dict[str, int] = field(default_factory=dict)
    runs_created: dict[str, str] = field(default_factory=dict)
    registered: list[dict[str, str]] = field(default_factory=list)
    left: list[NotLogged] = field(default_factory=list)
    unreadable: int = 0
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.left and not self.unreadable

    def to_json(self) -> dict[str, Any]:
        return {
            "workdir": str(self.workdir),
            "ledger": str(self.ledger),
            "trackingUri": self.tracking_uri,
            "calls": self.calls,
            "replayedCalls": self.replayed_calls,
            "replayed": self.replayed,
            "alreadyThere": self.already_there,
            "runsCreated": self.runs_created,
            "registered": self.registered,
            "leftCalls": len(self.left) + self.unreadable,
            "left": counts(self.left),
            "error": self.error,
            "seconds": round(self.seconds, 1),
        }

    def line(self) -> str:
        """The outcome in one line."""
        if self.calls == 0 and not self.unreadable:
            return f"nothing to sync in {self.workdir}"
        sent = describe(self.replayed) or "nothing new"
        there = f"; already there: {describe(self.already_there)}" if self.already_there else ""
        if self.ok:
            return f"synced {self.calls} calls into {self.tracking_uri}: {sent}{there}; the ledger is empty"
        left = describe(counts(self.left)) or f"{self.unreadable} unreadable lines"
        return (
            f"synced {self.replayed_calls} of {self.calls + self.unreadable} calls into "
            f"{self.tracking_uri} ({sent}); left in {self.ledger}: {left} — {self.error}"
        )


class Replay:
    """Redoes ledger lines one by one against one store, remembering what it created and read."""

    def __init__(self, tracking_uri: str, workdir: Path, retry: RetryPolicy, result: SyncResult) -> None:
        db = local_db_path(tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri
        self.workdir = workdir
        self.retry = retry
        self.result = result
        self.client = client_for(tracking_uri)
        self.down = False
        self.ids: dict[str, str] = {}  # placeholder -> run id
        self._not_created: set[str] = set()  # placeholders no run was found for
        self._history: dict[tuple[str, str], set[tuple[int, int]]] = {}  # (run, key) -> (step, timestamp)
        self._runs: dict[str, Any] = {}  # run id -> its Run, read once

    # -- bookkeeping --

    def _count(self, into: dict[str, int], kind: str, n: int) -> None:
        if n:
            into[kind] = into.get(kind, 0) + n

    def sent(self, kind: str, n: int = 1) -> None:
        self._count(self.result.replayed, kind, n)

    def there(self, kind: str, n: int = 1) -> None:
        self._count(self.result.already_there, kind, n)

    def resolved(self, entry: NotLogged) -> NotLogged:
        """`entry` as it stays in the ledger: naming runs by their ids once a sync created them."""
        data = entry.to_json()
        if entry.kind == "run":
            parent = entry.payload.get("parent")
            if parent in self.ids:
                data["payload"] = {**entry.payload, "parent": self.ids[parent]}
        elif entry.run_id is None and entry.local_run_id in self.ids:
            data["run_id"] = self.ids[entry.local_run_id]
        return NotLogged.from_json(data)

    def run_of(self, ref: str | None) -> str:
        """The id of the run `ref` names: a run id, or a placeholder a sync created a run for."""
        if not ref:
            raise NotReplayable("it names no run (a ledger line from before layerpilot kept run references)")
        if not ref.startswith(LOCAL_RUN_PREFIX):
            return ref
        if ref not in self.ids:
            found = None if ref in self._not_created else self._created_earlier(ref)
            if found is None:
                self._not_created.add(ref)
                raise NotReplayable(f"its run {ref} was never created (its `run` line is not in the ledger)")
            self.ids[ref] = found
        return self.ids[ref]

    def _created_earlier(self, local: str) -> str | None:
        """The run an earlier sync created for `local` (a job still running kept logging to it)."""
        experiments = [e.experiment_id for e in self.client.search_experiments(max_results=1000)]
        for start in range(0, len(experiments), 100):  # the store's limit on experiments per search
            found = self.client.search_runs(
                experiments[start : start + 100],
                filter_string=f"tags.`{LOCAL_RUN_TAG}` = '{local}'",
                max_results=1,
            )
            if found:
                return str(found[0].info.run_id)
        return None

    def _run(self, run_id: str) -> Any:
        if run_id not in self._runs:
            self._runs[run_id] = self.client.get_run(run_id)
        return self._runs[run_id]

    # -- one ledger line --

    def apply(self, entry: NotLogged) -> None:
        if entry.kind == "run":
            self.create_run(entry)
            return
        run_id = self.run_of(entry.run_id or entry.local_run_id)
        handlers: dict[str, Callable[[str, dict[str, Any]], None]] = {
            "metric": self.metrics,
            "param": self.params,
            "tag": self.tags,
            "artifact": self.artifact,
            "status": self.status,
            "registration": self.registration,
        }
        if entry.kind not in handlers:
            raise NotReplayable(f"unknown kind '{entry.kind}'")
        handlers[entry.kind](run_id, entry.payload)

    def create_run(self, entry: NotLogged) -> None:
        local, data = entry.local_run_id, entry.payload
        if not local or "name" not in data:
            raise NotReplayable("a run line without a placeholder id (written before layerpilot kept them)")
        parent = self.run_of(data["parent"]) if data.get("parent") else None
        if parent is not None:
            experiment = str(self._run(parent).info.experiment_id)
        else:
            experiment = data.get("experimentId") or ensure_experiment(
                self.client, self.tracking_uri, data.get("experiment") or "layerpilot"
            )
        found = self.client.search_runs(
            [experiment], filter_string=f"tags.`{LOCAL_RUN_TAG}` = '{local}'", max_results=1
        )
        if found:  # created by an earlier sync that stopped before rewriting the ledger
            self.ids[local] = found[0].info.run_id
            self.there("run")
            return
        tags = {**data.get("tags", {}), LOCAL_RUN_TAG: local}
        if parent is not None:
            tags[MLFLOW_PARENT_RUN_ID] = parent
        run = self.client.create_run(
            experiment, start_time=data.get("startTime"), tags=tags, run_name=data["name"]
        )
        self.ids[local] = run.info.run_id
        self.result.runs_created[local] = run.info.run_id
        self.sent("run")

    def metrics(self, run_id: str, data: dict[str, Any]) -> None:
        fresh: list[Metric] = []
        for key, value, step, timestamp in _points(data):
            seen = self._seen(run_id, key)
            if (step, timestamp) in seen or (timestamp is None and any(s == step for s, _ in seen)):
                self.there("metric")
                continue
            fresh.append(Metric(key, value, timestamp or now_ms(), step))
        for chunk in _chunks(fresh, _BATCH_METRICS):
            self.client.log_batch(run_id, metrics=chunk)
            for metric in chunk:
                self._seen(run_id, metric.key).add((metric.step, metric.timestamp))
        self.sent("metric", len(fresh))

    def _seen(self, run_id: str, key: str) -> set[tuple[int, int]]:
        if (run_id, key) not in self._history:
            history = self.client.get_metric_history(run_id, key)
            self._history[run_id, key] = {(m.step, m.timestamp) for m in history}
        return self._history[run_id, key]

    def params(self, run_id: str, data: dict[str, Any]) -> None:
        present = self._run(run_id).data.params
        fresh = [Param(str(k), str(v)) for k, v in data.items() if present.get(str(k)) != str(v)]
        self.there("param", len(data) - len(fresh))
        for chunk in _chunks(fresh, _BATCH_OTHERS):
            self.client.log_batch(run_id, params=chunk)
        present.update({p.key: p.value for p in fresh})
        self.sent("param", len(fresh))

    def tags(self, run_id: str, data: dict[str, Any]) -> None:
        entries = [RunTag(str(k), str(v)) for k, v in data.items()]
        for chunk in _chunks(entries, _BATCH_OTHERS):
            self.client.log_batch(run_id, tags=chunk)
        self.sent("tag", len(entries))

    def artifact(self, run_id: str, data: dict[str, Any]) -> None:
        if "kept" in data:  # a JSON artifact, kept as a file beside the ledger
            path = self.workdir / data["kept"]
            folder = str(Path(data["name"]).parent)
            artifact_path = None if folder == "." else folder
        else:
            inside = self.workdir / data["workdirPath"] if data.get("workdirPath") else None
            path = inside if inside is not None and inside.exists() else Path(data["path"])
            artifact_path = data.get("artifactPath")
        if not path.exists():
            raise NotReplayable(f"{path} is gone")
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)
        self.sent("artifact")

    def status(self, run_id: str, data: dict[str, Any]) -> None:
        run = self._run(run_id)
        if run.info.status == data["status"]:
            self.there("status")
            return
        self.client.set_terminated(run_id, data["status"], end_time=data.get("endTime"))
        self.sent("status")

    def registration(self, run_id: str, data: dict[str, Any]) -> None:
        request = dict(data.get("review") or {})
        name = request.pop("name", None)
        if not name:
            raise NotReplayable("the ledger lacks the registration's request: use `layerpilot register`")
        found = self.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if found:
            self.there("registration")
            return
        inside = self.workdir / data["workdirPath"] if data.get("workdirPath") else None
        patch_dir = inside if inside is not None and inside.is_dir() else Path(data["patchDir"])
        if not patch_dir.is_dir():
            raise NotReplayable(f"the patch {patch_dir} is gone")
        runs = {role: self.run_of(ref) for role, ref in (request.pop("runs", None) or {}).items() if ref}
        experiment = str(self._run(run_id).info.experiment_id)
        registered = Registry(self.tracking_uri, retry=self.retry).register_patch(
            patch_dir, name=name, run_id=run_id, experiment_id=experiment, runs=runs, **request
        )
        version = str(registered["version"])
        tags = {review.REGISTERED_MODEL: name, review.MODEL_VERSION: version}
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.result.registered.append({"name": name, "version": version, "runId": run_id})
        self.sent("registration")


def _points(data: dict[str, Any]) -> Iterator[tuple[str, float, int, int | None]]:
    """A metric line's points; a line from before points were kept has no timestamps."""
    if "points" in data:
        for key, value, step, timestamp in data["points"]:
            yield str(key), float(value), int(step), int(timestamp)
    elif "byLayer" in data:
        for layer, values in data["byLayer"].items():
            for key, value in values.items():
                if is_number(value):
                    yield metric_key(key), float(value), int(layer), None
    else:
        for key, value in (data.get("metrics") or {}).items():
            yield str(key), float(value), int(data.get("step") or 0), None


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
