"""`adapt`: probe → select → train only the selected layers → evaluate → (register).

Every stage writes into one work directory, so a Job that dies half way is re-run with the same
command and continues: finished probe units are reused and training resumes from its newest
checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.evaluation import evaluate
from service.probe import UnitHook, run_probe
from service.report import ProbeReport
from service.spec import LayerAdaptationSpec, ProbeMode
from service.training import StepHook, TrainResult, train

PROBE_DIR = "probe"
TRAIN_DIR = "train"
RESULT_JSON = "adapt_result.json"


@dataclass
class AdaptResult:
    report: ProbeReport
    training: TrainResult
    eval_before: float
    eval_after: float
    eval_items: int
    workdir: Path
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return self.training.layers

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.report.model,
            "selected": self.layers,
            "strategy": self.report.strategy,
            "probeMode": self.report.mode,
            "layers": [layer.to_json() for layer in sorted(self.report.layers, key=lambda x: x.index)],
            "baselineScore": self.report.baseline_score,
            "fullScore": self.report.full_score,
            "evalBefore": self.eval_before,
            "evalAfter": self.eval_after,
            "evalItems": self.eval_items,
            "trainedSteps": self.training.global_step,
            "layerDeltas": {k: v["relative"] for k, v in self.training.deltas["layers"].items()},
            "probeDir": str(self.workdir / PROBE_DIR),
            "patchDir": str(self.workdir / TRAIN_DIR),
            "seconds": round(self.seconds, 1),
            **self.extra,
        }


def adapt(
    spec: LayerAdaptationSpec,
    workdir: Path,
    *,
    mode: str | None = None,
    parallel: int | None = None,
    max_steps: int | None = None,
    on_unit: UnitHook | None = None,
    on_step: StepHook | None = None,
    log: Callable[[str], Any] = print,
) -> AdaptResult:
    """Run the whole job into `workdir`; returns what a reviewer needs to decide on the result."""
    started = time.perf_counter()
    probe_dir, train_dir = workdir / PROBE_DIR, workdir / TRAIN_DIR
    chosen_mode = mode or spec.probe.mode
    log(f"probing the layers of {spec.model.uri} ({chosen_mode} mode)")
    report = run_probe(spec, probe_dir, mode=chosen_mode, parallel=parallel, on_unit=on_unit)
    layers = report.selected
    log(f"selected layers {layers} ({report.strategy}); RL-training them")
    training = train(spec, layers, train_dir, resume=True, max_steps=max_steps, on_step=on_step)
    log("evaluating base + layer patch")
    after = evaluate(spec, patch_dir=train_dir)
    if chosen_mode == ProbeMode.exact.value and report.baseline_score is not None:
        before = report.baseline_score  # the probe's `base` unit is this very evaluation
    else:
        log("evaluating the base model")
        before = evaluate(spec).score
    result = AdaptResult(
        report=report,
        training=training,
        eval_before=before,
        eval_after=after.score,
        eval_items=after.num_items,
        workdir=workdir,
        seconds=time.perf_counter() - started,
    )
    (workdir / RESULT_JSON).write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result
