"""Pure status logic: what a Job's status means, and the resource's phase and conditions.

Conditions follow the Kubernetes convention (type, status, reason, message, lastTransitionTime,
observedGeneration); `lastTransitionTime` moves only when `status` changes. Four types:
`Probed`, `Trained`, `Registered` (one per stage group) and `Ready` (the whole run).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

PENDING, PROBING, TRAINING, REGISTERING, SUCCEEDED, FAILED = (
    "Pending",
    "Probing",
    "Training",
    "Registering",
    "Succeeded",
    "Failed",
)
TERMINAL: Final = (SUCCEEDED, FAILED)
PHASE_OF_STAGE: Final = {
    "plan": PROBING,
    "probe": PROBING,
    "merge": PROBING,
    "train": TRAINING,
    "register": REGISTERING,
}
CONDITION_OF_STAGE: Final = {
    "plan": "Probed",
    "probe": "Probed",
    "merge": "Probed",
    "train": "Trained",
    "register": "Registered",
}
READY: Final = "Ready"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class JobState:
    """Where a Job (or TrainJob) is: `done` and `failed` are final; `reason`/`message` say why."""

    done: bool = False
    failed: bool = False
    reason: str = ""
    message: str = ""
    failed_indexes: str = ""

    @property
    def running(self) -> bool:
        return not (self.done or self.failed)


def job_state(obj: dict[str, Any]) -> JobState:
    """Read a Job's (or a Kubeflow TrainJob's) terminal conditions.

    >>> job_state({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}).done
    True
    >>> job_state({"status": {"conditions": [{"type": "Failed", "status": "True",
    ...     "reason": "BackoffLimitExceeded", "message": "Job has reached the backoff limit"}]}})
    JobState(done=False, failed=True, reason='BackoffLimitExceeded',
             message='Job has reached the backoff limit', failed_indexes='')
    """
    status = obj.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        kind = condition.get("type")
        if kind == "Failed":
            return JobState(
                failed=True,
                reason=str(condition.get("reason") or "Failed"),
                message=str(condition.get("message") or ""),
                failed_indexes=str(status.get("failedIndexes") or ""),
            )
        if kind == "Complete":
            return JobState(done=True)
    return JobState()


def set_condition(
    conditions: list[dict[str, Any]],
    kind: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
) -> tuple[list[dict[str, Any]], bool]:
    """The conditions with `kind` set; returns (conditions, changed). Time moves only on a new status.

    >>> conds, changed = set_condition([], "Probed", "False", "Probing", "probe Job created", 1)
    >>> changed, conds[0]["type"], conds[0]["reason"]
    (True, 'Probed', 'Probing')
    >>> set_condition(conds, "Probed", "False", "Probing", "probe Job created", 1)[1]
    False
    """
    previous = next((c for c in conditions if c.get("type") == kind), None)
    entry: dict[str, Any] = {"type": kind, "status": status, "reason": reason, "message": message}
    if generation is not None:
        entry["observedGeneration"] = generation
    if previous is not None and previous.get("status") == status:
        entry["lastTransitionTime"] = previous.get("lastTransitionTime") or now()
    else:
        entry["lastTransitionTime"] = now()
    if previous is not None and {k: previous.get(k) for k in entry} == entry:
        return conditions, False
    others = [c for c in conditions if c.get("type") != kind]
    return [*others, entry], True


def one_line(text: str, limit: int = 300) -> str:
    """A message for status and events: first line, bounded."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def layer_list(text: str | None) -> list[int] | None:
    """Layers from a tag such as "3,4" (None when absent or malformed).

    >>> layer_list("3,4"), layer_list(""), layer_list(None)
    ([3, 4], None, None)
    """
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        return None
