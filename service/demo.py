"""The demo job on the shipped model: probe, train the best layer, evaluate, register, apply.

Its spec is `examples/demo.yaml`, shipped inside the package as `service/assets/demo.yaml` (a link
to that file in a checkout), so the demo and the example users copy can never drift apart.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from service.adapt import PROBE_DIR, TRAIN_DIR, adapt
from service.errors import LayerpilotError
from service.patch import apply_patch
from service.progress import SILENT, Progress
from service.spec.loading import load_spec
from service.spec.models import LayerAdaptationSpec
from service.tracking.runs import Tracker
from service.tracking.uris import local_store_uri

DEMO_SPEC = Path(__file__).resolve().parent / "assets" / "demo.yaml"


def demo_spec() -> LayerAdaptationSpec:
    """The demo's spec: `examples/demo.yaml`."""
    if not DEMO_SPEC.is_file():
        raise LayerpilotError(f"the demo spec is missing from {DEMO_SPEC}; reinstall layerpilot")
    return load_spec(DEMO_SPEC)


def run_demo(
    workdir: Path,
    *,
    max_steps: int | None = None,
    probe_steps: int | None = None,
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Run the demo into `workdir` (replacing an earlier demo there) and summarise it."""
    spec = demo_spec()
    if probe_steps is not None:
        spec.probe.steps = probe_steps
    applied_dir = workdir / "model"
    for stale in (workdir / PROBE_DIR, workdir / TRAIN_DIR, applied_dir):
        shutil.rmtree(stale, ignore_errors=True)
    # The demo keeps its own store (and registry) in the work directory, whatever the environment says.
    tracker = Tracker(local_store_uri(workdir), spec.mlflow.experiment, local_dir=workdir)
    result = adapt(spec, workdir, max_steps=max_steps, progress=progress, tracker=tracker)
    apply_patch(spec.model.uri, workdir / TRAIN_DIR, applied_dir)
    summary = result.to_json()
    summary.update(
        layers=result.layers,
        steps=result.training.global_step,
        before=result.eval_before,
        after=result.eval_after,
        appliedDir=str(applied_dir),
        trainSeconds=round(result.training.seconds, 1),
    )
    return summary
