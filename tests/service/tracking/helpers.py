"""Records made by hand and published, for tests of what MLflow ends up holding."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from service.record import Record, Registration, Tracking
from service.tracking.publish import publish


def register_by_publishing(
    root: Path, tracking_uri: str, experiment: str, patch_dir: Path, name: str, **review: Any
) -> dict[str, Any]:
    """A finished record asking to register `patch_dir` as a version of `name`, published once."""
    workdir = root / f"job-{uuid.uuid4().hex[:8]}"
    record = Record.start(workdir, "adapt", tracking=Tracking(tracking_uri, experiment))
    record.request_registration(Registration(name, str(patch_dir), "candidate", **review))
    record.end()
    result = publish(workdir)
    assert result.complete, result.line()
    return result.registered[0]
