"""What did not reach MLflow: counted for a one-line summary and appended to a JSONL file.

Tracking never costs finished work: a call that still fails after its retries is recorded here,
with its payload, instead of raised.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

UNLOGGED_FILE = "mlflow_unlogged.jsonl"

log = logging.getLogger("service.tracking")


@dataclass(frozen=True)
class NotLogged:
    """A tracking call that did not reach MLflow; `payload` holds what it carried."""

    kind: str  # metric | param | tag | artifact | run | status
    count: int
    run_id: str | None
    what: str
    error: str
    transient: bool
    payload: dict[str, Any]


@dataclass
class Ledger:
    """The calls that did not reach MLflow: counted for the summary, appended to a JSONL file."""

    path: Path
    failures: list[NotLogged] = field(default_factory=list)

    def record(self, failure: NotLogged, quiet: bool = False) -> None:
        self.failures.append(failure)
        if not quiet:  # one warning per outage, not one per skipped step
            log.warning("MLflow: not logged %s (%s): %s", failure.what, failure.kind, failure.error)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as handle:
                handle.write(json.dumps(asdict(failure), default=str) + "\n")
        except OSError as error:  # a full disk must not turn a tracking hiccup into a failed run
            log.warning("cannot write %s: %s", self.path, error)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for failure in self.failures:
            counts[failure.kind] = counts.get(failure.kind, 0) + failure.count
        return counts

    def summary(self, tracking_uri: str) -> str | None:
        """`MLflow at URI unreachable: not logged: 12 metrics, 3 artifacts (kept in …)`, or None.

        >>> ledger = Ledger(Path("/w/unlogged.jsonl"))
        >>> ledger.failures.append(NotLogged("metric", 12, None, "12 metrics", "timed out", True, {}))
        >>> ledger.summary("http://mlflow:5000")
        'MLflow at http://mlflow:5000 unreachable: not logged: 12 metrics (kept in /w/unlogged.jsonl)'
        """
        counts = self.counts()
        if not counts:
            return None
        parts = ", ".join(f"{n} {_plural(kind, n)}" for kind, n in counts.items())
        state = "unreachable" if any(f.transient for f in self.failures) else "refused some calls"
        return f"MLflow at {tracking_uri} {state}: not logged: {parts} (kept in {self.path})"


def _plural(kind: str, count: int) -> str:
    """
    >>> _plural("metric", 2), _plural("status", 2), _plural("artifact", 1)
    ('metrics', 'statuses', 'artifact')
    """
    if count == 1:
        return kind
    return kind + ("es" if kind.endswith(("s", "x", "sh", "ch")) else "s")
