"""Which layers to train: positional rules, manual lists, or a probe report's ranking."""

from __future__ import annotations

from pathlib import Path

from service.errors import InputError
from service.models.stack import inspect_stack
from service.models.weights import model_fingerprint
from service.probe.report import ProbeReport, check_same_base, read_report
from service.spec.indices import check_layer_indices
from service.spec.models import LayerAdaptationSpec, ModelSpec, SelectionSpec, Strategy


def positional_layers(strategy: str, k: int, num_layers: int) -> list[int]:
    """Layers chosen by position alone.

    >>> positional_layers("mid-k", 2, 6)
    [2, 3]
    >>> positional_layers("only-top", 2, 6)
    [4, 5]
    >>> positional_layers("only-bottom", 1, 6)
    [0]
    """
    k = min(k, num_layers)
    if strategy == Strategy.only_top.value:
        return list(range(num_layers - k, num_layers))
    if strategy == Strategy.only_bottom.value:
        return list(range(k))
    if strategy == Strategy.mid_k.value:
        start = (num_layers - k) // 2
        return list(range(start, start + k))
    raise ValueError(f"{strategy} is not a positional strategy")


def select_layers(selection: SelectionSpec, report: ProbeReport) -> list[int]:
    """The layers a selection rule picks given a probe report, sorted by index.

    `top-k` takes the k best-ranked layers (ranks already break ties deterministically); the
    positional rules ignore the scores; `manual` takes the listed layers.
    """
    num_layers = report.num_layers
    if selection.strategy == Strategy.top_k.value:
        if selection.k > len(report.layers):
            raise InputError(
                "selection.k",
                f"top-{selection.k} needs {selection.k} probed layers; the probe scored {len(report.layers)}",
                f"use k <= {len(report.layers)} or probe more layers",
            )
        return sorted(report.ranking[: selection.k])
    if selection.strategy == Strategy.manual.value:
        return check_layer_indices(list(selection.layers or []), num_layers, field="selection.layers")
    return positional_layers(selection.strategy, selection.k, num_layers)


def layers_from_report(report_path: Path, model: ModelSpec | None = None) -> list[int]:
    """The `selected` layers of a probe_report.json (of the base `model`, when given: the same weights
    when the report records their fingerprint, else the same `model.uri`)."""
    report = read_report(report_path, "--from-probe")
    if model is not None and report.base_fingerprint is not None:
        check_same_base(
            report, model.uri, model_fingerprint(model), field="--from-probe", where=str(report_path)
        )
    elif model is not None and report.model != model.uri:
        raise InputError(
            "--from-probe",
            f"{report_path} is a probe of {report.model}, not of {model.uri}",
            "probe this model first, or pass --layers",
        )
    selected = report.selected
    if not selected:
        raise InputError("--from-probe", f"{report_path} has no selected layers", "re-run `layerpilot probe`")
    return selected


def layers_for_training(
    spec: LayerAdaptationSpec,
    *,
    layers: list[int] | None = None,
    probe_report: Path | None = None,
    num_layers: int | None = None,
) -> list[int]:
    """The layers a `train` run uses: explicit > probe report > the spec's selection rule."""
    if layers is not None and probe_report is not None:
        raise InputError("--layers", "given together with --from-probe", "pass only one of them")
    count = num_layers if num_layers is not None else len(inspect_stack(spec.model))
    if layers is not None:
        return check_layer_indices(layers, count, field="--layers")
    if probe_report is not None:
        return check_layer_indices(layers_from_report(probe_report, spec.model), count, field="--from-probe")
    selection = spec.selection
    if selection.strategy == Strategy.manual.value:
        return check_layer_indices(list(selection.layers or []), count, field="selection.layers")
    if selection.strategy == Strategy.top_k.value:
        raise InputError(
            "selection.strategy",
            "top-k needs a probe report to rank layers",
            "pass --layers, --from-probe REPORT, or use strategy manual/mid-k",
        )
    return positional_layers(selection.strategy, selection.k, count)
