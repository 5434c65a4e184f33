"""Exact-probe units: `base`, `full` and one per candidate layer, each an independent run.

Every unit writes `partials/<unit>.json` under the probe directory and is identified by the probe
hash of its spec (`service.spec.fingerprint`), so a finished unit is never run twice and a unit
never resumes a run left by other settings. Units run in a local process pool (`service.probe.exact`)
or one per Kubernetes pod (`--layer-index`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.errors import SpecError
from service.evaluation import evaluate
from service.files import atomic_write, write_json
from service.models.stack import inspect_stack
from service.patch import PATCH_TENSORS
from service.progress import SILENT, Progress
from service.ranks import is_main, main_first
from service.spec.fingerprint import fingerprint
from service.spec.indices import check_layer_indices
from service.spec.models import LayerAdaptationSpec
from service.training.rundir import CHECKPOINTS
from service.training.trainer import train

PARTIALS = "partials"
RUNS = "runs"
Unit = str  # "base", "full" or a layer index as text


def candidate_layers(spec: LayerAdaptationSpec, num_layers: int) -> list[int]:
    if spec.probe.layers == "all":
        return list(range(num_layers))
    return check_layer_indices(list(spec.probe.layers), num_layers, field="probe.layers")


def parse_unit(text: str, candidates: Sequence[int]) -> Unit:
    """`base`, `full` or a candidate layer index, as given to `--layer-index`.

    `job` picks the unit from `JOB_COMPLETION_INDEX`, so the pods of one Kubernetes Indexed Job with
    `completions = len(units)` share a command line and each runs its own unit.

    >>> parse_unit("full", [0, 1]), parse_unit("1", [0, 1])
    ('full', '1')
    """
    value = text.strip().lower()
    if value == "job":
        units = units_for(candidates)
        index = os.environ.get("JOB_COMPLETION_INDEX", "")
        if not index.isdigit() or int(index) >= len(units):
            raise SpecError(
                "--layer-index",
                f"job needs JOB_COMPLETION_INDEX in 0..{len(units) - 1}, got '{index}'",
                "run it in an Indexed Job, or name the unit",
            )
        return units[int(index)]
    if value in ("base", "full"):
        return value
    if value.isdigit() and int(value) in candidates:
        return str(int(value))
    raise SpecError(
        "--layer-index",
        f"'{text}' is not a probe unit",
        f"use base, full, job or a candidate layer ({', '.join(map(str, candidates))})",
    )


def units_for(candidates: Sequence[int]) -> list[Unit]:
    """All units of an exact probe, longest first (so a pool finishes sooner)."""
    return ["full", *[str(i) for i in candidates], "base"]


def unit_label(unit: Unit) -> str:
    """How a unit is named in progress and logs.

    >>> unit_label("3"), unit_label("full")
    ('layer 3', 'full')
    """
    return f"layer {unit}" if unit.isdigit() else unit


def partial_path(out_dir: Path, unit: Unit) -> Path:
    name = unit if unit in ("base", "full") else f"layer-{int(unit)}"
    return out_dir / PARTIALS / f"{name}.json"


def read_partial(out_dir: Path, unit: Unit, probe_hash: str) -> dict[str, Any] | None:
    path = partial_path(out_dir, unit)
    if not path.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a half-written file from a killed run: redo the unit
    return data if data.get("probeFingerprint") == probe_hash else None


def run_unit(
    spec: LayerAdaptationSpec,
    unit: Unit,
    out_dir: Path,
    *,
    keep_runs: bool = False,
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Run one probe unit and write its partial result; returns it.

    `progress` sees the unit's own `train` and `eval` phases. Under a distributed launcher every
    rank trains; only the main process evaluates, cleans up and writes the partial (the others
    return the record without a score).
    """
    stack = inspect_stack(spec.model)
    candidates = candidate_layers(spec, len(stack))
    probe_hash = fingerprint(spec, "probe")
    started = time.perf_counter()
    record: dict[str, Any] = {
        "unit": unit,
        "probeFingerprint": probe_hash,
        "model": spec.model.uri,
        "numLayers": len(stack),
        "layersPath": stack.path,
        "candidates": candidates,
        "steps": spec.probe.steps,
        "learningRate": spec.algorithm.learning_rate,
    }
    if unit == "base":
        if not is_main():
            return record
        result = evaluate(spec, progress=progress)
    else:
        layers = list(range(len(stack))) if unit == "full" else [int(unit)]
        run_dir = out_dir / RUNS / partial_path(out_dir, unit).stem
        with main_first():  # every rank then resumes from the same claimed directory
            if is_main():
                _claim_run_dir(run_dir, probe_hash)
        trained = train(
            spec, layers, run_dir, resume=True, max_steps=spec.probe.steps, progress=progress,
            learning_rate=spec.algorithm.learning_rate,  # the shared rate: C(k) compares like with like
        )  # fmt: skip
        if not is_main():
            return record
        result = evaluate(spec, patch_dir=run_dir, progress=progress)
        record["trainedSteps"] = trained.global_step
        record["deltas"] = trained.deltas.relative_json()
        record["trainMetrics"] = trained.metrics
        if not keep_runs:
            # The probe needs the score, not the weights: a big model's per-layer patches add up fast.
            shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
            (run_dir / PATCH_TENSORS).unlink(missing_ok=True)
    record["score"] = result.score
    record["numItems"] = result.num_items
    record["itemScores"] = result.item_scores  # paired intervals need every unit's per-item scores
    record["seconds"] = round(time.perf_counter() - started, 3)
    write_json(partial_path(out_dir, unit), record)
    return record


def _claim_run_dir(run_dir: Path, probe_hash: str) -> None:
    """A unit resumes its own interrupted run, never one left by a probe with other settings."""
    marker = run_dir / "probe_fingerprint"
    if run_dir.exists() and (not marker.is_file() or marker.read_text().strip() != probe_hash):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(marker, lambda tmp: tmp.write_text(probe_hash + "\n"))
