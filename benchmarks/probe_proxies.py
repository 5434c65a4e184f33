"""Probe benchmark on the shipped demo model, everything side by side in one process.

1. Exact probe vs the fast proxies (`layerpilot probe validate`): Spearman, Kendall, top-k overlap,
   and each proxy's wall time as a share of exact.
2. The exact probe again with another seed: how well exact agrees with itself bounds what any proxy
   can reach on this model.

(What the top layers buy against full training, over seeds, is `gain_for_cost.py`.)

Run: `.venv/bin/python benchmarks/probe_proxies.py [--out DIR]` (about 2 minutes); writes its
section of benchmarks/RESULTS.md and the raw numbers to DIR/probe_proxies.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from common import environment, write_section

from service.probe.agreement import rank_agreement, validate_proxies
from service.probe.run import run_probe
from service.spec.demo import demo_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="layerpilot-probe-bench-")))
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    spec = demo_spec()
    results: dict[str, Any] = {
        "machine": environment(),
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

    (out / "probe_proxies.json").write_text(json.dumps(results, indent=2) + "\n")
    title = "Layer probe on the demo model (`benchmarks/probe_proxies.py`)"
    write_section("probe", title, _markdown(results, spec), Path(__file__).name)


def _markdown(results: dict[str, Any], spec: Any) -> str:
    v = results["validation"]
    lines = [
        environment(),
        "",
        f"`examples/demo.yaml`: {spec.prompts.eval_size} eval items, GRPO with "
        f"{spec.algorithm.num_generations} generations, batch {spec.training.batch_size}, lr "
        f"{spec.algorithm.learning_rate:g}, {spec.probe.steps} probe steps per exact run; the exact units "
        "ran one after another, so its wall time is its whole compute cost.",
        "",
        f"Exact probe: {v['exact']['wallSeconds']} s wall, ranking {v['exact']['ranking']} "
        f"(full gain {v['exact']['fullGain']}).",
        "",
        "| proxy | Spearman | Kendall | top-1 | top-3 | wall time | share of exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in v["proxies"].items():
        share = entry.get("shareOfExactWallTime")
        wall = entry.get("wallSeconds")
        lines.append(
            f"| {name} | {entry['spearman']:.3f} | {entry['kendall']:.3f} | {_overlap(entry, 1)} | "
            f"{_overlap(entry, 3)} | {'(same run)' if wall is None else f'{wall:.2f} s'} | "
            f"{'(same run)' if share is None else f'{share:.1%}'} |"
        )
    s = results["exactSelfAgreement"]
    lines += [
        "",
        f"Exact vs exact with another seed: Spearman {s['spearman']:.3f}, Kendall {s['kendall']:.3f}, "
        f"top-1 {_overlap(s, 1)}, top-3 {_overlap(s, 3)}.",
    ]
    return "\n".join(lines)


def _overlap(entry: dict[str, Any], k: int) -> str:
    """Top-k overlap as layers in common out of k."""
    return f"{round(entry['topK'][str(k)] * k)}/{k}"


if __name__ == "__main__":
    main()
