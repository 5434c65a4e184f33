"""The exact probe: run every unit (`service.probe.pool`), then merge them into a report.

The research protocol: S_base (greedy eval of the base model), S_full (eval after an RL run of
every layer), and for each candidate layer k, S_k (eval after an RL run of layer k alone, same
steps, learning rate and seed), giving C(k) = (S_k - S_base) / (S_full - S_base). `merge_partials`
turns whatever units ran, wherever they ran, into one `ProbeReport`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from service.bootstrap import Interval
from service.errors import InputError
from service.models.stack import inspect_stack
from service.models.weights import model_fingerprint
from service.probe.intervals import METHOD, overlap, paired_intervals
from service.probe.pool import ProbeBoard, UnitRunner, default_parallelism
from service.probe.report import LayerScore, ProbeReport, measured_on, rank_layers
from service.probe.selection import select_layers
from service.probe.units import BASE, FULL, PARTIALS, Unit, candidate_layers, read_partial, units_for
from service.progress import SILENT, Progress
from service.spec.fingerprint import fingerprint
from service.spec.models import LayerAdaptationSpec, ProbeMode


def run_exact(
    spec: LayerAdaptationSpec,
    out_dir: Path,
    *,
    parallel: int | None = None,
    keep_runs: bool = False,
    progress: Progress = SILENT,
    keep_model: bool = True,
) -> ProbeReport:
    """Run every unit that has no valid partial yet (in a process pool when `parallel` > 1), then merge.

    Each process keeps the model loaded from unit to unit; `keep_model=False` loads it per unit
    (the same results, slower: benchmarks compare the two)."""
    started = time.perf_counter()
    candidates = candidate_layers(spec, len(inspect_stack(spec.model)))
    probe_hash = fingerprint(spec, "probe")
    units = units_for(candidates, spec.probe.seeds)
    todo = [u for u in units if read_partial(out_dir, u, probe_hash) is None]
    workers = parallel if parallel is not None else default_parallelism(len(todo))
    board = ProbeBoard(progress, len(units), len(units) - len(todo))
    progress.start("probe", len(units))
    if board.done:
        progress.note(f"probe: reusing {board.done} finished units from {out_dir / PARTIALS}")
    with UnitRunner(
        spec, out_dir, workers=workers, keep_runs=keep_runs, board=board, keep_model=keep_model
    ) as runner:
        runner.run(todo)
    report = merge_partials(out_dir, spec)
    report.elapsed_seconds = time.perf_counter() - started
    progress.finish("probe", f"selected {report.selected}")
    return report


def merge_partials(out_dir: Path, spec: LayerAdaptationSpec | None = None) -> ProbeReport:
    """One exact-mode report from the partial results under `out_dir/partials` (any order, any host)."""
    by_unit = load_records(out_dir, spec)
    candidates = [int(i) for i in next(iter(by_unit.values()))["candidates"]]
    seeds = spec.probe.seeds if spec is not None else 1 + max(Unit.parse(u).seed for u in by_unit)
    missing = [str(u) for u in units_for(candidates, seeds) if str(u) not in by_unit]
    if missing:
        raise InputError(
            "PROBE_DIR",
            f"units {', '.join(missing)} have no result in {out_dir / PARTIALS}",
            "run them with `layerpilot probe SPEC --layer-index UNIT --out DIR`",
        )
    units = [BASE, FULL, *map(Unit.of, candidates)]
    return build_report({str(u): combine_seeds(by_unit, u, seeds) for u in units}, spec, ProbeMode.exact)


def combine_seeds(by_unit: dict[str, dict[str, Any]], unit: Unit, seeds: int) -> dict[str, Any]:
    """`unit`'s partial results over its seeds (`by_unit` by written unit): mean score and deltas,
    summed seconds, item scores per seed."""
    runs = [by_unit[str(u)] for u in unit.seeds(1 if unit == BASE else seeds)]
    if len(runs) == 1:
        return runs[0]
    items = [r.get("itemScores") for r in runs]
    return {
        **runs[0],
        "score": sum(float(r["score"]) for r in runs) / len(runs),
        "seedScores": [float(r["score"]) for r in runs],
        "itemScores": items if all(items) else None,
        "seconds": round(sum(float(r["seconds"]) for r in runs), 3),
        "deltas": {
            k: sum(float(r["deltas"][k]) for r in runs) / len(runs) for k in runs[0].get("deltas", {})
        },
    }


def load_records(out_dir: Path, spec: LayerAdaptationSpec | None = None) -> dict[str, dict[str, Any]]:
    """The partial results under `out_dir/partials` by written unit (`3@5#1`): of `spec`'s probe
    settings when given, else of the one probe they all share."""
    found = sorted((out_dir / PARTIALS).glob("*.json")) if (out_dir / PARTIALS).is_dir() else []
    records = [json.loads(p.read_text()) for p in found]
    if spec is not None:
        probe_hash = fingerprint(spec, "probe")
        records = [r for r in records if r.get("probeFingerprint") == probe_hash]
    if not records:
        raise InputError(
            "PROBE_DIR", f"no probe partial results in {out_dir / PARTIALS}", "run the probe units first"
        )
    fingerprints = {r["probeFingerprint"] for r in records}
    if len(fingerprints) > 1:
        raise InputError(
            "PROBE_DIR",
            f"{out_dir / PARTIALS} mixes results of {len(fingerprints)} different probe settings",
            "use one directory per probe spec",
        )
    return {str(r["unit"]): r for r in records}


def build_report(
    by_unit: dict[str, dict[str, Any]],
    spec: LayerAdaptationSpec | None,
    mode: ProbeMode,
    ranks: dict[int, int] | None = None,
) -> ProbeReport:
    """The report of `base`, `full` and one record per candidate layer (its unit is the layer index).

    C(k) is computed for the layers that trained the whole `probe.steps` (all of them in exact mode);
    `ranks` default to S_k order.
    """
    first = by_unit["base"]
    candidates = [int(i) for i in first["candidates"]]
    num_layers, steps = int(first["numLayers"]), int(first["steps"])
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
            "Raise probe.steps, algorithm.learningRate or dataset.evalSize (an agent's: "
            "environment.evalEpisodes)."
        )
    scores = {i: float(by_unit[str(i)]["score"]) for i in candidates}
    ranks = ranks or rank_layers(scores, num_layers)
    whole = {i for i in candidates if int(by_unit[str(i)].get("trainedSteps") or steps) >= steps}
    spans = _intervals({unit: by_unit[unit] for unit in ("base", "full", *map(str, candidates))})
    layers = [
        LayerScore(
            index=i,
            name=f"{first['layersPath']}.{i}",
            score=scores[i],
            contribution=(scores[i] - s_base) / gain if usable and i in whole else None,
            rank=ranks[i],
            details={"deltaRelative": float(by_unit[str(i)].get("deltas", {}).get(str(i), math.nan))},
            score_interval=spans[str(i)]["score"] if spans else None,
            contribution_interval=spans[str(i)]["contribution"] if spans and usable and i in whole else None,
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
        resolved, note = _ranking_resolved(layers, usable=usable)
        extra["rankingResolved"] = resolved
        notes.extend([note] if note else [])
    report = ProbeReport(
        model=str(first["model"]),
        task=measured_on(spec) if spec is not None else None,
        base_fingerprint=first.get("baseFingerprint")
        or (model_fingerprint(spec.model) if spec is not None else None),  # partials written before it
        num_layers=num_layers,
        mode=mode.value,
        layers_path=str(first["layersPath"]),
        layers=layers,
        baseline_score=s_base,
        full_score=s_full,
        notes=notes,
        extra={
            "probeSteps": steps,
            "seeds": len(by_unit["full"].get("seedScores") or [None]),
            "learningRate": first["learningRate"],
            "evalItems": num_items,
            "fullGain": round(gain, 6),
            "minDetectableGain": round(threshold, 6),
            "unitSeconds": {str(u): by_unit[str(u)]["seconds"] for u in units_for(candidates)},
            "exactCostSeconds": round(
                sum(float(by_unit[str(u)]["seconds"]) for u in units_for(candidates)), 2
            ),
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
    if not all(items.values()):
        return None
    try:
        return paired_intervals({unit: v or [] for unit, v in items.items()})
    except ValueError:  # not the same items (partials of another eval set): no intervals
        return None


def _ranking_resolved(layers: list[LayerScore], *, usable: bool) -> tuple[bool, str | None]:
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
        "intervals overlap; more eval items (dataset.evalSize; an agent's: environment.evalEpisodes) or more "
        "seeds per unit (probe.seeds) would separate them"
    )


def min_detectable_gain(base_score: float, num_items: int) -> float:
    """Two standard errors of a mean 0/1 score on `num_items` items (at least one item's worth).

    >>> round(min_detectable_gain(0.37, 300), 4)
    0.0557
    """
    p = min(max(base_score, 1.0 / num_items), 1.0 - 1.0 / num_items)
    return max(2.0 * math.sqrt(p * (1.0 - p) / num_items), 1.0 / num_items)
