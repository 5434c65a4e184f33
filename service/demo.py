"""The demo job on the shipped model: probe, train the best layer, evaluate, apply the patch."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.delta import apply_patch
from service.pipeline import PROBE_DIR, TRAIN_DIR, adapt
from service.probe import UnitHook
from service.spec import LayerAdaptationSpec, load_spec
from service.tracking import Tracker, local_store_uri
from service.training import StepHook

DEMO_SPEC = Path(__file__).resolve().parent.parent / "examples" / "demo.yaml"


def demo_spec() -> LayerAdaptationSpec:
    """examples/demo.yaml from a checkout; the same settings built in when installed elsewhere."""
    if DEMO_SPEC.is_file():
        return load_spec(DEMO_SPEC)
    return load_spec(
        {
            "dataset": {"evalSize": 300},
            "algorithm": {"numGenerations": 8, "maxCompletionLength": 4, "learningRate": 5.0e-5},
            "probe": {"mode": "exact", "steps": 30},
            "selection": {"strategy": "top-k", "k": 1},
            "training": {"maxSteps": 60, "batchSize": 32, "saveSteps": 20},
            "mlflow": {"experiment": "layerpilot-demo", "registeredModel": "demo-arith"},
        }
    )


def run_demo(
    workdir: Path,
    *,
    max_steps: int | None = None,
    probe_steps: int | None = None,
    on_unit: UnitHook | None = None,
    on_step: StepHook | None = None,
    log: Callable[[str], Any] = print,
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
    result = adapt(
        spec, workdir, max_steps=max_steps, on_unit=on_unit, on_step=on_step, log=log, tracker=tracker
    )
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
