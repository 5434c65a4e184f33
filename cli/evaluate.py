"""`layerpilot eval`: the greedy score of the base model, or of base + a layer patch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.base import App
from cli.console import emit, guarded, say
from cli.options import (
    DatasetOpt,
    EvalSizeOpt,
    JsonOpt,
    ModelOpt,
    RewardOpt,
    SpecArg,
    SpecOptions,
    announce_defaults,
    resolve_spec,
)
from cli.progress import progress_display

app = App()


@app.command("eval")
@guarded
def evaluate(
    *,
    spec_path: SpecArg = None,
    patch: Annotated[
        Path | None, typer.Option("--patch", metavar="DIR", help="Score base + the layer patch in DIR.")
    ] = None,
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    reward: RewardOpt = None,
    eval_size: EvalSizeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score the base model, or base + patch, on the held-out eval rows (greedy)."""
    options = SpecOptions(spec_path, model, dataset, reward, eval_size)
    spec = resolve_spec(options)
    from service.evaluation import evaluate as run_evaluation  # deferred, after the input checks: torch

    announce_defaults(options, spec)
    with progress_display() as shown:
        task = spec.environment.uri if spec.environment else spec.prompts.uri
        shown.note(f"evaluating {spec.model.uri}{' + ' + str(patch) if patch else ''} on {task}")
        result = run_evaluation(spec, patch_dir=patch, progress=shown)

    def render() -> None:
        items = "episodes" if spec.environment else "items"
        say(f"score {result.score:.4f} on {result.num_items} {items} ({result.seconds:.1f}s)")
        for name, value in result.rewards.items():
            say(f"  {name}: {value:.4f}")

    emit(result.to_json(), as_json=as_json, render=render)
