"""The demo job on the shipped model: evaluate, RL-train the selected layer, evaluate, apply."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.delta import apply_patch
from service.evaluation import evaluate
from service.selection import layers_for_training
from service.spec import LayerAdaptationSpec, load_spec
from service.training import StepHook, train

DEMO_SPEC = Path(__file__).resolve().parent.parent / "examples" / "demo.yaml"


def demo_spec() -> LayerAdaptationSpec:
    """examples/demo.yaml from a checkout; the same settings built in when installed elsewhere."""
    if DEMO_SPEC.is_file():
        return load_spec(DEMO_SPEC)
    return load_spec(
        {
            "dataset": {"evalSize": 300},
            "algorithm": {"numGenerations": 8, "maxCompletionLength": 4, "learningRate": 5.0e-5},
            "selection": {"strategy": "mid-k", "k": 1},
            "training": {"maxSteps": 60, "batchSize": 32, "saveSteps": 20},
        }
    )


def run_demo(
    workdir: Path,
    *,
    max_steps: int | None = None,
    on_step: StepHook | None = None,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run the demo into `workdir` (replacing an earlier demo there) and summarise it."""
    spec = demo_spec()
    train_dir, applied_dir = workdir / "train", workdir / "model"
    for stale in (train_dir, applied_dir):
        shutil.rmtree(stale, ignore_errors=True)
    layers = layers_for_training(spec)
    log(f"evaluating the base model on {spec.dataset.eval_size} held-out problems")
    before = evaluate(spec)
    log(f"RL-training layer(s) {layers} with GRPO")
    result = train(spec, layers, train_dir, max_steps=max_steps, on_step=on_step)
    log("evaluating base + layer patch")
    after = evaluate(spec, patch_dir=train_dir)
    apply_patch(spec.model.uri, train_dir, applied_dir)
    return {
        "layers": result.layers,
        "steps": result.global_step,
        "before": before.score,
        "after": after.score,
        "patchDir": str(train_dir),
        "appliedDir": str(applied_dir),
        "trainSeconds": round(result.seconds, 1),
    }
