"""How long a mistake takes to be told: the wall time of `layerpilot` answering bad input, and of
`registry list`, for this tree and for an earlier revision, side by side in one run.

Each command runs as a user runs it, in its own process (`python -m cli.main …` with the tree on
`PYTHONPATH`, the same virtual environment for both), alternating between the trees, several times;
the table shows medians. The earlier revision is checked out into a temporary directory with
`git worktree` (default: e3a2815, before the input checks moved ahead of the heavy imports).

Run: `.venv/bin/python benchmarks/input_latency.py [--baseline REV] [--repeats 5]` (about a minute);
writes its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, environment, write_section

COMMANDS = {
    "a spec file that does not exist": ["eval", "{tmp}/nope.yaml"],
    "a model directory that does not exist": ["eval", "--model", "{tmp}/no-model"],
    "a dataset that does not exist": ["train", "--model", "builtin:demo", "--dataset", "{tmp}/none.jsonl"],
    "`--out` that is a file": ["train", "--model", "builtin:demo", "--layers", "1", "--out", "{tmp}/file"],
    "a layer the model lacks": ["train", "--model", "builtin:demo", "--layers", "9", "--no-mlflow"],
    "`registry list` of a local store": ["registry", "list", "--tracking-uri", "sqlite:///{tmp}/mlflow.db"],
}


def run(tree: Path, args: list[str], tmp: Path) -> tuple[float, int]:
    """Wall seconds of one command from `tree`, and its exit code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(tree)
    command = [sys.executable, "-m", "cli.main", *(arg.replace("{tmp}", str(tmp)) for arg in args)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp)
    return time.perf_counter() - started, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--baseline", default="e3a2815")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "file").write_text("not a directory\n")
        from mlflow import MlflowClient

        MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}").search_experiments()  # an empty local store
        old = tmp / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.baseline], cwd=ROOT, check=True)
        try:
            trees = {"before": old, "now": ROOT}
            times: dict[tuple[str, str], list[float]] = {}
            codes: dict[tuple[str, str], int] = {}
            for what, command in COMMANDS.items():
                for _ in range(args.repeats):
                    for label, tree in trees.items():
                        seconds, code = run(tree, command, tmp)
                        times.setdefault((what, label), []).append(seconds)
                        codes[what, label] = code
                print(
                    f"  {what}: {statistics.median(times[what, 'before']):.2f} s → "
                    f"{statistics.median(times[what, 'now']):.2f} s",
                    flush=True,
                )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False)
    rows = [
        f"| {what} | {statistics.median(times[what, 'before']):.2f} s | "
        f"{statistics.median(times[what, 'now']):.2f} s | "
        f"{statistics.median(times[what, 'now']) / statistics.median(times[what, 'before']):.2f}× | "
        f"{codes[what, 'now']} |"
        for what in COMMANDS
    ]
    body = [
        environment(),
        "",
        f"Wall time of each command in its own process, median of {args.repeats}, alternating between "
        f"`{args.baseline}` (before) and this tree (now), the same virtual environment.",
        "",
        "| bad input (or command) | before | now | now / before | exit code now |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Goal: an input error answers in about a second. A layer the model lacks is checked against "
        "the model's config, which needs transformers (seconds); the other input errors are checked "
        "before any heavy library loads.",
        "",
        f"Wall time of this script: {time.perf_counter() - started:.0f} s.",
    ]
    title = "Input-error latency (`benchmarks/input_latency.py`)"
    write_section("latency", title, "\n".join(body), Path(__file__).name)


if __name__ == "__main__":
    main()
