"""GiGPO vs GRPO on the agent demo, side by side in one run: the exact probe under each (do the layer
rankings agree?), then full-model and top-1 training under each, same steps and rate, several seeds.

Run: `.venv/bin/python benchmarks/agent_gigpo.py [--seeds 3] [--steps 40]` (about 30 minutes on 2
cores); writes its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import environment, write_section

from service.evaluation import evaluate
from service.probe.agreement import rank_agreement
from service.probe.intervals import paired_intervals
from service.probe.report import ProbeReport
from service.probe.run import run_probe
from service.spec.demo import demo_spec
from service.spec.models import LayerAdaptationSpec
from service.training.trainer import train

ALGORITHMS = ("grpo", "gigpo")


def _spec(estimator: str) -> LayerAdaptationSpec:
    spec = demo_spec("agent")
    spec.algorithm.advantage_estimator = estimator  # type: ignore[assignment]
    return spec


def _difference(a: list[list[float]], b: list[list[float]], resamples: int = 2000) -> tuple[float, float]:
    """95 % interval of mean(b) − mean(a) over episodes and seeds, resampled in pairs (same episodes)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(0)
    seeds, items = x.shape
    draws = rng.integers(0, items, size=(resamples, items))
    picks = rng.integers(0, seeds, size=(resamples, seeds))
    diffs = [(y[p][:, d] - x[p][:, d]).mean() for d, p in zip(draws, picks, strict=True)]
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def _contributions(report: ProbeReport) -> dict[int, float]:
    return {layer.index: layer.contribution or 0.0 for layer in report.layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--probe-steps", type=int, default=None, help="default: the spec's probe.steps")
    args = parser.parse_args()
    started = time.perf_counter()
    specs = {name: _spec(name) for name in ALGORITHMS}
    for spec in specs.values():
        spec.probe.steps = args.probe_steps or spec.probe.steps
    reports: dict[str, ProbeReport] = {}
    probe_seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="layerpilot-agent-gigpo-") as tmp:
        for name, spec in specs.items():
            probe_started = time.perf_counter()
            reports[name] = run_probe(spec, Path(tmp) / f"probe-{name}", mode="exact", parallel=1)
            probe_seconds[name] = time.perf_counter() - probe_started
        agreement = rank_agreement(_contributions(reports["grpo"]), _contributions(reports["gigpo"]), [1, 3])
        tops = {name: min(report.layers, key=lambda x: x.rank).index for name, report in reports.items()}
        num_layers = reports["grpo"].num_layers
        rate = specs["grpo"].algorithm.learning_rate
        base = evaluate(specs["grpo"]).item_scores
        scores: dict[str, list[list[float]]] = {}
        train_seconds: dict[str, float] = {}
        for seed in range(args.seeds):
            for name, spec in specs.items():
                spec.training.seed = seed
                for shape, layers in (("full", list(range(num_layers))), ("top-1", [tops[name]])):
                    key = f"{name} {shape}"
                    out = Path(tmp) / f"{name}-{shape}-{seed}"
                    run_started = time.perf_counter()
                    train(spec, layers, out, max_steps=args.steps, learning_rate=rate)
                    train_seconds[key] = train_seconds.get(key, 0.0) + time.perf_counter() - run_started
                    scores.setdefault(key, []).append(evaluate(spec, patch_dir=out).item_scores)
    intervals = paired_intervals({"base": [base], "full": scores["grpo full"], **scores})
    means = {key: statistics.mean(statistics.mean(row) for row in rows) for key, rows in scores.items()}
    base_mean = statistics.mean(base)

    def cell(key: str) -> str:
        low, high = intervals[key]["score"] or (float("nan"), float("nan"))
        return f"{means[key]:.3f} ({low:.3f} … {high:.3f})"

    def versus(shape: str) -> str:
        low, high = _difference(scores[f"grpo {shape}"], scores[f"gigpo {shape}"])
        return f"{means[f'gigpo {shape}'] - means[f'grpo {shape}']:+.3f} ({low:+.3f} … {high:+.3f})"

    def seconds(key: str) -> str:
        return f"{train_seconds[key] / args.seeds:.0f} s"

    rows = []
    for layer in sorted(reports["grpo"].layers, key=lambda x: x.index):
        other = next(x for x in reports["gigpo"].layers if x.index == layer.index)
        grpo_c, gigpo_c = layer.contribution or 0.0, other.contribution or 0.0
        rows.append(f"| {layer.index} | {grpo_c:.2f} | {layer.rank} | {gigpo_c:.2f} | {other.rank} |")
    gigpo = specs["gigpo"].algorithm.gigpo
    env = specs["grpo"].environment
    assert env is not None
    groups, batch = specs["grpo"].algorithm.num_generations, specs["grpo"].training.batch_size
    top_k = agreement["topK"]
    probe_steps = specs["grpo"].probe.steps
    body = f"""{environment()}

`examples/agent.yaml` (gridworld sizes 4–5, walls 0.2, at most {env.max_turns} turns;
{env.eval_episodes} greedy evaluation episodes from seeds disjoint from training's; {groups} episodes
per group, batch {batch}, learning rate {rate:g} for every run). GiGPO with its defaults:
ω = {gigpo.step_weight:g}, γ = {gigpo.gamma:g}, normalisation `{gigpo.normalization}` (mean and
standard deviation, as GRPO's loss type). Whole run: {time.perf_counter() - started:.0f} s.

**Training, {args.steps} steps, {args.seeds} seeds** (success rate, mean over seeds, 95 % interval over
episodes and seeds; top-1 is each algorithm's own probe's top layer: GRPO's layer {tops["grpo"]},
GiGPO's layer {tops["gigpo"]}). Base model: {base_mean:.3f}.

| | GRPO | GiGPO | GiGPO − GRPO (95 % interval, paired) |
|---|---|---|---|
| full model | {cell("grpo full")} | {cell("gigpo full")} | {versus("full")} |
| top-1 layer | {cell("grpo top-1")} | {cell("gigpo top-1")} | {versus("top-1")} |
| seconds per run (full / top-1) | {seconds("grpo full")} / {seconds("grpo top-1")} | \
{seconds("gigpo full")} / {seconds("gigpo top-1")} | |

**The exact probe under each** ({probe_steps} RL steps per unit, one seed; GRPO
{probe_seconds["grpo"]:.0f} s, GiGPO {probe_seconds["gigpo"]:.0f} s). S_base
{reports["grpo"].baseline_score:.3f}; S_full {reports["grpo"].full_score:.3f} under GRPO,
{reports["gigpo"].full_score:.3f} under GiGPO.

| layer | C(k) GRPO | rank | C(k) GiGPO | rank |
|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Rank agreement of C(k): Spearman {agreement["spearman"]}, Kendall {agreement["kendall"]}, top-1 overlap
{top_k.get("1")}, top-3 overlap {top_k.get("3")}.
"""
    write_section("agent-gigpo", "Agents: GiGPO vs GRPO", body, "agent_gigpo.py")
    print(body)


if __name__ == "__main__":
    main()
