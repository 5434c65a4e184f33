"""The halving probe: exact runs by successive halving, so the full-length runs go to contenders only.

Every candidate layer trains a short first rung and is scored on the eval items; the better half
continues from its checkpoint to the next rung, twice as long, and so on until the last rung trains
the finalists for the whole `probe.steps`. All rungs of a layer are one run scheduled for
`probe.steps` (`train(stop_at=...)`): continuing it gives the same weights as one uninterrupted run,
so a finalist's S_k and C(k) are exactly the exact probe's, and the two modes share their units
(`base`, `full`, and every layer at full length) in one probe directory.

Layers cut at an earlier rung rank below the finalists, by the rung they reached and then their
score there; they have no C(k), and `details.steps` says how far they trained. The schedule, and so the
report, follows from the spec and the partial results alone: an interrupted probe resumes rung by
rung, and its report can be rebuilt from its directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from service.errors import InputError
from service.models.stack import inspect_stack
from service.probe.exact import build_report, combine_seeds, load_records
from service.probe.pool import ProbeBoard, UnitRunner, default_parallelism
from service.probe.report import ProbeReport, rank_layers
from service.probe.units import (
    BASE,
    FULL,
    PARTIALS,
    Unit,
    candidate_layers,
    drop_weights,
    read_partial,
    run_path,
    units_for,
)
from service.progress import SILENT, Progress
from service.spec.fingerprint import fingerprint
from service.spec.models import LayerAdaptationSpec, ProbeMode
from service.training.rungs import Rung, rung_schedule


def finalists_for(spec: LayerAdaptationSpec) -> int:
    """Layers of the last, full-length rung: enough to select `selection.k` and to rank the top two."""
    return max(2, spec.selection.k)


@dataclass
class _Walk:
    """How far the partial results under a probe directory carry the schedule."""

    reached: dict[int, tuple[int, dict[str, Any]]]  # layer -> (last rung scored, its record)
    survivors: list[int]  # the layers of the first rung not fully scored (the last rung's when done)
    todo: list[Unit]  # that rung's units without a result; empty when the schedule is complete
    done: int  # rung units with a result, the unfinished rung's included


def _walk(
    spec: LayerAdaptationSpec,
    schedule: list[Rung],
    candidates: list[int],
    num_layers: int,
    result: Callable[[Unit], dict[str, Any] | None],
) -> _Walk:
    """Follow the schedule through the rung units' results (`result` of a unit, None when it has none)."""
    reached: dict[int, tuple[int, dict[str, Any]]] = {}
    survivors, seeds, done = list(candidates), spec.probe.seeds, 0
    for r, rung in enumerate(schedule):
        units = {i: Unit.of(i, stop=rung.steps, probe_steps=spec.probe.steps) for i in survivors}
        found = {u: result(u) for i in survivors for u in units[i].seeds(seeds)}
        todo = [unit for unit, record in found.items() if record is None]
        done += len(found) - len(todo)
        if todo:
            return _Walk(reached, survivors, todo, done)
        records = cast(dict[str, dict[str, Any]], {str(u): record for u, record in found.items()})
        reached.update({i: (r, combine_seeds(records, units[i], seeds)) for i in survivors})
        if r + 1 < len(schedule):
            ranks = rank_layers({i: float(reached[i][1]["score"]) for i in survivors}, num_layers)
            survivors = sorted(sorted(survivors, key=ranks.__getitem__)[: schedule[r + 1].layers])
    return _Walk(reached, survivors, [], done)


