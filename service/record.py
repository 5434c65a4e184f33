"""The work directory is the record of a job: every run MLflow will show is written here first.

A *record* is a directory holding `record.json` and `metrics.jsonl`:

- `record.json` (rewritten atomically at each change; `RECORD_FIELDS`): the run's `key` (a stable
  id; the MLflow run carries it as tag `layerpilot.record_key`, so a publish finds its run again
  instead of creating a second one), its name, status and times, params, tags, the artifacts it
  shows, a `registration` to make from it (a layer patch to register as a model version), and, at
  the top of a work directory, `tracking`: where it is published;
- `metrics.jsonl` (appended, never rewritten): one line per logged step,
  `{"step": 3, "timestamp": 1764750000000, "metrics": {"train/reward": 0.5, ...}}`.

Records nest: a record's children are the records in the directories below it, down to the next
record (an adapt's `probe/`, `train/` and `eval/`; a probe's units under `runs/`). Each process
writes only its own records, so probe units running in other processes or pods add their records
without touching anyone else's file.

Nothing here talks to MLflow: `service.tracking.publish` projects a work directory onto a tracking
server, idempotently, from these files alone; a tracking server that is down costs the record
nothing.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from types import TracebackType
from typing import Any

from service.fields import Fields
from service.files import write_json

RECORD_FILE = "record.json"
METRICS_FILE = "metrics.jsonl"
RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"
# Directories a walk never enters: checkpoints are large and hold no records.
_SKIPPED = frozenset({"checkpoints", "__pycache__"})


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Tracking:
    """Where a work directory is published: a tracking URI, an experiment, maybe a run to continue.

    `context` are the tags MLflow gives a run started where the job runs (user, source, the
    Kubernetes pod), resolved there: a later publish from elsewhere still shows where it ran.
    """

    tracking_uri: str
    experiment: str
    run_id: str | None = None  # someone else's run (the operator's): published into, never ended
    context: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return TRACKING_FIELDS.json(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tracking:
        return cls(
            data["trackingUri"], data["experiment"], data.get("runId"), dict(data.get("context") or {})
        )


TRACKING_FIELDS: Fields[Tracking] = Fields(
    {
        "trackingUri": ("the tracking server or store (never with credentials)", lambda t: t.tracking_uri),
        "experiment": ("the experiment of the top run", lambda t: t.experiment),
        "runId": (
            "the operator's run the top record continues (`MLFLOW_RUN_ID`), or null",
            lambda t: t.run_id,
        ),
        "context": (
            "MLflow's tags for a run started where the job ran (user, source, pod)",
            lambda t: dict(t.context),
        ),
    }
)


@dataclass(frozen=True)
class Registration:
    """A layer patch to register from a run as a version of `name`, and what its review shows."""

    name: str
    patch_dir: str  # absolute, or relative to the record's directory
    alias: str
    eval_before: float | None = None
    eval_after: float | None = None
    eval_items: int | None = None
    probe_layers: list[dict[str, Any]] = field(default_factory=list)  # probe_report.json `layers`
    strategy: str | None = None
    spec_hash: str | None = None
    max_new_tokens: int | None = None  # the pyfunc's default completion length
    score_name: str = "eval score"  # "success rate" for an agent's episodes
    algorithm: str | None = None  # the RL algorithm in a few words (`AlgorithmSpec.describe`)
    probe: str | None = None  # what the layers were chosen on (`ProbeReport.describe`)

    def to_json(self) -> dict[str, Any]:
        return REGISTRATION_FIELDS.json(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Registration:
        attributes = {key: attr for key, attr, _ in _REGISTRATION}
        return cls(**{attributes[key]: value for key, value in data.items() if key in attributes})


_REGISTRATION = (  # key in record.json, attribute, what it means
    ("name", "name", "the registered model"),
    ("patchDir", "patch_dir", "the layer patch (absolute, or relative to the record)"),
    ("alias", "alias", "the alias the new version gets (`candidate`)"),
    ("evalBefore", "eval_before", "eval score of the base model"),
    ("evalAfter", "eval_after", "eval score of base + layer patch (what promotion compares)"),
    ("evalItems", "eval_items", "evaluation items"),
    ("probeLayers", "probe_layers", "the probe report's `layers` (the review's per-layer table)"),
    ("strategy", "strategy", "the selection rule"),
    ("specHash", "spec_hash", "hash of the spec"),
    ("maxNewTokens", "max_new_tokens", "the pyfunc's default completion length"),
    ("scoreName", "score_name", "what the scores measure: `eval score`, or an agent's `success rate`"),
    (
        "algorithm",
        "algorithm",
        "the RL algorithm the patch was trained with (e.g. `grpo`, or GiGPO's settings)",
    ),
    (
        "probe",
        "probe",
        "the probe the layers were chosen on: its mode, the task it measured, and the report's source "
        "when the job reused a profile",
    ),
)
REGISTRATION_FIELDS: Fields[Registration] = Fields(
    {key: (meaning, attrgetter(attr)) for key, attr, meaning in _REGISTRATION}
)


@dataclass(frozen=True)
class Artifact:
    path: str  # relative to the record's directory, or absolute
    folder: str | None = None  # where in the run's artifacts (None: the top)


@dataclass
class RunData:
    """What `record.json` holds."""

    key: str
    name: str
    status: str = RUNNING
    start_time: int = field(default_factory=now_ms)
    end_time: int | None = None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)
    registration: Registration | None = None
    tracking: Tracking | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunData:
        registration, tracking = data.get("registration"), data.get("tracking")
        return cls(
            key=str(data["key"]),
            name=str(data["name"]),
            status=str(data["status"]),
            start_time=int(data["startTime"]),
            end_time=data.get("endTime"),
            params=dict(data.get("params") or {}),
            tags=dict(data.get("tags") or {}),
            artifacts=[Artifact(a["path"], a.get("folder")) for a in data.get("artifacts") or []],
            registration=Registration.from_json(registration) if registration else None,
            tracking=Tracking.from_json(tracking) if tracking else None,
        )


RECORD_FIELDS: Fields[RunData] = Fields(
    {
        "key": (
            "stable id of the run: the MLflow run carries it as tag `layerpilot.record_key`",
            lambda d: d.key,
        ),
        "name": ("the run's name", lambda d: d.name),
        "status": ("`RUNNING`, `FINISHED`, `FAILED` or `KILLED`", lambda d: d.status),
        "startTime": ("when the record was started (ms since the epoch)", lambda d: d.start_time),
        "endTime": ("when it ended (ms), or null", lambda d: d.end_time),
        "params": ("the run's params (text)", lambda d: d.params),
        "tags": ("the run's tags", lambda d: d.tags),
        "artifacts": (
            "files the run shows: `path` (relative to the record's directory, or absolute) and `folder` "
            "(where in the run's artifacts; null for the top)",
            lambda d: [{"path": a.path, "folder": a.folder} for a in d.artifacts],
        ),
        "registration": (
            "a layer patch to register from this run, once, with its review (below); or null",
            lambda d: d.registration.to_json() if d.registration else None,
        ),
        "tracking": (
            "top record only: where the work directory is published (below); null when the job ran "
            "with `--no-mlflow`",
            lambda d: d.tracking.to_json() if d.tracking else None,
        ),
    }
)
"""Every field of `record.json` (the reference is generated from this)."""


@dataclass(frozen=True)
class Point:
    """One metric point as MLflow keeps it."""

    key: str
    value: float
    step: int
    timestamp: int


class Record:
    """The record in one directory; each change goes to its files at once."""

    def __init__(self, directory: Path, data: RunData) -> None:
        self.directory = directory
        self.data = data

    # -- opening --

    @classmethod
    def read(cls, directory: Path) -> Record | None:
        """The record in `directory`, or None when it holds none (or only a torn one)."""
        try:
            return cls(directory, RunData.from_json(json.loads((directory / RECORD_FILE).read_text())))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @classmethod
    def start(
        cls,
        directory: Path,
        name: str,
        *,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        tracking: Tracking | None = None,
    ) -> Record:
        """Continue the record in `directory` (a re-run of the same job), or start a new one.

        A record whose params differ is set aside (`record.before-<key>.json`): MLflow never changes
        a run's params, so other settings are another run.
        """
        params = _texts(params)
        found = cls.read(directory)
        if found is not None and found.params == params:
            found.data.status, found.data.end_time = RUNNING, None
            found.data.tags = {**found.tags, **_texts(tags)}
            found.data.tracking = tracking or found.data.tracking
            found.save()
            return found
        if found is not None:
            found.set_aside()
        (directory / METRICS_FILE).unlink(missing_ok=True)
        record = cls(
            directory, RunData(uuid.uuid4().hex, name, params=params, tags=_texts(tags), tracking=tracking)
        )
        record.save()
        return record

    def child(
        self,
        subdir: str,
        name: str,
        *,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> Record:
        """A nested run in `subdir` of this record's directory."""
        return Record.start(self.directory / subdir, name, params=params, tags=tags)

    def set_aside(self) -> None:
        """Move this record's files out of the way (kept, no longer part of the work directory's record)."""
        for name in (RECORD_FILE, METRICS_FILE):
            path = self.directory / name
            if path.exists():
                stem, _, suffix = name.partition(".")
                path.rename(self.directory / f"{stem}.before-{self.key[:8]}.{suffix}")

    # -- what it holds --

    @property
    def key(self) -> str:
        return self.data.key

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def status(self) -> str:
        return self.data.status

    @property
    def params(self) -> dict[str, str]:
        return dict(self.data.params)

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.data.tags)

    @property
    def tracking(self) -> Tracking | None:
        return self.data.tracking

    @property
    def registration(self) -> Registration | None:
        return self.data.registration

    def artifacts(self) -> list[tuple[Path, str | None]]:
        """(file or directory, folder in the run) for every artifact that exists now."""
        paths = [(self.directory / a.path, a.folder) for a in self.data.artifacts]
        return [(path, folder) for path, folder in paths if path.exists()]

    # -- changes --

    def save(self) -> None:
        write_json(self.directory / RECORD_FILE, RECORD_FIELDS.json(self.data))

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.data.params = {**self.data.params, **_texts(params)}
        self.save()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        new = _texts(tags)
        if any(self.data.tags.get(k) != v for k, v in new.items()):
            self.data.tags = {**self.data.tags, **new}
            self.save()

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0, timestamp: int | None = None) -> None:
        """Numeric values as points at `step` (others are left out), appended in one line."""
        numbers = {str(k): float(v) for k, v in metrics.items() if _is_number(v)}
        if not numbers:
            return
        line = {"step": int(step), "timestamp": timestamp or now_ms(), "metrics": numbers}
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / METRICS_FILE).open("a") as handle:
            handle.write(json.dumps(line) + "\n")

    def log_by_layer(self, by_layer: Mapping[int, Mapping[str, Any]]) -> None:
        """Per-layer values with step = layer index, so MLflow draws them over depth."""
        stamp = now_ms()
        for layer, values in sorted(by_layer.items()):
            self.log_metrics(values, step=int(layer), timestamp=stamp)

    def add_artifact(self, path: Path, folder: str | None = None) -> None:
        """Show `path` (a file or a directory) in the run, under `folder`; the file stays where it is."""
        artifact = Artifact(_relative(path, self.directory), folder)
        if artifact not in self.data.artifacts:
            self.data.artifacts = [*self.data.artifacts, artifact]
            self.save()

    def request_registration(self, registration: Registration) -> None:
        """Register a layer patch from this run as a model version (once; a publish does it)."""
        self.data.registration = registration
        self.save()

    def end(self, status: str = FINISHED) -> None:
        self.data.status, self.data.end_time = status, now_ms()
        self.save()

    def __enter__(self) -> Record:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.status == RUNNING:  # a record that ended already keeps its end
            self.end(ended_status(kind))

    # -- reading the points back --

    def points(self, offset: int = 0) -> tuple[list[Point], int]:
        """The points appended after byte `offset`, and the offset after the last whole line."""
        try:
            with (self.directory / METRICS_FILE).open("rb") as handle:
                handle.seek(offset)
                raw = handle.read()
        except OSError:
            return [], offset
        whole = raw[: raw.rfind(b"\n") + 1]  # a line still being written waits for the next read
        found = []
        for line in whole.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a torn line from a killed process: the rest still counts
            found += [
                Point(key, float(value), int(entry["step"]), int(entry["timestamp"]))
                for key, value in entry["metrics"].items()
            ]
        return found, offset + len(whole)


