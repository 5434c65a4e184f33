"""Probe units: `base`, `full` and one per candidate layer, each an independent run.

The halving probe adds rung units, `K@S`: layer K trained to step S of a `probe.steps` schedule
(continued by the next rung from its checkpoint); at the full length a rung unit is the layer's
exact unit itself, so exact and halving share their results. With `probe.seeds` N > 1, every
training unit also runs as `U#1` … `U#N-1`, with `training.seed` + J (`base`, an evaluation, once).

Every unit writes `partials/<unit>.json` under the probe directory and is identified by the probe
hash of its spec (`service.spec.fingerprint`), so a finished unit is never run twice and a unit
never resumes a run left by other settings. It also keeps a record (`service.record`) in its run
directory, `runs/<layer>`: one child run of the probe per layer and seed, whose halving rungs
continue it. Units run in a local process pool (`service.probe.pool`) or one per Kubernetes pod
(`--layer-index`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from service.errors import InputError
from service.files import atomic_write, write_json
from service.models.stack import inspect_stack
from service.models.weights import model_fingerprint
from service.patch import PATCH_TENSORS
from service.progress import SILENT, Progress
from service.ranks import is_main, main_first
from service.record import Record
from service.scoring import score
from service.spec.fingerprint import fingerprint
from service.spec.indices import check_layer_indices
from service.spec.models import LayerAdaptationSpec
from service.training.resident import ResidentModel
from service.training.rundir import CHECKPOINTS
from service.training.trainer import train

PARTIALS = "partials"
RUNS = "runs"
_UNIT = re.compile(r"^(base|full|\d+)(?:@(\d+))?(?:#(\d+))?$")


@dataclass(frozen=True)
class Unit:
    """One probe unit: `base`, `full` or a layer index (`what`), trained to step `stop` of the
    probe's schedule (a halving rung; None: the whole `probe.steps`), with `training.seed` + `seed`.

    Written `K@S#J` (`3`, `full#1`, `3@5`, `3@5#1`): in partial results, `--layer-index` and the
    report's `unitSeconds`.

    >>> unit = Unit.parse("3@5#1")
    >>> unit.layer, unit.stop, unit.seed, str(unit), unit.label
    (3, 5, 1, '3@5#1', 'layer 3 to step 5 (seed +1)')
    >>> str(Unit.of(3, stop=20, probe_steps=20)), Unit.parse("full#2").label, str(Unit.parse("base"))
    ('3', 'full (seed +2)', 'base')
    """

    what: str
    stop: int | None = None
    seed: int = 0

    @classmethod
    def parse(cls, text: str) -> Unit:
        """A unit from its written form; ValueError when it is not one."""
        found = _UNIT.match(text.strip().lower())
        if found is None:
            raise ValueError(f"'{text}' is not a probe unit")
        what, stop, seed = found.groups()
        return cls(str(int(what)) if what.isdigit() else what, int(stop) if stop else None, int(seed or 0))

    @classmethod
    def of(cls, layer: int, *, stop: int | None = None, probe_steps: int | None = None) -> Unit:
        """Layer `layer` trained to `stop` of the probe's schedule: its exact unit at the full length."""
        whole = stop is None or (probe_steps is not None and stop >= probe_steps)
        return cls(str(layer), None if whole else stop)

    def __str__(self) -> str:
        return self.what + (f"@{self.stop}" if self.stop else "") + (f"#{self.seed}" if self.seed else "")

    @property
    def layer(self) -> int | None:
        return int(self.what) if self.what.isdigit() else None

    @property
    def label(self) -> str:
        """How a unit is named in progress and logs."""
        seed = f" (seed +{self.seed})" if self.seed else ""
        if self.layer is None:
            return self.what + seed
        return f"layer {self.layer}" + (f" to step {self.stop}" if self.stop else "") + seed

    @property
    def stem(self) -> str:
        """`layer-3-step-5-seed-1` for `3@5#1` (`base`, `full`, `layer-3`): its file names."""
        name = self.what if self.layer is None else f"layer-{self.layer}"
        name += f"-step-{self.stop}" if self.stop else ""
        return name + (f"-seed-{self.seed}" if self.seed else "")

    def with_seed(self, seed: int) -> Unit:
        return replace(self, seed=seed)

    def seeds(self, count: int) -> list[Unit]:
        """This unit run with each of `count` seeds (the first is the spec's own `training.seed`)."""
        return [self.with_seed(j) for j in range(count)]

    @property
    def run(self) -> Unit:
        """The run this unit continues: its layer (or `full`, `base`) and seed, at any rung."""
        return replace(self, stop=None)


BASE, FULL = Unit("base"), Unit("full")


def candidate_layers(spec: LayerAdaptationSpec, num_layers: int) -> list[int]:
    if spec.probe.layers == "all":
        return list(range(num_layers))
    return check_layer_indices(list(spec.probe.layers), num_layers, field="probe.layers")


