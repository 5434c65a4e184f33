"""The demo job on a shipped model: probe, train the best layer, evaluate, register, apply.

Its spec is `examples/demo.yaml`, or `examples/agent.yaml` for the agent demo (`service.spec.demo`):
the files users copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from service.adapt import PROBE_DIR, TRAIN_DIR, adapt
from service.patch import apply_patch
from service.progress import SILENT, Progress
from service.spec.demo import demo_spec
from service.tracking.publishing import tracking_for
from service.tracking.uris import local_store_uri


def run_demo(
    workdir: Path,
    name: str = "arith",
    *,
    max_steps: int | None = None,
    probe_steps: int | None = None,
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Run the demo into `workdir` (replacing an earlier demo there) and summarise it."""
    spec = demo_spec(name)
    if probe_steps is not None:
        spec.probe.steps = probe_steps
    applied_dir = workdir / "model"
    for stale in (workdir / PROBE_DIR, workdir / TRAIN_DIR, applied_dir):
        shutil.rmtree(stale, ignore_errors=True)
    # The demo keeps its own store (and registry) in the work directory, whatever the environment says.
    tracking = tracking_for(spec.mlflow, workdir, tracking_uri=local_store_uri(workdir))
    result = adapt(spec, workdir, max_steps=max_steps, progress=progress, tracking=tracking)
    apply_patch(spec.model.uri, workdir / TRAIN_DIR, applied_dir)
    summary = result.to_json()
    summary.update(
        layers=result.layers,
        steps=result.training.global_step,
        before=result.evaluation.eval_before,
        after=result.evaluation.eval_after,
        appliedDir=str(applied_dir),
        trainSeconds=round(result.training.seconds, 1),
    )
    return summary