def ended_status(kind: type[BaseException] | None) -> str:
    """How a block that raised `kind` (or nothing) ends its run."""
    if kind is None:
        return FINISHED
    return KILLED if issubclass(kind, KeyboardInterrupt) else FAILED


def walk(root: Path) -> Iterator[tuple[Record, Record | None]]:
    """Every record under `root` with its parent (the nearest record above it), parents first."""
    top = Record.read(root)
    if top is None:
        return
    stack: list[tuple[Path, Record]] = [(root, top)]
    yield top, None
    while stack:
        directory, parent = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError:
            continue
        for entry in entries:
            skipped = entry.name in _SKIPPED or entry.name.startswith(".")
            if skipped or not entry.is_dir(follow_symlinks=False):
                continue
            found = Record.read(Path(entry.path))
            if found is not None:
                yield found, parent
            stack.append((Path(entry.path), found or parent))


def enclosing(directory: Path) -> Record | None:
    """The nearest record at or above `directory` that says where it is published."""
    for candidate in (directory.absolute(), *directory.absolute().parents):
        found = Record.read(candidate)
        if found is not None and found.tracking is not None:
            return found
    return None


def _texts(values: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (values or {}).items()}


def _relative(path: Path, directory: Path) -> str:
    try:
        return str(path.absolute().relative_to(directory.absolute()))
    except ValueError:
        return str(path.absolute())


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value
