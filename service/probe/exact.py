"""The exact probe: run every unit (in a process pool when asked), then merge them into a report.

The research protocol: S_base (greedy eval of the base model), S_full (eval after an RL run of
every layer), and for each candidate layer k, S_k (eval after an RL run of layer k alone, same
steps, learning rate and seed), giving C(k) = (S_k - S_base) / (S_full - S_base). `merge_partials`
turns whatever units ran, wherever they ran, into one `ProbeReport`.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import queue
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch

from service.errors import LayerpilotError, SpecError, first_line
from service.models.stack import inspect_stack
from service.probe.intervals import METHOD, Interval, overlap, paired_intervals
from service.probe.report import LayerScore, ProbeReport, rank_layers
from service.probe.selection import select_layers
from service.probe.units import (
    PARTIALS,
    Unit,
    candidate_layers,
    read_partial,
    run_unit,
    unit_label,
    units_for,
)
from service.progress import SILENT, Phase, Progress
from service.spec.fingerprint import fingerprint
from service.spec.loading import parse_spec
from service.spec.models import LayerAdaptationSpec, ProbeMode

StatusSink = Callable[[Unit, str], None]


class UnitStatus:
    """A `Progress` for one unit's own `train` and `eval` phases, relayed as one line of status."""

    def __init__(self, unit: Unit, send: StatusSink) -> None:
        self.unit = unit
        self.send = send
        self.totals: dict[str, int | None] = {}

    def start(self, phase: Phase, total: int | None = None) -> None:
        self.totals[phase] = total
        self.send(self.unit, f"{unit_label(self.unit)} {phase}")

    def update(self, phase: Phase, done: int, info: str = "") -> None:
        total = self.totals.get(phase)
        text = (
            f"{unit_label(self.unit)} {phase} {done}/{total}" if total else f"{unit_label(self.unit)} {phase}"
        )
        self.send(self.unit, f"{text} {info}".rstrip())

    def note(self, message: str) -> None:
        pass

    def finish(self, phase: Phase, info: str = "") -> None:
        pass


class _Board:
    """The probe phase as a display sees it: units finished, and what each running unit is doing."""

    def __init__(self, progress: Progress, total: int, done: int) -> None:
        self.progress = progress
        self.total = total
        self.done = done
        self.running: dict[Unit, tuple[str, float]] = {}

    def status(self, unit: Unit, text: str) -> None:
        started = self.running.get(unit, ("", time.monotonic()))[1]
        self.running[unit] = (text, started)
        self._show()

    def finished(self, unit: Unit, record: dict[str, Any]) -> None:
        self.running.pop(unit, None)
        self.done += 1
        self.progress.note(
            f"probe [{self.done}/{self.total}] {unit_label(unit)}: score {float(record['score']):.4f} "
            f"({float(record['seconds']):.0f}s)"
        )
        self._show()

    def _show(self) -> None:
        now = time.monotonic()
        info = " · ".join(f"{text} ({now - started:.0f}s)" for text, started in self.running.values())
        self.progress.update("probe", self.done, info)


# Set in each pool worker by `_init_worker`: where its unit's status lines go.
_worker_status: Any = None


def _init_worker(threads: int, status: Any) -> None:
    global _worker_status
    torch.set_num_threads(threads)
    _worker_status = status


