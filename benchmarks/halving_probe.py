"""The halving probe against the exact probe on the demo model, side by side, over several seeds.

For each seed, the exact probe and the halving probe of `examples/demo.yaml` run one after the
other, each in its own directory (nothing shared), one unit at a time, so the units' summed wall
time is each probe's whole compute. Reported: whether halving returns exact's top-1 (or a layer
exact cannot tell from it: their 95 % S_k intervals overlap), the overlap of their top-3, and
halving's cost as a share of exact's (summed unit seconds and layer-steps trained).

Run: `.venv/bin/python benchmarks/halving_probe.py [--seeds 5]` (about 4 minutes); writes its
section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from common import environment, write_section

from service.probe.intervals import overlap
from service.probe.report import ProbeReport
from service.probe.run import run_probe
from service.spec.demo import demo_spec


def compare(exact: ProbeReport, halving: ProbeReport) -> dict[str, Any]:
    """Halving's answer judged by exact's: top-1 (same, or within exact's intervals), top-3, cost."""
    by_index = {layer.index: layer for layer in exact.layers}
    best, picked = exact.ranking[0], halving.ranking[0]
    tied = overlap(by_index[best].score_interval, by_index[picked].score_interval)
    cost = halving.extra["halving"]
    return {
        "exactTop": exact.ranking[:3],
        "halvingTop": halving.ranking[:3],
        "top1Same": best == picked,
        "top1WithinIntervals": best == picked or tied,
        "top3Overlap": len(set(exact.ranking[:3]) & set(halving.ranking[:3])),
        "costShare": cost["costSeconds"] / exact.extra["exactCostSeconds"],
        "layerStepShare": cost["layerSteps"] / cost["exactLayerSteps"],
        "exactSeconds": exact.extra["exactCostSeconds"],
        "halvingSeconds": cost["costSeconds"],
        "rungs": [(rung["steps"], len(rung["layers"])) for rung in cost["rungs"]],
    }


def table(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Markdown rows of `compare` results, one per labelled run, and their totals."""
    lines = [
        "| run | exact top-3 | halving top-3 | top-1 same | top-1 within intervals | top-3 overlap | "
        "halving / exact compute | layer-steps share |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows:
        lines.append(
            f"| {label} | {r['exactTop']} | {r['halvingTop']} | {'yes' if r['top1Same'] else 'no'} | "
            f"{'yes' if r['top1WithinIntervals'] else 'no'} | {r['top3Overlap']}/3 | "
            f"{r['halvingSeconds']:.0f} / {r['exactSeconds']:.0f} s = {r['costShare']:.0%} | "
            f"{r['layerStepShare']:.0%} |"
        )
    if len(rows) > 1:
        results = [r for _, r in rows]
        share = sum(r["halvingSeconds"] for r in results) / sum(r["exactSeconds"] for r in results)
        lines.append(
            f"| all | | | {sum(r['top1Same'] for r in results)}/{len(results)} | "
            f"{sum(r['top1WithinIntervals'] for r in results)}/{len(results)} | "
            f"{sum(r['top3Overlap'] for r in results)}/{3 * len(results)} | {share:.0%} | |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            spec = demo_spec()
            spec.training.seed = seed
            exact = run_probe(spec, Path(tmp) / f"exact-{seed}", mode="exact", parallel=1)
            halving = run_probe(spec, Path(tmp) / f"halving-{seed}", mode="halving", parallel=1)
            rows.append((f"seed {seed}", compare(exact, halving)))
            print(rows[-1])
    spec = demo_spec()
    rungs = " → ".join(f"{layers} layers to step {steps}" for steps, layers in rows[0][1]["rungs"])
    body = [
        environment(),
        "",
        f"`examples/demo.yaml` (6 layers, {spec.probe.steps} probe steps, {spec.prompts.eval_size} eval "
        "items), "
        f"seeds 0–{args.seeds - 1}; each probe in its own directory, one unit at a time. Halving's rungs: "
        f"{rungs}.",
        "",
        *table(rows),
    ]
    write_section(
        "halving",
        "Halving probe vs exact on the demo model (`benchmarks/halving_probe.py`)",
        "\n".join(body),
        Path(__file__).name,
    )


if __name__ == "__main__":
    main()
