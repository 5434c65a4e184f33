"""What did not reach MLflow: counted for a one-line summary and appended to a JSONL file.

Tracking never costs finished work: a call that still fails after its retries is recorded here,
with its payload, instead of raised. The file is also what `layerpilot mlflow sync` replays
(`service.tracking.sync`), so each line carries enough to redo its call later:

- `kind`, `count`, `what`, `error`, `transient`: what failed, how many items, why;
- `run_id`: the server's id of the run the call was for (for a `run` line: of its parent), or null;
- `local_run_id`: the placeholder of a run MLflow never created (`local-…`): a `run` line holds the
  run's own placeholder, later lines for that run name it instead of a `run_id`, and a child's
  `run` line names its parent's placeholder in `payload.parent`;
- `payload`: what the call carried — metric `points` `[key, value, step, timestamp ms]`, params,
  tags, an artifact's `path` (and `workdirPath`, relative to the workdir), a JSON artifact's `kept`
  copy, a run's `name`/`parent`/`experiment`/`experimentId`/`startTime`/`tags`, a status and its
  `endTime`, a registration's request;
- `tracking_uri`: where the call was going.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from service.files import atomic_write

UNLOGGED_FILE = "mlflow_unlogged.jsonl"
SYNC_COMMAND = "layerpilot mlflow sync"

log = logging.getLogger("service.tracking")


@dataclass(frozen=True)
class NotLogged:
    """A tracking call that did not reach MLflow; `payload` holds what it carried."""

    kind: str  # metric | param | tag | artifact | run | status | registration
    count: int
    run_id: str | None
    what: str
    error: str
    transient: bool
    payload: dict[str, Any]
    local_run_id: str | None = None  # the placeholder of a run MLflow never created
    tracking_uri: str | None = None  # stamped by the ledger that records it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NotLogged:
        """A ledger line back (unknown keys are ignored, missing new ones default).

        >>> NotLogged.from_json({"kind": "tag", "count": 1, "run_id": "r", "what": "1 tags",
        ...     "error": "timed out", "transient": True, "payload": {"a": "b"}}).local_run_id is None
        True
        """
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass
class Ledger:
    """The calls that did not reach MLflow: counted for the summary, appended to a JSONL file."""

    path: Path
    failures: list[NotLogged] = field(default_factory=list)
    tracking_uri: str | None = None

    def record(self, failure: NotLogged, quiet: bool = False) -> None:
        if failure.tracking_uri is None and self.tracking_uri is not None:
            failure = replace(failure, tracking_uri=self.tracking_uri)
        self.failures.append(failure)
        if not quiet:  # one warning per outage, not one per skipped step
            log.warning("MLflow: not logged %s (%s): %s", failure.what, failure.kind, failure.error)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as handle:
                handle.write(json.dumps(failure.to_json(), default=str) + "\n")
        except OSError as error:  # a full disk must not turn a tracking hiccup into a failed run
            log.warning("cannot write %s: %s", self.path, error)

    def counts(self) -> dict[str, int]:
        return counts(self.failures)

    def summary(self, tracking_uri: str) -> str | None:
        """`MLflow at URI unreachable: not logged: 12 metrics, 3 artifacts (kept in …; replay: …)`, or None.

        >>> ledger = Ledger(Path("/w/unlogged.jsonl"))
        >>> ledger.failures.append(NotLogged("metric", 12, None, "12 metrics", "timed out", True, {}))
        >>> ledger.summary("http://mlflow:5000")
        'MLflow at http://mlflow:5000 unreachable: not logged: 12 metrics (kept in /w/unlogged.jsonl;
         replay with `layerpilot mlflow sync /w`)'
        """
        found = self.counts()
        if not found:
            return None
        state = "unreachable" if any(f.transient for f in self.failures) else "refused some calls"
        return (
            f"MLflow at {tracking_uri} {state}: not logged: {describe(found)} "
            f"(kept in {self.path}; replay with `{SYNC_COMMAND} {self.path.parent}`)"
        )


def counts(entries: list[NotLogged]) -> dict[str, int]:
    """Items by kind, in the order kinds first appear."""
    found: dict[str, int] = {}
    for entry in entries:
        found[entry.kind] = found.get(entry.kind, 0) + entry.count
    return found


def describe(found: dict[str, int]) -> str:
    """
    >>> describe({"metric": 12, "run": 1, "status": 2})
    '12 metrics, 1 run, 2 statuses'
    """
    return ", ".join(f"{n} {_plural(kind, n)}" for kind, n in found.items())


@dataclass
class LedgerFile:
    """The ledger as read for a replay: its entries, the lines that did not parse, and how much was read."""

    path: Path
    entries: list[NotLogged]
    unreadable: list[str]
    size: int  # bytes read: lines appended after that (by a job still running) are kept on rewrite


def read_ledger(path: Path) -> LedgerFile:
    """The entries of `path` (none when it does not exist); a line that does not parse is kept aside."""
    if not path.is_file():
        return LedgerFile(path, [], [], 0)
    raw = path.read_bytes()
    entries, unreadable = [], []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            entries.append(NotLogged.from_json(json.loads(line)))
        except (ValueError, TypeError):
            unreadable.append(line)
    return LedgerFile(path, entries, unreadable, len(raw))


def rewrite_ledger(ledger: LedgerFile, left: list[NotLogged]) -> None:
    """Replace the file by `left` (and the unreadable lines) in one rename; remove it when empty.

    Lines appended after `ledger` was read stay, after the ones left.
    """
    appended = b""
    if ledger.path.is_file():
        with ledger.path.open("rb") as handle:
            handle.seek(ledger.size)
            appended = handle.read()
    lines = [*ledger.unreadable, *(json.dumps(entry.to_json(), default=str) for entry in left)]
    text = "".join(line + "\n" for line in lines).encode() + appended
    if not text.strip():
        ledger.path.unlink(missing_ok=True)
        return
    atomic_write(ledger.path, lambda tmp: tmp.write_bytes(text))


def _plural(kind: str, count: int) -> str:
    """
    >>> _plural("metric", 2), _plural("status", 2), _plural("artifact", 1)
    ('metrics', 'statuses', 'artifact')
    """
    if count == 1:
        return kind
    return kind + ("es" if kind.endswith(("s", "x", "sh", "ch")) else "s")


def metric_points(metrics: list[Any]) -> list[list[Any]]:
    """Metric points as the ledger keeps them: `[key, value, step, timestamp ms]`."""
    return [[m.key, m.value, m.step, m.timestamp] for m in metrics]


def inside(path: Path, workdir: Path) -> str | None:
    """`path` relative to the workdir when it lies inside it (a replay then finds it if the workdir moved)."""
    try:
        return str(path.absolute().relative_to(workdir.absolute()))
    except ValueError:
        return None
