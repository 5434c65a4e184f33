"""The probe with its model kept loaded vs one load per unit, and halving vs exact, side by side.

Since issue 22 a probe process loads its model once and trains it unit after unit, putting the
trained layers' base weights back in between (`service.training.resident`); before, every unit
loaded the model, and every halving rung with it. Both ways run here on the same units, one after
the other in this process, and give the same partial results (the tests check that; this script
checks the scores too):

- the demo: an exact probe of all 6 layers (the demo spec, 30 steps), then a halving probe in the
  same directory (it reuses `base` and `full`);
- SmolLM2-135M-Instruct in the real-model regime (`real_model_probe.py`: 200 eval items, 20 steps):
  an exact probe of layers 0, 15 and 29 with `base` and `full`, then a halving probe of all 30
  layers with the model kept. An exact probe of 30 layers is not run (an hour here): its cost is
  interpolated over depth from the three exact units, as `real_model_halving.py` does.

Costs are the sum of the units' own seconds (what a probe pays, whichever units a directory
already held). Not part of `make bench` (about 40 minutes on 2 cores); run it alone:
`.venv/bin/python benchmarks/probe_kept_model.py`. Writes its section of RESULTS.md.
"""

from __future__ import annotations

import json
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import environment, write_section
from real_model_probe import addition_spec, regime_arguments

from service.models.loading import load_model_and_tokenizer
from service.probe.exact import run_exact
from service.probe.halving import run_halving
from service.spec.demo import demo_spec
from service.spec.models import LayerAdaptationSpec

TIMED = [0, 15, 29]


def _unit_seconds(out: Path) -> dict[str, float]:
    return {
        str(json.loads(p.read_text())["unit"]): float(json.loads(p.read_text())["seconds"])
        for p in (out / "partials").glob("*.json")
    }


def _scores(out: Path) -> dict[str, float]:
    return {
        str(json.loads(p.read_text())["unit"]): float(json.loads(p.read_text())["score"])
        for p in (out / "partials").glob("*.json")
    }


def _side_by_side(spec: LayerAdaptationSpec, tmp: Path, name: str) -> dict[str, Any]:
    """The exact probe of `spec` loading the model per unit, then keeping it, then halving (kept)."""
    reloaded, kept = tmp / f"{name}-reloaded", tmp / f"{name}-kept"
    t0 = time.perf_counter()
    load_model_and_tokenizer(spec.model)
    load_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_exact(spec, reloaded, parallel=1, keep_model=False)
    t1 = time.perf_counter()
    run_exact(spec, kept, parallel=1)
    t2 = time.perf_counter()
    kept_seconds, kept_scores = _unit_seconds(kept), _scores(kept)  # before halving adds its rungs
    halving_spec = spec.model_copy(deep=True)
    halving_spec.probe.layers = "all"
    halving = run_halving(halving_spec, kept, parallel=1)
    return {
        "loadSeconds": load_seconds,
        "reloadedWall": t1 - t0,
        "keptWall": t2 - t1,
        "reloaded": _unit_seconds(reloaded),
        "kept": kept_seconds,
        "sameScores": _scores(reloaded) == kept_scores,
        "halving": halving,
    }


def _exact_estimate(seconds: dict[str, float], timed: list[int], num_layers: int) -> float:
    per_layer = np.interp(np.arange(num_layers), timed, [seconds[str(k)] for k in timed])
    return seconds["base"] + seconds["full"] + float(per_layer.sum())


def main() -> None:
    args = regime_arguments(__doc__)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        demo = demo_spec()
        measured = {"demo": _side_by_side(demo, Path(tmp), "demo")}
        smol = addition_spec(Path(tmp), args, {"mode": "exact", "layers": TIMED})
        measured["SmolLM2"] = _side_by_side(smol, Path(tmp), "smollm2")
    with open(Path(tempfile.gettempdir()) / "probe_kept_model.pkl", "wb") as kept:
        pickle.dump(measured, kept)  # the figures survive a failure to write them up
    write_up(measured, time.perf_counter() - started)


def write_up(measured: dict[str, dict[str, Any]], seconds: float) -> None:
    rows, lines = [], []
    for name, m in measured.items():
        reloaded, kept = sum(m["reloaded"].values()), sum(m["kept"].values())
        per_unit = " · ".join(
            f"{u} {m['reloaded'][u]:.0f} → {m['kept'][u]:.0f} s" for u in m["kept"] if u in m["reloaded"]
        )
        rows.append(
            f"| {name} | {len(m['kept'])} | {reloaded:.0f} s | {kept:.0f} s | **{kept / reloaded:.2f}×** | "
            f"{'yes' if m['sameScores'] else 'NO'} |"
        )
        lines.append(
            f"- {name}, exact units (one load per unit → kept): {per_unit}. One load of the model: "
            f"{m['loadSeconds']:.1f} s."
        )
    demo_m, smol_m = measured["demo"], measured["SmolLM2"]
    demo_halving = demo_m["halving"].extra["halving"]
    demo_exact = sum(demo_m["kept"].values())
    smol_halving = smol_m["halving"].extra["halving"]
    num_layers = smol_m["halving"].num_layers
    estimate = _exact_estimate(smol_m["kept"], TIMED, num_layers)
    estimate_reloaded = _exact_estimate(smol_m["reloaded"], TIMED, num_layers)
    halving_share = smol_halving["costSeconds"] / estimate
    top3 = [layer.index for layer in sorted(smol_m["halving"].layers, key=lambda layer: layer.rank)[:3]]
    rungs = " → ".join(f"{len(r['layers'])} layers to step {r['steps']}" for r in smol_halving["rungs"])
    body = [
        environment(),
        "",
        "Exact probe, the same units one load per unit vs the model kept loaded (sum of unit seconds; "
        "one run each, in this order):",
        "",
        "| model | units | one load per unit | kept loaded | ratio | same scores |",
        "|---|---:|---:|---:|---:|---|",
        *rows,
        "",
        *lines,
        "",
        "Halving vs exact, both with the model kept loaded:",
        "",
        f"- demo, all {demo_m['halving'].num_layers} layers: halving {demo_halving['costSeconds']:.0f} s vs "
        f"exact {demo_exact:.0f} s: **{demo_halving['costSeconds'] / demo_exact:.2f}×** "
        f"({demo_halving['layerSteps']} of {demo_halving['exactLayerSteps']} layer-steps).",
        f"- SmolLM2, all {num_layers} layers ({rungs}): halving {smol_halving['costSeconds']:.0f} s vs an "
        f"exact probe estimated at {estimate:.0f} s from the kept units of layers "
        f"{', '.join(map(str, TIMED))} interpolated over depth: **{halving_share:.2f}×** "
        f"({smol_halving['layerSteps']} of {smol_halving['exactLayerSteps']} layer-steps). With one load per "
        f"unit, the exact estimate is {estimate_reloaded:.0f} s.",
        f"- SmolLM2 halving ranks layers {top3} first.",
        "",
        f"Wall time of this script: {seconds:.0f} s.",
    ]
    write_section(
        "probe-kept-model",
        "The probe keeps its model loaded; halving vs exact (`benchmarks/probe_kept_model.py`)",
        "\n".join(body),
        Path(__file__).name,
    )


if __name__ == "__main__":
    main()
