"""The work directory is the record of a job: every run MLflow will show is written here first.

A *record* is a directory holding `record.json` and `metrics.jsonl`:

- `record.json` (rewritten atomically at each change): the run's `key` (a stable id; the MLflow run
  carries it as tag `layerpilot.record_key`, so a publish finds its run again instead of creating a
  second one), its `name`, `status`, `startTime` and `endTime`, `params`, `tags`, the `artifacts`
  it shows (files, with the folder they go to in the run), a `registration` to make from it (a
  layer patch to register as a model version), and, at the top of a work directory, `tracking`:
  where it is published (`trackingUri`, `experiment`, and `runId` when the run is someone else's,
  the operator's);
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
from pathlib import Path
from types import TracebackType
from typing import Any

from service.files import write_json

RECORD_FILE = "record.json"
METRICS_FILE = "metrics.jsonl"
RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"
# Directories a walk never enters: checkpoints are large and hold no records.
_SKIPPED = frozenset({"checkpoints", "__pycache__"})

RECORD_FIELDS: dict[str, str] = {
    "key": "stable id of the run: the MLflow run carries it as tag `layerpilot.record_key`",
    "name": "the run's name",
    "status": "`RUNNING`, `FINISHED`, `FAILED` or `KILLED`",
    "startTime": "when the record was started (ms since the epoch)",
    "endTime": "when it ended (ms), or null",
    "params": "the run's params (text)",
    "tags": "the run's tags",
    "artifacts": "files the run shows: `path` (relative to the record's directory, or absolute) and "
    "`folder` (where in the run's artifacts; null for the top)",
    "registration": "a layer patch to register from this run: `name`, `patchDir`, `alias`, `review` "
    "(what the version's description shows)",
    "tracking": "top record only: `trackingUri` (without credentials), `experiment`, `runId` when the "
    "run belongs to the operator (`MLFLOW_RUN_ID`), `context` (MLflow's tags of where the job ran); "
    "null when the job ran with `--no-mlflow`",
}
"""Every field of `record.json` (the reference is generated from this)."""


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
    run_id: str | None = None  # someone else's run (the operator's): logged into, never ended
    context: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "trackingUri": self.tracking_uri,
            "experiment": self.experiment,
            "runId": self.run_id,
            "context": dict(self.context),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tracking:
        return cls(
            str(data["trackingUri"]),
            str(data["experiment"]),
            data.get("runId"),
            dict(data.get("context") or {}),
        )


@dataclass(frozen=True)
class Point:
    """One metric point as MLflow keeps it."""

    key: str
    value: float
    step: int
    timestamp: int


class Record:
    """The record in one directory; each change goes to its files at once."""

    def __init__(self, directory: Path, data: dict[str, Any]) -> None:
        self.directory = directory
        self.data = data

    # -- opening --

    @classmethod
    def read(cls, directory: Path) -> Record | None:
        """The record in `directory`, or None when it holds none (or only a torn one)."""
        try:
            data = json.loads((directory / RECORD_FILE).read_text())
        except (OSError, ValueError):
            return None
        return cls(directory, data) if isinstance(data, dict) and data.get("key") else None

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
        params = {str(k): str(v) for k, v in (params or {}).items()}
        found = cls.read(directory)
        if found is not None and found.params == params:
            found.data.update(status=RUNNING, endTime=None)
            found.data["tags"] = {**found.tags, **{str(k): str(v) for k, v in (tags or {}).items()}}
            if tracking is not None:
                found.data["tracking"] = tracking.to_json()
            found.save()
            return found
        if found is not None:
            found.set_aside()
        record = cls(
            directory,
            {
                "key": uuid.uuid4().hex,
                "name": name,
                "status": RUNNING,
                "startTime": now_ms(),
                "endTime": None,
                "params": params,
                "tags": {str(k): str(v) for k, v in (tags or {}).items()},
                "artifacts": [],
                "registration": None,
                "tracking": tracking.to_json() if tracking is not None else None,
            },
        )
        (directory / METRICS_FILE).unlink(missing_ok=True)
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
        return str(self.data["key"])

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def params(self) -> dict[str, str]:
        return dict(self.data.get("params") or {})

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.data.get("tags") or {})

    @property
    def tracking(self) -> Tracking | None:
        found = self.data.get("tracking")
        return Tracking.from_json(found) if found else None

    @property
    def registration(self) -> dict[str, Any] | None:
        found = self.data.get("registration")
        return dict(found) if found else None

    def artifacts(self) -> list[tuple[Path, str | None]]:
        """(file or directory, folder in the run) for every artifact that exists now."""
        found = []
        for entry in self.data.get("artifacts") or []:
            path = self.directory / entry["path"]
            if path.exists():
                found.append((path, entry.get("folder")))
        return found

    # -- changes --

    def save(self) -> None:
        write_json(self.directory / RECORD_FILE, self.data)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.data["params"] = {**self.params, **{str(k): str(v) for k, v in params.items()}}
        self.save()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        new = {str(k): str(v) for k, v in tags.items()}
        if any(self.tags.get(k) != v for k, v in new.items()):
            self.data["tags"] = {**self.tags, **new}
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
        entry = {"path": _relative(path, self.directory), "folder": folder}
        listed = list(self.data.get("artifacts") or [])
        if entry not in listed:
            self.data["artifacts"] = [*listed, entry]
            self.save()

    def request_registration(self, request: Mapping[str, Any]) -> None:
        """Register a layer patch from this run as a model version (once; a publish does it)."""
        self.data["registration"] = dict(request)
        self.save()

    def end(self, status: str = FINISHED) -> None:
        self.data.update(status=status, endTime=now_ms())
        self.save()

    def __enter__(self) -> Record:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.end(ended_status(kind))

    # -- reading the points back --

    def points(self, offset: int = 0) -> tuple[list[Point], int]:
        """The points appended after byte `offset`, and the offset after the last whole line."""
        path = self.directory / METRICS_FILE
        try:
            with path.open("rb") as handle:
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
            if (
                not entry.is_dir(follow_symlinks=False)
                or entry.name in _SKIPPED
                or entry.name.startswith(".")
            ):
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


def _relative(path: Path, directory: Path) -> str:
    try:
        return str(path.absolute().relative_to(directory.absolute()))
    except ValueError:
        return str(path.absolute())


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value
