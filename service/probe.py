"""The layer-contribution probe: which decoder layers are worth RL-training?

Exact mode is the research protocol: S_base (greedy eval of the base model), S_full (eval after an
RL run of every layer), and for each candidate layer k, S_k (eval after an RL run of layer k alone,
same steps, learning rate and seed), giving C(k) = (S_k - S_base) / (S_full - S_base).

Every one of those runs is an independent *unit* (`base`, `full`, or a layer index) that writes
`partials/<unit>.json` under the probe directory. Units run in a local process pool, or one per
Kubernetes pod (`--layer-index`), and `merge_partials` turns whatever ran where into one report.
A finished unit is never run twice: re-running the probe reuses partials made with the same settings.
Fast modes (`gradient`, `spectrum`) live in `service.proxies`.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from service.delta import PATCH_TENSORS, atomic_write
from service.errors import LayerpilotError, SpecError
from service.report import LayerScore, ProbeReport, rank_layers
from service.selection import select_layers
from service.spec import LayerAdaptationSpec, ProbeMode, check_layer_indices

PARTIALS = "partials"
RUNS = "runs"
Unit = str  # "base", "full" or a layer index as text
UnitHook = Callable[[int, int, Unit, float], None]


# --- units ---------------------------------------------------------------------------------------


def probe_fingerprint(spec: LayerAdaptationSpec) -> str:
    """Hash of every setting a probe unit's result depends on (not selection, tracking or resources)."""
    relevant = spec.model_dump(
        mode="json", by_alias=True, include={"model", "dataset", "rewards", "algorithm", "probe"}
    )
    relevant["training"] = {
        "batchSize": spec.training.batch_size,
        "seed": spec.training.seed,
        "precision": spec.training.precision,
    }
    relevant["probe"].pop("mode", None)
    blob = json.dumps(relevant, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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


def partial_path(out_dir: Path, unit: Unit) -> Path:
    name = unit if unit in ("base", "full") else f"layer-{int(unit)}"
    return out_dir / PARTIALS / f"{name}.json"


def _read_partial(out_dir: Path, unit: Unit, fingerprint: str) -> dict[str, Any] | None:
    path = partial_path(out_dir, unit)
    if not path.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a half-written file from a killed run: redo the unit
    return data if data.get("probeFingerprint") == fingerprint else None


def run_unit(
    spec: LayerAdaptationSpec, unit: Unit, out_dir: Path, *, keep_runs: bool = False
) -> dict[str, Any]:
    """Run one probe unit and write its partial result; returns it."""
    from service.evaluation import evaluate
    from service.layers import inspect_stack
    from service.training import CHECKPOINTS, train

    stack = inspect_stack(spec.model)
    candidates = candidate_layers(spec, len(stack))
    fingerprint = probe_fingerprint(spec)
    started = time.perf_counter()
    record: dict[str, Any] = {
        "unit": unit,
        "probeFingerprint": fingerprint,
        "model": spec.model.uri,
        "numLayers": len(stack),
        "layersPath": stack.path,
        "candidates": candidates,
        "steps": spec.probe.steps,
        "learningRate": spec.algorithm.learning_rate,
    }
    if unit == "base":
        result = evaluate(spec)
    else:
        layers = list(range(len(stack))) if unit == "full" else [int(unit)]
        run_dir = out_dir / RUNS / partial_path(out_dir, unit).stem
        _claim_run_dir(run_dir, fingerprint)
        trained = train(spec, layers, run_dir, resume=True, max_steps=spec.probe.steps)
        result = evaluate(spec, patch_dir=run_dir)
        record["trainedSteps"] = trained.global_step
        record["deltas"] = {k: v["relative"] for k, v in trained.deltas["layers"].items()}
        record["trainMetrics"] = trained.metrics
        if not keep_runs:
            # The probe needs the score, not the weights: a big model's per-layer patches add up fast.
            shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
            (run_dir / PATCH_TENSORS).unlink(missing_ok=True)
    record["score"] = result.score
    record["numItems"] = result.num_items
    record["seconds"] = round(time.perf_counter() - started, 3)
    path = partial_path(out_dir, unit)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
    return record


def _claim_run_dir(run_dir: Path, fingerprint: str) -> None:
    """A unit resumes its own interrupted run, never one left by a probe with other settings."""
    marker = run_dir / "probe_fingerprint"
    if run_dir.exists() and (not marker.is_file() or marker.read_text().strip() != fingerprint):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint + "\n")


