"""What a publish did, and what MLflow does not hold yet: `layerpilot mlflow sync --json`, and the
`published.json` every publish leaves in the work directory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.fields import Fields

SYNC_COMMAND = "layerpilot mlflow sync"
_WORDS = {"metricPoints": ("metric point", "metric points"), "statuses": ("status", "statuses")}


@dataclass
class PublishResult:
    workdir: Path
    tracking_uri: str
    experiment_id: str | None = None
    runs: dict[str, str] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    registered: list[dict[str, Any]] = field(default_factory=list)
    left: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.left and self.error is None

    def count(self, kind: str, n: int = 1) -> None:
        if n:
            self.sent[kind] = self.sent.get(kind, 0) + n

    def to_json(self) -> dict[str, Any]:
        return PUBLISH_FIELDS.json(self)

    def line(self) -> str:
        """The outcome in one line."""
        if self.error is not None:
            return (
                f"{self.error}: not published yet: {describe(self.left)}; {self.workdir} keeps all of it "
                f"(publish it with `{SYNC_COMMAND} {self.workdir}`)"
            )
        sent = describe(self.sent)
        where = f"{self.workdir} is in MLflow at {self.tracking_uri}"
        if not self.left:
            return f"{where}{f' (sent {sent})' if sent else ', nothing to send'}"
        return f"{where} except {describe(self.left)}{f' (sent {sent})' if sent else ''}"


PUBLISH_FIELDS: Fields[PublishResult] = Fields(
    {
        "workdir": ("the work directory published", lambda r: str(r.workdir)),
        "trackingUri": ("where it was published", lambda r: r.tracking_uri),
        "experimentId": ("the experiment of its top run", lambda r: r.experiment_id),
        "runs": (
            "each record (its directory, relative to the work directory) → its MLflow run id",
            lambda r: r.runs,
        ),
        "sent": (
            "what this publish sent, by kind (`runs` created, `params`, `tags`, `metricPoints`, "
            "`artifacts`, `statuses`, `versions` registered)",
            lambda r: r.sent,
        ),
        "registered": (
            "the versions registered from the work directory's runs (name, version, alias, url, …)",
            lambda r: r.registered,
        ),
        "left": (
            "what is not in MLflow yet, by kind (`runs`, `metricPoints`, `artifacts`, `statuses`, "
            "`registrations`); empty when everything is",
            lambda r: r.left,
        ),
        "complete": ("true when everything in the work directory is in MLflow", lambda r: r.complete),
        "problems": ("requests MLflow refused, one line each (the rest was published)", lambda r: r.problems),
        "error": ("why the publish stopped early (MLflow unreachable), or null", lambda r: r.error),
        "seconds": ("wall time of the publish", lambda r: round(r.seconds, 2)),
    }
)
"""Every field of `layerpilot mlflow sync --json` (the reference is generated from this)."""

PUBLISHED = ("trackingUri", "experimentId", "runs", "registered", "complete")
"""The fields `published.json` holds: where the work directory is in MLflow, and whether all of it is."""


def describe(counts: Mapping[str, int]) -> str:
    """
    >>> describe({"runs": 1, "metricPoints": 12, "statuses": 1})
    '1 run, 12 metric points, 1 status'
    """
    words = [_WORDS.get(kind, (kind[:-1], kind))[0 if n == 1 else 1] for kind, n in counts.items()]
    return ", ".join(f"{n} {word}" for n, word in zip(counts.values(), words, strict=True))
