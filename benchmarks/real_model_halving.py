"""The halving probe over all 30 layers of SmolLM2-135M-Instruct, and what exact would have cost.

Same model, data and regime as `real_model_probe.py`. The halving probe runs over every layer;
an exact probe of 30 layers (about an hour here) is not run: its cost is estimated from exact
units of three layers run in the same process (first, middle, last: a layer's backward pass
reaches down to it, so cost varies with depth), interpolated over depth, plus the `base` and
`full` units both modes share. Its answer is read against the exact probe of a spread of layers
in `real_model_probe.py`'s section.

Not part of `make bench` (about 30 minutes on 2 cores); run it alone:
`.venv/bin/python benchmarks/real_model_halving.py`. Writes its section of RESULTS.md.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from common import environment, write_section
from real_model_probe import addition_spec, regime_arguments

from service.probe.run import run_probe
from service.probe.units import Unit, run_unit

TIMED = [0, 15, 29]


def main() -> None:
    args = regime_arguments(__doc__)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        spec = addition_spec(Path(tmp), args, {"mode": "halving", "layers": "all"})
        halving = run_probe(spec, Path(tmp) / "halving", parallel=1)
        timed = {k: float(run_unit(spec, Unit.of(k), Path(tmp) / "exact")["seconds"]) for k in TIMED}
    seconds = halving.extra["unitSeconds"]
    per_layer = np.interp(np.arange(halving.num_layers), TIMED, [timed[k] for k in TIMED])
    exact_estimate = float(seconds["base"]) + float(seconds["full"]) + float(per_layer.sum())
    cost = halving.extra["halving"]
    top = sorted(halving.layers, key=lambda layer: layer.rank)[:5]
    body = [
        environment(),
        "",
        f"SmolLM2-135M-Instruct, the regime of the section above ({args.eval_items} eval items, "
        f"{args.steps} steps, lr 1e-5), halving over all {halving.num_layers} layers: "
        + " → ".join(f"{len(r['layers'])} layers to step {r['steps']}" for r in cost["rungs"])
        + ".",
        "",
        f"S_base {halving.baseline_score:.3f}, S_full {halving.full_score:.3f}.",
        "",
        "| rank | layer | steps trained | S_k (95 % interval) | C(k) |",
        "|---|---|---|---|---|",
        *(
            f"| {layer.rank} | {layer.index} | {layer.details['steps']:.0f} | {layer.score:.3f} "
            f"({layer.score_interval[0]:.2f} … {layer.score_interval[1]:.2f}) | "
            + ("–" if layer.contribution is None else f"{layer.contribution:+.2f}")
            + " |"
            for layer in top
            if layer.score_interval
        ),
        "",
        f"Cost: halving {cost['costSeconds']:.0f} s for {len(seconds)} units, {cost['layerSteps']} of "
        f"{cost['exactLayerSteps']} layer-steps ({cost['layerSteps'] / cost['exactLayerSteps']:.0%}). "
        f"Exact units timed in this run: "
        + ", ".join(f"layer {k} {timed[k]:.0f} s" for k in TIMED)
        + f"; an exact probe of all {halving.num_layers} layers, interpolated over depth with the shared "
        f"base and full units, would cost about {exact_estimate:.0f} s: halving is "
        f"{cost['costSeconds'] / exact_estimate:.0%} of it (an estimate; exact was not run over 30 layers).",
        "",
        f"Notes: {'; '.join(halving.notes) or 'none'}.",
        "",
        f"Wall time of this script: {time.perf_counter() - started:.0f} s.",
    ]
    write_section(
        "real-model-halving",
        "The halving probe over every layer of the real model (`benchmarks/real_model_halving.py`)",
        "\n".join(body),
        Path(__file__).name,
    )


if __name__ == "__main__":
    main()
