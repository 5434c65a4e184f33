"""Tracking overhead: the demo's training with and without MLflow logging to a real local server.

`layerpilot train examples/demo.yaml --layers 1` (60 GRPO steps) runs as a user runs it, in its
own process, alternately with `--no-mlflow` and with `MLFLOW_TRACKING_URI` pointing at a real
`mlflow server` (sqlite store, local artifacts) on this machine: its record published when it
starts, every 5 s while it trains, and at its end (the run, its parameters, TRL's metrics at every
step, the weight change per layer and the patch files as artifacts). Wall time of the whole
command, median of the repeats; the difference is what tracking costs.

Run: `.venv/bin/python benchmarks/tracking_overhead.py [--repeats 5]` (about 3 minutes on 2 cores);
writes its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, environment, write_section

from tests.mlflow_server import start_server

SPEC = ROOT / "examples" / "demo.yaml"
# `layerpilot` itself, with a stopwatch around every publish it makes (the same in both variants):
# the time publishing takes, mostly in a background thread beside the training; the wall-time
# difference is what it costs the command.
LAYERPILOT = """
import atexit, sys, time
from service.tracking import publish
spent = [0.0]
original = publish.Publisher.publish
def timed(self):
    started = time.perf_counter()
    try:
        return original(self)
    finally:
        spent[0] += time.perf_counter() - started
publish.Publisher.publish = timed
atexit.register(lambda: print(f"mlflow-seconds {spent[0]:.4f}", file=sys.stderr))
from cli.main import main
sys.argv = ["layerpilot", *sys.argv[1:]]
main()
"""


def timed_train(out: Path, tracking_uri: str | None) -> tuple[float, float, float, int]:
    """Wall seconds of one `layerpilot train`, its training seconds, its seconds in MLflow requests,
    and its steps."""
    command = [
        sys.executable,
        "-c",
        LAYERPILOT,
        "train",
        str(SPEC),
        "--layers",
        "1",
        "--out",
        str(out),
        "--json",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    else:
        command.append("--no-mlflow")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=out.parent)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"layerpilot train failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout)
    mlflow_s = float(done.stderr.rsplit("mlflow-seconds ", 1)[1].split()[0])
    return wall, float(result["seconds"]), mlflow_s, int(result["globalStep"])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    started = time.perf_counter()
    walls: dict[str, list[float]] = {"without": [], "with": []}
    trains: dict[str, list[float]] = {"without": [], "with": []}
    in_mlflow: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "mlflow")
        try:
            timed_train(Path(tmp) / "warm-up", None)  # first run pays cold file caches
            for repeat in range(args.repeats):
                for kind in ("without", "with"):
                    uri = server.uri if kind == "with" else None
                    wall, train_s, mlflow_s, steps = timed_train(Path(tmp) / f"{kind}-{repeat}", uri)
                    walls[kind].append(wall)
                    trains[kind].append(train_s)
                    if kind == "with":
                        in_mlflow.append(mlflow_s)
                    print(f"  {kind} MLflow: {wall:.1f} s wall, {train_s:.1f} s training", flush=True)
        finally:
            server.stop()
    without, with_ = statistics.median(walls["without"]), statistics.median(walls["with"])
    train_without, train_with = statistics.median(trains["without"]), statistics.median(trains["with"])
    overhead = (with_ - without) / without
    in_training = (train_with - train_without) / train_without
    direct = statistics.median(in_mlflow)
    body = [
        environment(),
        "",
        f"`layerpilot train examples/demo.yaml --layers 1`, {steps} GRPO steps, {args.repeats} repeats "
        "each way, alternating; a real `mlflow server` (sqlite, one worker) on the same machine.",
        "",
        "| | wall time of the command (median) | of which `train` (median) |",
        "|---|---|---|",
        f"| `--no-mlflow` | {without:.2f} s | {train_without:.2f} s |",
        f"| tracked to the server | {with_:.2f} s | {train_with:.2f} s |",
        f"| overhead | {with_ - without:+.2f} s ({overhead:+.1%}) | {train_with - train_without:+.2f} s "
        f"({in_training:+.1%}, {1000 * (train_with - train_without) / steps:+.1f} ms per step) |",
        f"| time inside publishes (median; mostly in a background thread) | {direct:.2f} s "
        f"({direct / with_:.1%} of the tracked command) | |",
        "",
        f"Goal: tracking costs at most a few percent (≤ 3 %) of training time. The training itself "
        f"took {in_training:+.1%} ({'met' if in_training <= 0.03 else '**not met**'}); the whole command "
        f"{overhead:+.1%}, {with_ - without:+.2f} s that a `--no-mlflow` run does not spend at all "
        "(importing MLflow, the first publish that creates the runs, the last one that ends them). "
        "Publishing took "
        f"{direct / with_:.1%} of the command, most of it in a background thread beside the training. "
        f"The wall-time difference swings by ±{_spread(walls):.1f} s between repeats here.",
        "",
        f"Wall time of this script: {time.perf_counter() - started:.0f} s.",
    ]
    title = "Tracking overhead (`benchmarks/tracking_overhead.py`)"
    write_section("tracking", title, "\n".join(body), Path(__file__).name)


def _spread(walls: dict[str, list[float]]) -> float:
    """Half the range of one variant's wall times (the larger of the two): the noise of a repeat."""
    return max((max(v) - min(v)) / 2 for v in walls.values())


if __name__ == "__main__":
    main()
