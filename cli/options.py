"""Options shared by several commands, and the spec they resolve to.

Every command that takes SPEC also runs from `--model URI` alone (with optional `--dataset` and
`--reward`): the rest of the spec takes its defaults, and a note says which defaults stood in for
data the user did not name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.console import note
from service.errors import SpecError
from service.spec.loading import load_spec
from service.spec.models import DatasetSpec, LayerAdaptationSpec, RewardSpec

SpecArg = Annotated[
    Path | None,
    typer.Argument(
        metavar="SPEC", help="LayerAdaptation YAML (the whole resource or only its spec).", show_default=False
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", metavar="URI", help="Model: builtin:demo, a local directory or hf://org/name."),
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset", metavar="URI", help="Dataset: builtin:arith, a .jsonl/.csv/.parquet file or hf://…"
    ),
]
RewardOpt = Annotated[
    list[str] | None,
    typer.Option("--reward", metavar="NAME", help="Reward (repeatable); see `layerpilot rewards`."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result (or the error) as JSON on stdout.")]
MaxStepsOpt = Annotated[
    int | None, typer.Option("--max-steps", metavar="N", min=1, help="Override training.maxSteps.")
]
ParallelOpt = Annotated[
    int | None,
    typer.Option(
        "--parallel", metavar="N", min=1, help="Exact-probe runs at once (default: sized to the machine)."
    ),
]
NoMlflowOpt = Annotated[
    bool,
    typer.Option(
        "--no-mlflow",
        help="Do not track this run in MLflow (default: the spec's trackingUri, MLFLOW_TRACKING_URI, "
        "or ./mlflow.db).",
    ),
]


def resolve_spec(
    spec_path: Path | None, model: str | None, dataset: str | None, rewards: list[str] | None
) -> LayerAdaptationSpec:
    """The spec from a file, or defaults, with command-line overrides applied and re-validated."""
    if spec_path is None and model is None:
        raise SpecError("SPEC", "no spec given", "pass a SPEC file or --model URI")
    spec = load_spec(spec_path)
    data = spec.model_dump(mode="json", by_alias=True)
    if model is not None:
        data["model"] = {**data["model"], "uri": model, "revision": None}
    if dataset is not None:
        data["dataset"] = {**data["dataset"], "uri": dataset}
    if rewards:
        data["rewards"] = [RewardSpec(name=name).model_dump(by_alias=True) for name in rewards]
    spec = load_spec(data)
    # Fail on a bad model, dataset or reward before any work starts or progress is printed.
    # Deferred: service.models loads transformers (seconds); --help and bad input stay instant.
    from service.models.hub import resolve_model_dir
    from service.rewards.registry import build_rewards

    resolve_model_dir(spec.model.uri, spec.model.revision)
    build_rewards(spec.rewards)
    return spec


def announce_defaults(
    spec_path: Path | None, dataset: str | None, rewards: list[str] | None, spec: LayerAdaptationSpec
) -> None:
    """Without a SPEC file, say (once work starts) which defaults stand in for unnamed data."""
    if spec_path is not None:
        return
    stood_in, options = [], []
    if dataset is None:
        stood_in.append(f"dataset {DatasetSpec().uri}")
        options.append("--dataset")
    if not rewards:
        stood_in.append(f"reward {', '.join(r.name for r in spec.rewards)}")
        options.append("--reward")
    if stood_in:
        note(f"no SPEC: using the default {' and '.join(stood_in)}; name yours with {'/'.join(options)}")
