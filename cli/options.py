"""Options shared by several commands, and the spec they resolve to.

Every command that takes SPEC also runs from `--model URI` alone (with optional `--dataset`,
`--reward` and `--eval-size`): the rest of the spec takes its defaults, and a note names each
default that changes the result (the data, the reward, the eval size, steps, learning rate).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from cli.console import note
from service.errors import InputError
from service.ranks import is_main
from service.spec.loading import load_spec
from service.spec.models import LayerAdaptationSpec, RewardSpec

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
EvalSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--eval-size",
        metavar="N",
        min=1,
        help="Held-out rows for evaluation (dataset.evalSize; default 64, a fifth of a small dataset).",
    ),
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
        help="Do not publish this run to MLflow (default: the spec's trackingUri, MLFLOW_TRACKING_URI, "
        "or ./mlflow.db); its record stays in the output directory for `mlflow sync` later.",
    ),
]


@dataclass(frozen=True)
class SpecOptions:
    """What a command was told about its spec: a file, or a model with optional data and reward."""

    path: Path | None
    model: str | None = None
    dataset: str | None = None
    rewards: list[str] | None = None
    eval_size: int | None = None


def resolve_spec(given: SpecOptions) -> LayerAdaptationSpec:
    """The spec from a file, or defaults, with command-line overrides applied and re-validated
    (`announce_defaults` says which defaults stood in, once the rest of the input checked out)."""
    if given.path is None and given.model is None:
        raise InputError("SPEC", "no spec given", "pass a SPEC file or --model URI")
    spec = load_spec(given.path)
    data = spec.model_dump(mode="json", by_alias=True)
    if given.model is not None:
        data["model"] = {**data["model"], "uri": given.model, "revision": None}
    if given.dataset is not None:
        data["dataset"] = {**(data.get("dataset") or {}), "uri": given.dataset}
    if given.rewards:
        data["rewards"] = [RewardSpec(name=name).model_dump(by_alias=True) for name in given.rewards]
    if given.eval_size is not None:
        data["dataset"] = {**(data.get("dataset") or {}), "evalSize": given.eval_size}
    spec = load_spec(data)
    # Fail on a bad model, dataset or reward before any work starts or progress is printed.
    from service.data import check_source
    from service.environments.registry import environment_factory
    from service.models.hub import resolve_model_dir
    from service.rewards.registry import build_rewards

    resolve_model_dir(spec.model.uri, spec.model.revision)
    if spec.dataset is not None:
        check_source(spec.dataset)
    if spec.environment is not None:
        environment_factory(spec.environment, state_key=spec.algorithm.advantage_estimator == "gigpo")
    build_rewards(spec.rewards)
    return spec


def announce_defaults(given: SpecOptions, spec: LayerAdaptationSpec) -> None:
    """Without a SPEC file, name every default that changes the result, and how to set it (once:
    under a distributed launcher, the main process says it)."""
    if given.path is not None or not is_main():
        return
    stood_in = []
    if given.dataset is None:
        stood_in.append(f"dataset {spec.prompts.uri} (--dataset)")
    if not given.rewards:
        stood_in.append(f"reward {', '.join(r.name for r in spec.rewards)} (--reward)")
    if given.eval_size is None:
        stood_in.append("64 eval rows, a fifth of a small dataset (--eval-size)")
    stood_in.append(f"{spec.training.max_steps} training steps (--max-steps)")
    stood_in.append(
        f"learning rate {spec.algorithm.learning_rate:g} × "
        f"{_multiplier(spec.training.learning_rate_multiplier)} "
        "and every other setting of a spec (write a SPEC file: examples/demo.yaml)"
    )
    note(f"no SPEC, so these defaults apply: {'; '.join(stood_in)}")


def _multiplier(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:g}"