def run_halving(
    spec: LayerAdaptationSpec,
    out_dir: Path,
    *,
    parallel: int | None = None,
    keep_runs: bool = False,
    progress: Progress = SILENT,
    keep_model: bool = True,
) -> ProbeReport:
    """Run the rungs one after another (each rung's units in a process pool when `parallel` > 1;
    `base` and `full` beside the first), reusing every result already in `out_dir`, then merge.
    `keep_model` as in `run_exact`."""
    started = time.perf_counter()
    num_layers = len(inspect_stack(spec.model))
    candidates = candidate_layers(spec, num_layers)
    schedule = rung_schedule(len(candidates), spec.probe.steps, finalists_for(spec), spec.probe.rungs)
    probe_hash = fingerprint(spec, "probe")
    shared = units_for([], spec.probe.seeds)  # `full` with each seed, and `base`, as in exact mode
    total = len(shared) + sum(rung.layers for rung in schedule) * spec.probe.seeds
    board = ProbeBoard(progress, total, 0)
    progress.start("probe", total)
    progress.note("halving: " + " → ".join(f"{rung.layers} layers to step {rung.steps}" for rung in schedule))
    workers = parallel if parallel is not None else default_parallelism(len(candidates) + 2)
    with UnitRunner(
        spec, out_dir, workers=workers, keep_runs=keep_runs, board=board, keep_model=keep_model
    ) as runner:
        while True:
            walk = _walk(
                spec, schedule, candidates, num_layers, lambda u: read_partial(out_dir, u, probe_hash)
            )
            ends = [u for u in shared if read_partial(out_dir, u, probe_hash) is None]
            board.done = walk.done + len(shared) - len(ends)
            if not keep_runs:  # a layer cut from the race needs its checkpoints no more
                for layer in set(walk.reached) - set(walk.survivors):
                    for unit in Unit.of(layer).seeds(spec.probe.seeds):
                        drop_weights(run_path(out_dir, unit))
            if not ends + walk.todo:
                break
            runner.run(ends + walk.todo)
    report = merge_halving(out_dir, spec)
    report.elapsed_seconds = time.perf_counter() - started
    progress.finish("probe", f"selected {report.selected}")
    return report


def merge_halving(out_dir: Path, spec: LayerAdaptationSpec) -> ProbeReport:
    """The halving report from the partial results under `out_dir/partials`."""
    by_unit = load_records(out_dir, spec)
    first = next(iter(by_unit.values()))
    num_layers, steps = int(first["numLayers"]), spec.probe.steps
    candidates = [int(i) for i in first["candidates"]]
    schedule = rung_schedule(len(candidates), steps, finalists_for(spec), spec.probe.rungs)
    walk = _walk(spec, schedule, candidates, num_layers, lambda unit: by_unit.get(str(unit)))
    seeds = spec.probe.seeds
    missing = [u for u in units_for([], seeds) if str(u) not in by_unit] + walk.todo
    if missing:
        raise InputError(
            "PROBE_DIR",
            f"units {', '.join(map(str, missing))} have no result in {out_dir / PARTIALS}",
            "run the halving probe again with the same --out: it continues where it stopped",
        )
    last = {i: record for i, (_, record) in walk.reached.items()}
    by_rung: dict[int, dict[int, float]] = {}
    for i, (r, record) in walk.reached.items():
        by_rung.setdefault(r, {})[i] = float(record["score"])
    order = [  # finalists first, then each earlier rung's layers
        i
        for r in sorted(by_rung, reverse=True)
        for i in sorted(by_rung[r], key=rank_layers(by_rung[r], num_layers).__getitem__)
    ]
    report = build_report(
        {
            str(BASE): by_unit[str(BASE)],
            str(FULL): combine_seeds(by_unit, FULL, seeds),
            **{str(i): r for i, r in last.items()},
        },
        spec,
        ProbeMode.halving,
        ranks={i: rank for rank, i in enumerate(order, start=1)},
    )
    for layer in report.layers:
        layer.details["steps"] = float(last[layer.index].get("trainedSteps") or steps)
    finalists = sorted(walk.survivors)
    if len(finalists) < len(candidates):
        report.notes.append(
            f"halving: layers {', '.join(map(str, finalists))} trained all {steps} steps; the other "
            f"{len(candidates) - len(finalists)} were cut at earlier rungs (their S_k is at fewer steps, "
            "without C(k)); the exact mode in the same --out runs only the full-length units missing"
        )
    used = units_for([], seeds) + [
        unit
        for i, (top, _) in walk.reached.items()
        for r in range(top + 1)
        for unit in Unit.of(i, stop=schedule[r].steps, probe_steps=steps).seeds(seeds)
    ]
    layer_steps = sum(
        rung.layers * (rung.steps - (schedule[r - 1].steps if r else 0)) for r, rung in enumerate(schedule)
    )
    report.extra.pop("exactCostSeconds", None)
    report.extra["unitSeconds"] = {str(u): by_unit[str(u)]["seconds"] for u in used}
    report.extra["halving"] = {
        "rungs": [
            {"steps": rung.steps, "layers": sorted(i for i, (r, _) in walk.reached.items() if r >= n)}
            for n, rung in enumerate(schedule)
        ],
        "layerSteps": layer_steps * seeds,
        "exactLayerSteps": len(candidates) * steps * seeds,
        "costSeconds": round(sum(float(by_unit[str(u)]["seconds"]) for u in used), 2),
    }
    return report
