"""Probe benchmark on the shipped demo model, everything side by side in one process.

1. Exact probe vs the fast proxies (`layerpilot probe validate`): Spearman, Kendall, top-k overlap,
   and each proxy's wall time as a share of exact.
2. The exact probe again with another seed: how well exact agrees with itself bounds what any proxy
   can reach on this model.
3. The research claim: RL-training only the exact probe's top-1 layer for the full training budget,
   against RL-training every layer with the same learning rate and steps.

Run: `.venv/bin/python benchmarks/probe_proxies.py [--out DIR]`; prints Markdown for RESULTS.md and
writes the raw numbers to DIR/probe_proxies.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from service.demo import demo_spec
from service.evaluation import evaluate
from service.probe.agreement import rank_agreement, validate_proxies
from service.probe.run import run_probe
from service.training.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    spec = demo_spec()
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "spec": spec.model_dump(mode="json", by_alias=True),
    }

    validation = validate_proxies(spec, out / "validate-seed0")
    results["validation"] = validation

    other_seed = spec.model_copy(deep=True)
    other_seed.training.seed = 1
    exact_again = run_probe(other_seed, out / "exact-seed1", mode="exact", parallel=1)
    seed0 = json.loads((out / "validate-seed0" / "exact" / "probe_report.json").read_text())
    truth0 = {layer["index"]: layer["contribution"] or layer["score"] for layer in seed0["layers"]}
    truth1 = {layer.index: layer.contribution or layer.score for layer in exact_again.layers}
    results["exactSelfAgreement"] = rank_agreement(truth0, truth1, [1, 2, 3])

    top1 = seed0["selected"]
    steps = spec.training.max_steps
    runs: dict[str, Any] = {}
    before = evaluate(spec).score
    for name, layers in (("top-1", top1), ("full", list(range(seed0["numLayers"])))):
        started = time.perf_counter()
        trained = train(spec, layers, out / f"train-{name}", max_steps=steps)
        after = evaluate(spec, patch_dir=out / f"train-{name}").score
        runs[name] = {
            "layers": layers,
            "after": after,
            "gain": after - before,
            "trainSeconds": round(time.perf_counter() - started, 1),
            "trainableParameters": trained.trainable_parameters,
        }
    runs["before"] = before
    runs["top1ShareOfFullGain"] = (
        runs["top-1"]["gain"] / runs["full"]["gain"] if runs["full"]["gain"] else None
    )
    results["top1VsFull"] = runs
    (out / "probe_proxies.json").write_text(json.dumps(results, indent=2) + "\n")
    print(_markdown(results, steps))


def _markdown(results: dict[str, Any], steps: int) -> str:
    v = results["validation"]
    lines = [
        f"Exact probe: {v['exact']['wallSeconds']} s wall, ranking {v['exact']['ranking']} "
        f"(full gain {v['exact']['fullGain']}).",
        "",
        "| proxy | Spearman | Kendall | top-1 | top-3 | wall time | share of exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in v["proxies"].items():
        share = entry.get("shareOfExactWallTime")
        lines.append(
            f"| {name} | {entry['spearman']} | {entry['kendall']} | {entry['topK'].get('1')} | "
            f"{entry['topK'].get('3')} | {entry.get('wallSeconds', '-')} s | "
            f"{'-' if share is None else f'{share:.1%}'} |"
        )
    s = results["exactSelfAgreement"]
    lines += [
        "",
        f"Exact vs exact with another seed: Spearman {s['spearman']}, Kendall {s['kendall']}, "
        f"top-1 {s['topK']['1']}, top-3 {s['topK']['3']}.",
        "",
    ]
    r = results["top1VsFull"]
    share = r["top1ShareOfFullGain"]
    lines += [
        f"| {steps} RL steps | layers | eval before → after | gain | trainable params | train time |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("top-1", "full"):
        run = r[name]
        lines.append(
            f"| {name} | {run['layers']} | {r['before']:.3f} → {run['after']:.3f} | {run['gain']:+.3f} | "
            f"{run['trainableParameters']:,} | {run['trainSeconds']} s |"
        )
    lines.append("")
    lines.append(f"Top-1 layer recovers {share:.0%} of the full-model gain." if share is not None else "")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