def parse_unit(text: str, candidates: Sequence[int], seeds: int = 1) -> Unit:
    """`base`, `full` or a candidate layer index (`#J` for seed J of `probe.seeds`), as given to
    `--layer-index`.

    `job` picks the unit from `JOB_COMPLETION_INDEX`, so the pods of one Kubernetes Indexed Job with
    `completions = len(units)` share a command line and each runs its own unit.

    >>> [str(parse_unit(text, [0, 1], seeds=3)) for text in ("full", "1", "1#2")]
    ['full', '1', '1#2']
    """
    units = units_for(candidates, seeds)
    if text.strip().lower() == "job":
        index = os.environ.get("JOB_COMPLETION_INDEX", "")
        if not index.isdigit() or int(index) >= len(units):
            raise InputError(
                "--layer-index",
                f"job needs JOB_COMPLETION_INDEX in 0..{len(units) - 1}, got '{index}'",
                "run it in an Indexed Job, or name the unit",
            )
        return units[int(index)]
    try:
        unit = Unit.parse(text)
    except ValueError:
        unit = None
    if unit is not None and unit in units:
        return unit
    more = f", with #1…#{seeds - 1} for the other seeds" if seeds > 1 else ""
    raise InputError(
        "--layer-index",
        f"'{text}' is not a probe unit",
        f"use base, full, job or a candidate layer ({', '.join(map(str, candidates))}){more}",
    )


def units_for(candidates: Sequence[int], seeds: int = 1) -> list[Unit]:
    """All units of an exact probe, longest first (so a pool finishes sooner).

    >>> [str(u) for u in units_for([0, 1])], [str(u) for u in units_for([3], seeds=2)]
    (['full', '0', '1', 'base'], ['full', 'full#1', '3', '3#1', 'base'])
    """
    return [*FULL.seeds(seeds), *[u for i in candidates for u in Unit.of(i).seeds(seeds)], BASE]


def partial_path(out_dir: Path, unit: Unit) -> Path:
    """`partials/layer-3-step-5-seed-1.json` for `3@5#1` (`base.json`, `full.json`, `layer-3.json`)."""
    return out_dir / PARTIALS / f"{unit.stem}.json"


def run_path(out_dir: Path, unit: Unit) -> Path:
    """A unit's run directory (training and record): one per layer and seed, which its halving rungs
    continue in turn."""
    return out_dir / RUNS / unit.run.stem


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
    resident: ResidentModel | None = None,
) -> dict[str, Any]:
    """Run one probe unit and write its partial result and record; returns the partial.

    `progress` sees the unit's own `train` and `eval` phases. Under a distributed launcher every
    rank trains; only the main process evaluates, records, cleans up and writes the partial (the
    others return the partial without a score). With `resident` (a probe worker's), the unit trains
    and evaluates the model kept loaded there, and puts its base weights back when done.
    """
    try:
        return _run_unit(spec, unit, out_dir, keep_runs=keep_runs, progress=progress, resident=resident)
    finally:
        if resident is not None:
            resident.restore()


def _run_unit(
    spec: LayerAdaptationSpec,
    unit: Unit,
    out_dir: Path,
    *,
    keep_runs: bool,
    progress: Progress,
    resident: ResidentModel | None,
) -> dict[str, Any]:
    stack = inspect_stack(spec.model)
    candidates = candidate_layers(spec, len(stack))
    probe_hash = fingerprint(spec, "probe")
    started = time.perf_counter()
    partial: dict[str, Any] = {
        "unit": str(unit),
        "probeFingerprint": probe_hash,
        "model": spec.model.uri,
        "numLayers": len(stack),
        "layersPath": stack.path,
        "candidates": candidates,
        "steps": spec.probe.steps,
        "learningRate": spec.algorithm.learning_rate,
    }
    run_dir = run_path(out_dir, unit)
    with main_first():  # every rank then resumes from the same claimed directory
        if is_main():
            _claim_run_dir(run_dir, probe_hash)
    record = _unit_record(run_dir, unit, spec) if is_main() else None
    if unit == BASE:
        if record is None:
            return partial
        result = score(spec, None, resident, progress=progress)
        steps = 0
    else:
        layers = list(range(len(stack))) if unit.run.what == "full" else [int(unit.what)]
        if unit.seed:  # another seed of the same probe: its results keep the probe's hash
            spec = spec.model_copy(deep=True)
            spec.training.seed += unit.seed
        trained = train(
            spec,
            layers,
            run_dir,
            resume=True,
            max_steps=spec.probe.steps,
            progress=progress,
            record=record,
            learning_rate=spec.algorithm.learning_rate,  # the shared rate: C(k) compares like with like
            stop_at=unit.stop,  # a halving rung: the next rung continues this schedule
            resident=resident,
        )
        if record is None:
            return partial
        result = score(spec, run_dir, resident, progress=progress)
        steps = trained.global_step
        partial["trainedSteps"] = trained.global_step
        partial["deltas"] = trained.deltas.relative_json()
        partial["trainMetrics"] = trained.metrics
        if not keep_runs and unit.stop is None:
            drop_weights(run_dir)
    partial["score"] = result.score
    # Measured where the model is (training hashed it for the patch already): a merge needs no weights.
    partial["baseFingerprint"] = model_fingerprint(spec.model)
    partial["numItems"] = result.num_items
    partial["itemScores"] = result.item_scores  # paired intervals need every unit's per-item scores
    partial["seconds"] = round(time.perf_counter() - started, 3)
    write_json(partial_path(out_dir, unit), partial)
    record.log_metrics({"probe/score": result.score, "probe/seconds": partial["seconds"]}, step=steps)
    record.end()
    return partial


def _unit_record(run_dir: Path, unit: Unit, spec: LayerAdaptationSpec) -> Record:
    """The unit's child run of the probe: one per layer and seed, continued by its halving rungs."""
    return Record.start(
        run_dir,
        f"probe {unit.run.stem}",
        params={"unit": str(unit.run), "steps": spec.probe.steps},
        tags={"layerpilot.probe_unit": str(unit.run)},
    )


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