def _run_unit_in_worker(
    spec_json: dict[str, Any], unit: Unit, out_dir: str, keep_runs: bool
) -> dict[str, Any]:
    status = UnitStatus(unit, lambda u, text: _worker_status.put((u, text)))
    return run_unit(parse_spec(spec_json), unit, Path(out_dir), keep_runs=keep_runs, progress=status)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_parallelism(num_units: int) -> int:
    """One unit at a time on a GPU (they would share it); on CPU, one per two cores."""
    if torch.cuda.is_available():
        return 1
    return max(1, min(num_units, available_cores() // 2))


def run_exact(
    spec: LayerAdaptationSpec,
    out_dir: Path,
    *,
    parallel: int | None = None,
    keep_runs: bool = False,
    progress: Progress = SILENT,
) -> ProbeReport:
    """Run every unit that has no valid partial yet (in a process pool when `parallel` > 1), then merge."""
    started = time.perf_counter()
    candidates = candidate_layers(spec, len(inspect_stack(spec.model)))
    probe_hash = fingerprint(spec, "probe")
    units = units_for(candidates)
    todo = [u for u in units if read_partial(out_dir, u, probe_hash) is None]
    workers = parallel if parallel is not None else default_parallelism(len(todo))
    board = _Board(progress, len(units), len(units) - len(todo))
    progress.start("probe", len(units))
    if board.done:
        progress.note(f"probe: reusing {board.done} finished units from {out_dir / PARTIALS}")
    failures: dict[Unit, str] = {}
    if workers <= 1 or len(todo) <= 1:
        for unit in todo:
            board.status(unit, unit_label(unit))
            board.finished(
                unit,
                run_unit(spec, unit, out_dir, keep_runs=keep_runs, progress=UnitStatus(unit, board.status)),
            )
    else:
        failures = _run_pool(spec, todo, out_dir, workers, keep_runs, board)
    if failures:
        listed = ", ".join(f"{u} ({why})" for u, why in failures.items())
        raise LayerpilotError(
            f"probe units failed: {listed}; finished units are kept in {out_dir / PARTIALS} and the same "
            "command re-runs only the missing ones"
        )
    report = merge_partials(out_dir, spec)
    report.elapsed_seconds = time.perf_counter() - started
    progress.finish("probe", f"selected {report.selected}")
    return report


def _run_pool(
    spec: LayerAdaptationSpec, todo: list[Unit], out_dir: Path, workers: int, keep_runs: bool, board: _Board
) -> dict[Unit, str]:
    """Units in worker processes; their status lines come back through a queue while they run."""
    threads = max(1, available_cores() // workers)
    spec_json = spec.model_dump(mode="json", by_alias=True)
    context = multiprocessing.get_context("spawn")  # fork after torch has threads is unsafe
    status: Any = context.Queue()
    failures: dict[Unit, str] = {}
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(threads, status)
    ) as pool:
        pending: dict[Future[dict[str, Any]], Unit] = {
            pool.submit(_run_unit_in_worker, spec_json, u, str(out_dir), keep_runs): u for u in todo
        }
        while pending:
            finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(status, board)
            for future in finished:
                unit = pending.pop(future)
                try:
                    board.finished(unit, future.result())
                except Exception as error:  # one failed layer must not lose the others
                    failures[unit] = first_line(error)
    return failures


def _drain(status: Any, board: _Board) -> None:
    while True:
        try:
            unit, text = status.get_nowait()
        except queue.Empty:
            return
        board.status(unit, text)


def merge_partials(out_dir: Path, spec: LayerAdaptationSpec | None = None) -> ProbeReport:
    """One exact-mode report from the partial results under `out_dir/partials` (any order, any host)."""
    found = sorted((out_dir / PARTIALS).glob("*.json")) if (out_dir / PARTIALS).is_dir() else []
    records = [json.loads(p.read_text()) for p in found]
    if spec is not None:
        probe_hash = fingerprint(spec, "probe")
        records = [r for r in records if r.get("probeFingerprint") == probe_hash]
    if not records:
        raise SpecError(
            "PROBE_DIR", f"no probe partial results in {out_dir / PARTIALS}", "run the probe units first"
        )
    fingerprints = {r["probeFingerprint"] for r in records}
    if len(fingerprints) > 1:
        raise SpecError(
            "PROBE_DIR",
            f"{out_dir / PARTIALS} mixes results of {len(fingerprints)} different probe settings",
            "use one directory per probe spec",
        )
    first = records[0]
    candidates = [int(i) for i in first["candidates"]]
    by_unit = {str(r["unit"]): r for r in records}
    missing = [u for u in units_for(candidates) if u not in by_unit]
    if missing:
        raise SpecError(
            "PROBE_DIR",
            f"units {', '.join(missing)} have no result in {out_dir / PARTIALS}",
            "run them with `layerpilot probe SPEC --layer-index UNIT --out DIR`",
        )
    num_layers = int(first["numLayers"])
    s_base, s_full = float(by_unit["base"]["score"]), float(by_unit["full"]["score"])
    num_items = int(by_unit["base"]["numItems"])
    gain, threshold = s_full - s_base, min_detectable_gain(s_base, num_items)
    notes: list[str] = []
    usable = gain >= threshold
    if gain <= -threshold:
        notes.append(
            f"full-model RL lowered the score ({s_base:.4f} → {s_full:.4f}): contributions are not "
            "computed; layers are ranked by S_k. Lower algorithm.learningRate or probe.steps."
        )
    elif not usable:
        notes.append(
            f"full-model RL gain {gain:+.4f} is below what {num_items} eval items can resolve "
            f"(±{threshold:.4f}): contributions are not computed; layers are ranked by S_k. "
            "Raise probe.steps, algorithm.learningRate or dataset.evalSize."
        )
    scores = {i: float(by_unit[str(i)]["score"]) for i in candidates}
    ranks = rank_layers(scores, num_layers)
    spans = _intervals(by_unit)
    layers = [
        LayerScore(
            index=i,
            name=f"{first['layersPath']}.{i}",
            score=scores[i],
            contribution=(scores[i] - s_base) / gain if usable else None,
            rank=ranks[i],
            details={"deltaRelative": float(by_unit[str(i)].get("deltas", {}).get(str(i), math.nan))},
            score_interval=spans[str(i)]["score"] if spans else None,
            contribution_interval=spans[str(i)]["contribution"] if spans and usable else None,
        )
        for i in candidates
    ]
    extra: dict[str, Any] = {}
    if spans:
        extra = {
            "intervals": dict(METHOD),
            "baselineInterval": list(spans["base"]["score"] or ()),
            "fullInterval": list(spans["full"]["score"] or ()),
        }
        resolved, note = _ranking_resolved(layers, usable)
        extra["rankingResolved"] = resolved
        notes.extend([note] if note else [])
    report = ProbeReport(
        model=str(first["model"]),
        num_layers=num_layers,
        mode=ProbeMode.exact.value,
        layers_path=str(first["layersPath"]),
        layers=layers,
        baseline_score=s_base,
        full_score=s_full,
        notes=notes,
        extra={
            "probeSteps": first["steps"],
            "learningRate": first["learningRate"],
            "evalItems": num_items,
            "fullGain": round(gain, 6),
            "minDetectableGain": round(threshold, 6),
            "unitSeconds": {u: by_unit[u]["seconds"] for u in units_for(candidates)},
            "exactCostSeconds": round(sum(float(r["seconds"]) for r in by_unit.values()), 2),
            **extra,
        },
    )
    if spec is not None:
        report.strategy = spec.selection.strategy
        report.selected = select_layers(spec.selection, report)
    return report


def _intervals(by_unit: dict[str, dict[str, Any]]) -> dict[str, dict[str, Interval | None]] | None:
    """Paired bootstrap intervals, when every unit kept its per-item scores (partials written before
    layerpilot kept them have none)."""
    items = {unit: record.get("itemScores") for unit, record in by_unit.items()}
    if not all(items.values()) or len({len(v or []) for v in items.values()}) != 1:
        return None
    return paired_intervals({unit: list(v or []) for unit, v in items.items()})


def _ranking_resolved(layers: list[LayerScore], usable: bool) -> tuple[bool, str | None]:
    """Whether the top two layers' intervals are apart; if not, a note on what would separate them."""
    top = sorted(layers, key=lambda item: item.rank)[:2]
    if len(top) < 2:
        return True, None
    spans = [(item.contribution_interval if usable else item.score_interval) for item in top]
    if not overlap(*spans):
        return True, None
    what = "C(k)" if usable else "S_k"
    return False, (
        f"the ranking of layers {top[0].index} and {top[1].index} is not resolved: their 95 % {what} "
        "intervals overlap; more eval items (dataset.evalSize) or probe runs with other seeds "
        "(training.seed) would separate them"
    )


def min_detectable_gain(base_score: float, num_items: int) -> float:
    """Two standard errors of a mean 0/1 score on `num_items` items (at least one item's worth).

    >>> round(min_detectable_gain(0.37, 300), 4)
    0.0557
    """
    p = min(max(base_score, 1.0 / num_items), 1.0 - 1.0 / num_items)
    return max(2.0 * math.sqrt(p * (1.0 - p) / num_items), 1.0 / num_items)
