"""Gain for the cost on the demo: what each kind of RL training buys, and what it costs, over 3 seeds.

The demo spec (`examples/demo.yaml`: 6-layer Qwen3, `builtin:arith`, 300 eval items, 60 GRPO steps)
is probed once with its own exact probe; then, for 3 training seeds each, in a fresh process per run
(so its peak RSS is its own): the probe's top-1 layer at the shared learning rate and at the spec's
`training.learningRateMultiplier` (what `layerpilot train` uses), its top-2 layers, the full model
(every parameter) at the shared rate, and LoRA (PEFT r=16 on every linear layer of every decoder
layer) at the shared rate and at 10 × it (LoRA users raise theirs). Every run has the spec's steps
and batch. Eval gain = greedy accuracy after − before, on the same items.

Run: `.venv/bin/python benchmarks/gain_for_cost.py [--seeds 3]` (about 6 minutes on 2 cores);
writes its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import environment, peak_rss_gb, train_outside_layerpilot, write_section


def child(what: Any, seed: int, out: str, lr_scale: float) -> dict[str, Any]:
    """One training run in this process: train, evaluate, report gain and cost."""
    from service.data import load_rows
    from service.evaluation import evaluate, evaluate_model
    from service.rewards.registry import build_rewards
    from service.spec.demo import demo_spec
    from service.training.trainer import train

    spec = demo_spec()
    spec.training.seed = seed
    spec.algorithm.learning_rate *= lr_scale
    started = time.perf_counter()
    if isinstance(what, str):
        model, tokenizer, trainable, _ = train_outside_layerpilot(spec, Path(out), what)
        seconds = time.perf_counter() - started
        funcs, weights = build_rewards(spec.rewards)
        rows = load_rows(spec.prompts)[1]
        new_tokens = spec.algorithm.max_completion_length
        score = evaluate_model(model.eval(), tokenizer, rows, funcs, weights, max_new_tokens=new_tokens).score
    else:
        result = train(spec, what, Path(out))
        seconds = time.perf_counter() - started
        trainable = result.trainable_parameters
        score = evaluate(spec, patch_dir=Path(out)).score
    return {"score": score, "trainS": seconds, "peakGB": peak_rss_gb(), "trainable": trainable}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--child", nargs=4, metavar=("WHAT", "SEED", "OUT", "LR_SCALE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        what, seed, out, scale = args.child
        print(json.dumps(child(json.loads(what), int(seed), out, float(scale))))
        return

    from service.evaluation import evaluate
    from service.probe.run import run_probe
    from service.spec.demo import demo_spec

    started = time.perf_counter()
    spec = demo_spec()
    with tempfile.TemporaryDirectory() as tmp:
        probed = time.perf_counter()
        report = run_probe(spec, Path(tmp) / "probe", parallel=1)
        probe_seconds = time.perf_counter() - probed
        ranking = report.ranking
        before = evaluate(spec).score
        times = spec.training.learning_rate_multiplier  # layerpilot's training of the selected layers
        configs: dict[str, tuple[Any, float]] = {
            f"top-1 (layer {ranking[0]}), shared lr": (ranking[:1], 1.0 / times),
            f"top-1 (layer {ranking[0]}), lr × {times:g} (the spec's multiplier)": (ranking[:1], 1.0),
            f"top-2 (layers {sorted(ranking[:2])}), lr × {times:g}": (sorted(ranking[:2]), 1.0),
            "full model (every parameter)": ("every", 1.0),
            "LoRA r=16, all linear": ("lora", 1.0),
            "LoRA r=16, all linear, lr × 10": ("lora", 10.0),
        }
        runs: dict[str, list[dict[str, Any]]] = {}
        for name, (what, scale) in configs.items():
            for seed in range(args.seeds):
                out = Path(tmp) / f"{len(runs)}-{seed}"
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    json.dumps(what),
                    str(seed),
                    str(out),
                    str(scale),
                ]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{name} seed {seed} failed:\n{done.stderr[-3000:]}")
                run = json.loads(done.stdout.strip().splitlines()[-1])
                runs.setdefault(name, []).append(run)
                print(f"  {name} seed {seed}: {before:.3f} -> {run['score']:.3f}", flush=True)

    full_gain = statistics.mean(r["score"] - before for r in runs["full model (every parameter)"])
    lr = spec.algorithm.learning_rate
    body = [
        environment(),
        "",
        f"`examples/demo.yaml`: {spec.training.max_steps} GRPO steps, batch {spec.training.batch_size} "
        f"× {spec.algorithm.num_generations} generations, lr {lr:g}, {spec.prompts.eval_size} eval items; "
        f"seeds 0–{args.seeds - 1}. Layers from the spec's own {spec.probe.mode} probe "
        f"({probe_seconds:.0f} s, ranking {ranking}). Eval before training: {before:.3f}.",
        "",
        "| training | trained params | eval gain, mean ± sd | share of full gain | peak RSS | train time |",
        "|---|---|---|---|---|---|",
    ]
    for name, group in runs.items():
        gains = [r["score"] - before for r in group]
        sd = statistics.stdev(gains) if len(gains) > 1 else 0.0
        share = statistics.mean(gains) / full_gain if full_gain else float("nan")
        body.append(
            f"| {name} | {group[0]['trainable']:,} | {statistics.mean(gains):+.3f} ± {sd:.3f} | "
            f"{share:.0%} | "
            f"{statistics.mean(r['peakGB'] for r in group):.2f} GB | "
            f"{statistics.mean(r['trainS'] for r in group):.1f} s |"
        )
    body += ["", f"Wall time of this script: {time.perf_counter() - started:.0f} s."]
    title = "Gain for the cost on the demo (`benchmarks/gain_for_cost.py`)"
    write_section("gain", title, "\n".join(body), Path(__file__).name)


if __name__ == "__main__":
    main()
