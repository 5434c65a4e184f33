"""The agentic row of the research finding, on our own agent model: the exact probe's C(k) over all
layers of `builtin:demo-agent` on gridworld success rate, and the probe's top layer vs full-model
RL (GRPO) at the same shared learning rate and steps, over several seeds, side by side in one run.

Run: `.venv/bin/python benchmarks/agent_probe.py [--seeds 3] [--steps 40]` (about 15 minutes on 2
cores); writes its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import environment, write_section

from service.evaluation import evaluate
from service.probe.intervals import paired_intervals
from service.probe.run import run_probe
from service.spec.demo import demo_spec
from service.training.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    started = time.perf_counter()
    spec = demo_spec("agent")
    env = spec.environment
    assert env is not None
    rate = spec.algorithm.learning_rate
    with tempfile.TemporaryDirectory(prefix="layerpilot-agent-probe-") as tmp:
        probe_started = time.perf_counter()
        report = run_probe(spec, Path(tmp) / "probe", mode="exact", parallel=1)
        probe_seconds = time.perf_counter() - probe_started
        rows = []
        for layer in sorted(report.layers, key=lambda x: x.index):
            score = layer.score_interval
            contribution = layer.contribution_interval
            rows.append(
                f"| {layer.index} | {layer.score:.3f} | "
                f"{'–' if score is None else f'{score[0]:.3f} … {score[1]:.3f}'} | "
                f"{'–' if layer.contribution is None else f'{layer.contribution:.2f}'} | "
                f"{'–' if contribution is None else f'{contribution[0]:.2f} … {contribution[1]:.2f}'} | "
                f"{layer.rank} |"
            )
        top = min(report.layers, key=lambda x: x.rank).index
        base = evaluate(spec)
        scores: dict[str, list[list[float]]] = {"base": [base.item_scores], "full": [], str(top): []}
        for seed in range(args.seeds):
            spec.training.seed = seed
            for name, layers in (("full", list(range(report.num_layers))), (str(top), [top])):
                out = Path(tmp) / f"{name}-{seed}"
                train(spec, layers, out, max_steps=args.steps, learning_rate=rate)
                scores[name].append(evaluate(spec, patch_dir=out).item_scores)
        intervals = paired_intervals(scores)
    means = {name: statistics.mean(statistics.mean(row) for row in rows_) for name, rows_ in scores.items()}
    gain = means["full"] - means["base"]
    share = (means[str(top)] - means["base"]) / gain if gain else float("nan")
    top_c = intervals[str(top)]["contribution"]

    def interval(name: str) -> str:
        low, high = intervals[name]["score"] or (float("nan"), float("nan"))
        return f"{means[name]:.3f} ({low:.3f} … {high:.3f})"

    body = f"""{environment()}

`examples/agent.yaml` (gridworld sizes 4–5, walls 0.2, at most {env.max_turns} turns; {env.eval_episodes}
greedy evaluation episodes from seeds disjoint from training's; GRPO, {spec.algorithm.num_generations}
episodes per group, batch {spec.training.batch_size}, shared learning rate {rate:g}). Whole run:
{time.perf_counter() - started:.0f} s.

**Exact probe** ({spec.probe.steps} RL steps per unit, one seed; {probe_seconds:.0f} s): S_base
{report.baseline_score:.3f}, S_full {report.full_score:.3f}.

| layer | S_k (success) | 95 % interval | C(k) | C(k) 95 % interval | rank |
|---:|---:|---|---:|---|---:|
{chr(10).join(rows)}

{chr(10).join("note: " + n for n in report.notes)}

**Top-1 (layer {top}) vs full-model RL**, {args.steps} steps at the same rate, {args.seeds} seeds (success
rate, mean over seeds, 95 % interval over episodes and seeds):

| | success rate |
|---|---|
| base | {interval("base")} |
| full model | {interval("full")} |
| layer {top} alone | {interval(str(top))} |

Layer {top} alone recovers **{share:.0%}** of the full model's gain ({gain:+.3f}); C({top}) 95 % interval
{"–" if top_c is None else f"{top_c[0]:.2f} … {top_c[1]:.2f}"}.
"""
    write_section(
        "agent-probe", "Agents: the exact probe and one layer vs the full model", body, "agent_probe.py"
    )
    print(body)


if __name__ == "__main__":
    main()