def _run_unit_in_worker(
    spec_json: dict[str, Any], unit: Unit, out_dir: str, keep_runs: bool
) -> dict[str, Any]:
    from service.spec import parse_spec

    return run_unit(parse_spec(spec_json), unit, Path(out_dir), keep_runs=keep_runs)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_parallelism(num_units: int) -> int:
    """One unit at a time on a GPU (they would share it); on CPU, one per two cores."""
    import torch

    if torch.cuda.is_available():
        return 1
    return max(1, min(num_units, available_cores() // 2))


# --- exact probe ---------------------------------------------------------------------------------


def run_exact(
    spec: LayerAdaptationSpec,
    out_dir: Path,
    *,
    parallel: int | None = None,
    keep_runs: bool = False,
    on_unit: UnitHook | None = None,
) -> ProbeReport:
    """Run every unit that has no valid partial yet (in a process pool when `parallel` > 1), then merge."""
    from service.layers import inspect_stack

    started = time.perf_counter()
    stack = inspect_stack(spec.model)
    candidates = candidate_layers(spec, len(stack))
    fingerprint = probe_fingerprint(spec)
    units = units_for(candidates)
    todo = [u for u in units if _read_partial(out_dir, u, fingerprint) is None]
    done = len(units) - len(todo)
    workers = parallel if parallel is not None else default_parallelism(len(todo))
    failures: dict[Unit, str] = {}

    def finished(unit: Unit, record: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        if on_unit is not None:
            on_unit(done, len(units), unit, float(record["score"]))

    if workers <= 1 or len(todo) <= 1:
        for unit in todo:
            finished(unit, run_unit(spec, unit, out_dir, keep_runs=keep_runs))
    else:
        threads = max(1, available_cores() // workers)
        spec_json = spec.model_dump(mode="json", by_alias=True)
        context = multiprocessing.get_context("spawn")  # fork after torch has threads is unsafe
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(threads,)
        ) as pool:
            futures: dict[Future[dict[str, Any]], Unit] = {
                pool.submit(_run_unit_in_worker, spec_json, u, str(out_dir), keep_runs): u for u in todo
            }
            for future in as_completed(futures):
                unit = futures[future]
                try:
                    finished(unit, future.result())
                except Exception as error:  # one failed layer must not lose the others
                    failures[unit] = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    if failures:
        listed = ", ".join(f"{u} ({why})" for u, why in failures.items())
        raise LayerpilotError(
            f"probe units failed: {listed}; finished units are kept in {out_dir / PARTIALS} and the same "
            "command re-runs only the missing ones"
        )
    report = merge_partials(out_dir, spec)
    report.elapsed_seconds = time.perf_counter() - started
    return report


def merge_partials(out_dir: Path, spec: LayerAdaptationSpec | None = None) -> ProbeReport:
    """One exact-mode report from the partial results under `out_dir/partials` (any order, any host)."""
    found = sorted((out_dir / PARTIALS).glob("*.json")) if (out_dir / PARTIALS).is_dir() else []
    records = [json.loads(p.read_text()) for p in found]
    if spec is not None:
        fingerprint = probe_fingerprint(spec)
        records = [r for r in records if r.get("probeFingerprint") == fingerprint]
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
    layers = [
        LayerScore(
            index=i,
            name=f"{first['layersPath']}.{i}",
            score=scores[i],
            contribution=(scores[i] - s_base) / gain if usable else None,
            rank=ranks[i],
            details={"deltaRelative": float(by_unit[str(i)].get("deltas", {}).get(str(i), math.nan))},
        )
        for i in candidates
    ]
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
        },
    )
    if spec is not None:
        report.strategy = spec.selection.strategy
        report.selected = select_layers(spec.selection, report)
    return report


def min_detectable_gain(base_score: float, num_items: int) -> float:
    """Two standard errors of a mean 0/1 score on `num_items` items (at least one item's worth).

    >>> round(min_detectable_gain(0.37, 300), 4)
    0.0557
    """
    p = min(max(base_score, 1.0 / num_items), 1.0 - 1.0 / num_items)
    return max(2.0 * math.sqrt(p * (1.0 - p) / num_items), 1.0 / num_items)


# --- any mode ------------------------------------------------------------------------------------


def run_probe(
    spec: LayerAdaptationSpec,
    out_dir: Path,
    *,
    mode: str | None = None,
    parallel: int | None = None,
    keep_runs: bool = False,
    on_unit: UnitHook | None = None,
    write: bool = True,
) -> ProbeReport:
    """Probe in the spec's mode (or `mode`), select layers, and write probe_report.json and .png
    (unless `write` is false: a caller that adds the MLflow run id writes it once, afterwards)."""
    mode = mode or spec.probe.mode
    if mode == ProbeMode.exact.value:
        report = run_exact(spec, out_dir, parallel=parallel, keep_runs=keep_runs, on_unit=on_unit)
    elif mode in (ProbeMode.gradient.value, ProbeMode.spectrum.value):
        report = run_proxy(spec, mode)
    else:
        raise SpecError("--mode", f"'{mode}' is not a probe mode", "use exact, gradient or spectrum")
    if write:
        report.write(out_dir)
    return report


def run_proxy(spec: LayerAdaptationSpec, mode: str) -> ProbeReport:
    """A fast-mode report: proxy scores, ranks and the selection; contribution stays null."""
    from service.layers import inspect_stack
    from service.proxies import gradient_scores, spectrum_scores

    stack = inspect_stack(spec.model)
    candidates = candidate_layers(spec, len(stack))
    result = gradient_scores(spec, candidates) if mode == "gradient" else spectrum_scores(spec, candidates)
    ranks = rank_layers(result.scores, result.num_layers)
    extra: dict[str, Any] = {"candidates": candidates}
    notes = [
        f"{mode} is a proxy: check it against exact on your model family with `layerpilot probe validate`"
    ]
    if mode == ProbeMode.spectrum.value:
        notes.append(
            f"spectrum read the weights only ({result.seconds:.1f}s, no rollouts); exact needs "
            f"{len(candidates) + 1} RL runs of {spec.probe.steps} steps and {len(candidates) + 2} evaluations"
        )
    if result.step_seconds is not None:
        # One exact unit per candidate plus the full run, each `probe.steps` RL steps (evals not counted).
        estimate = (len(candidates) + 1) * spec.probe.steps * result.step_seconds
        extra["exactCostEstimateSeconds"] = round(estimate, 2)
        extra["rolloutStepSeconds"] = round(result.step_seconds, 4)
        notes.append(
            f"{mode} took {result.seconds:.1f}s; exact would need about {estimate:.0f}s of RL steps "
            f"({len(candidates) + 1} runs x {spec.probe.steps} steps) plus {len(candidates) + 2} evaluations"
        )
    report = ProbeReport(
        model=spec.model.uri,
        num_layers=result.num_layers,
        mode=mode,
        layers_path=result.stack_path,
        layers=[
            LayerScore(
                index=i,
                name=f"{result.stack_path}.{i}",
                score=result.scores[i],
                rank=ranks[i],
                details=result.details.get(i, {}),
            )
            for i in candidates
        ],
        strategy=spec.selection.strategy,
        elapsed_seconds=result.seconds,
        notes=notes,
        extra=extra,
    )
    report.selected = select_layers(spec.selection, report)
    return report
