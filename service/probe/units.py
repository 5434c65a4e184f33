"""Probe units: `base`, `full` and one per candidate layer, each an independent run.

The halving probe adds rung units, `K@S`: layer K trained to step S of a `probe.steps` schedule
(continued by the next rung from its checkpoint); at the full length a rung unit is the layer's
exact unit itself, so exact and halving share their results. With `probe.seeds` N > 1, every
training unit also runs as `U#1` … `U#N-1`, with `training.seed` + J (`base`, an evaluation, once).

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
Unit = str  # "base", "full", a layer index as text, "K@S" (layer K to step S); "#J" for seed + J


def candidate_layers(spec: LayerAdaptationSpec, num_layers: int) -> list[int]:
    if spec.probe.layers == "all":
        return list(range(num_layers))
    return check_layer_indices(list(spec.probe.layers), num_layers, field="probe.layers")


def parse_unit(text: str, candidates: Sequence[int], seeds: int = 1) -> Unit:
    """`base`, `full` or a candidate layer index (`#J` for seed J of `probe.seeds`), as given to
    `--layer-index`.

    `job` picks the unit from `JOB_COMPLETION_INDEX`, so the pods of one Kubernetes Indexed Job with
    `completions = len(units)` share a command line and each runs its own unit.

    >>> parse_unit("full", [0, 1]), parse_unit("1", [0, 1]), parse_unit("1#2", [0, 1], seeds=3)
    ('full', '1', '1#2')
    """
    value = text.strip().lower()
    if value == "job":
        units = units_for(candidates, seeds)
        index = os.environ.get("JOB_COMPLETION_INDEX", "")
        if not index.isdigit() or int(index) >= len(units):
            raise SpecError(
                "--layer-index",
                f"job needs JOB_COMPLETION_INDEX in 0..{len(units) - 1}, got '{index}'",
                "run it in an Indexed Job, or name the unit",
            )
        return units[int(index)]
    if value in units_for(candidates, seeds):
        return value
    if value.isdigit() and int(value) in candidates:
        return str(int(value))
    more = f", with #1…#{seeds - 1} for the other seeds" if seeds > 1 else ""
    raise SpecError(
        "--layer-index",
        f"'{text}' is not a probe unit",
        f"use base, full, job or a candidate layer ({', '.join(map(str, candidates))}){more}",
    )


def units_for(candidates: Sequence[int], seeds: int = 1) -> list[Unit]:
    """All units of an exact probe, longest first (so a pool finishes sooner).

    >>> units_for([0, 1]), units_for([3], seeds=2)
    (['full', '0', '1', 'base'], ['full', 'full#1', '3', '3#1', 'base'])
    """
    return [*seed_units("full", seeds), *[u for i in candidates for u in seed_units(str(i), seeds)], "base"]


def seed_units(unit: Unit, seeds: int) -> list[Unit]:
    """`unit` run with each of `seeds` seeds (the first is the spec's own `training.seed`)."""
    return [unit, *(f"{unit}#{j}" for j in range(1, seeds))]


def unit_seed(unit: Unit) -> int:
    """How far past `training.seed` a unit's seed is (0 for the spec's own)."""
    return int(unit.partition("#")[2] or 0)


def rung_unit(layer: int, steps: int, probe_steps: int) -> Unit:
    """Layer `layer` trained to `steps` of the probe's schedule: its exact unit at the full length.

    >>> rung_unit(3, 5, 20), rung_unit(3, 20, 20)
    ('3@5', '3')
    """
    return str(layer) if steps >= probe_steps else f"{layer}@{steps}"


def _stop(unit: Unit) -> tuple[str, int | None]:
    layer, _, steps = unit.partition("#")[0].partition("@")
    return layer, int(steps) if steps else None


def unit_label(unit: Unit) -> str:
    """How a unit is named in progress and logs.

    >>> unit_label("3"), unit_label("full"), unit_label("3@5"), unit_label("3@5#1"), unit_label("full#2")
    ('layer 3', 'full', 'layer 3 to step 5', 'layer 3 to step 5 (seed +1)', 'full (seed +2)')
    """
    layer, stop = _stop(unit)
    seed = f" (seed +{unit_seed(unit)})" if unit_seed(unit) else ""
    if not layer.isdigit():
        return layer + seed
    return f"layer {layer}" + (f" to step {stop}" if stop else "") + seed


def partial_path(out_dir: Path, unit: Unit) -> Path:
    """`partials/layer-3-step-5-seed-1.json` for `3@5#1` (`base.json`, `full.json`, `layer-3.json`)."""
    layer, stop = _stop(unit)
    name = layer if layer in ("base", "full") else f"layer-{int(layer)}" + (f"-step-{stop}" if stop else "")
    name += f"-seed-{unit_seed(unit)}" if unit_seed(unit) else ""
    return out_dir / PARTIALS / f"{name}.json"


def run_path(out_dir: Path, unit: Unit) -> Path:
    """A unit's training directory: one per layer and seed, which its halving rungs continue in turn."""
    layer, _ = _stop(unit)
    return out_dir / RUNS / partial_path(out_dir, f"{layer}#{unit_seed(unit)}").stem


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
        layer, stop = _stop(unit)
        layers = list(range(len(stack))) if layer == "full" else [int(layer)]
        if unit_seed(unit):  # another seed of the same probe: its results keep the probe's hash
            spec = spec.model_copy(deep=True)
            spec.training.seed += unit_seed(unit)
        run_dir = run_path(out_dir, unit)
        with main_first():  # every rank then resumes from the same claimed directory
            if is_main():
                _claim_run_dir(run_dir, probe_hash)
        trained = train(
            spec, layers, run_dir, resume=True, max_steps=spec.probe.steps, progress=progress,
            learning_rate=spec.algorithm.learning_rate,  # the shared rate: C(k) compares like with like
            stop_at=stop,  # a halving rung: the next rung continues this schedule
        )  # fmt: skip
        if not is_main():
            return record
        result = evaluate(spec, patch_dir=run_dir, progress=progress)
        record["trainedSteps"] = trained.global_step
        record["deltas"] = trained.deltas.relative_json()
        record["trainMetrics"] = trained.metrics
        if not keep_runs and stop is None:
            drop_weights(run_dir)
    record["score"] = result.score
    record["numItems"] = result.num_items
    record["itemScores"] = result.item_scores  # paired intervals need every unit's per-item scores
    record["seconds"] = round(time.perf_counter() - started, 3)
    write_json(partial_path(out_dir, unit), record)
    return record


def drop_weights(run_dir: Path) -> None:
    """The probe needs a unit's score, not its weights: a big model's per-layer patches add up fast."""
    shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
    (run_dir / PATCH_TENSORS).unlink(missing_ok=True)


def _claim_run_dir(run_dir: Path, probe_hash: str) -> None:
    """A unit resumes its own interrupted run, never one left by a probe with other settings."""
    marker = run_dir / "probe_fingerprint"
    if run_dir.exists() and (not marker.is_file() or marker.read_text().strip() != probe_hash):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(marker, lambda tmp: tmp.write_text(probe_hash + "\n"))
