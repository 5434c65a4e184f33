"""The fast probe modes as reports: proxy scores (`service.probe.proxies`, `service.probe.knockout`),
ranks and the selection; contributions stay null."""

from __future__ import annotations

from typing import Any

from service.models.stack import inspect_stack
from service.models.weights import model_fingerprint
from service.probe.knockout import knockout_scores
from service.probe.proxies import gradient_scores, spectrum_scores
from service.probe.report import LayerScore, ProbeReport, measured_on, rank_layers
from service.probe.selection import select_layers
from service.probe.units import candidate_layers
from service.progress import SILENT, Progress
from service.spec.models import LayerAdaptationSpec, ProbeMode


def run_proxy(spec: LayerAdaptationSpec, mode: str, *, progress: Progress = SILENT) -> ProbeReport:
    """A fast-mode report: proxy scores, ranks and the selection; contribution stays null."""
    candidates = candidate_layers(spec, len(inspect_stack(spec.model)))
    progress.start("probe")
    progress.update("probe", 0, f"{mode} scores of {len(candidates)} layers")
    if mode == ProbeMode.gradient.value:
        result = gradient_scores(spec, candidates)
    elif mode == ProbeMode.knockout.value:
        result = knockout_scores(spec, candidates, progress=progress)
    else:
        result = spectrum_scores(spec, candidates)
    ranks = rank_layers(result.scores, result.num_layers)
    extra: dict[str, Any] = {"candidates": candidates}
    notes = [
        f"{mode} is a proxy: check it against exact on your model family with `layerpilot probe validate`"
    ]
    if mode == ProbeMode.knockout.value:
        notes.append(
            f"knockout ran {len(candidates) + 1} greedy evaluations and no training ({result.seconds:.1f}s): "
            "a layer's score is how much the base model's eval score drops without it"
        )
    if mode == ProbeMode.spectrum.value:
        notes.append(
            f"spectrum read the weights only ({result.seconds:.1f}s, no rollouts); exact needs "
            f"{len(candidates) + 1} RL runs of {spec.probe.steps} steps and {len(candidates) + 2} evaluations"
        )
    if result.step_seconds is not None:
        # One exact unit per candidate plus the full run, each `probe.steps` RL steps (evals not counted).
        estimate = (len(candidates) + 1) * spec.probe.steps * result.step_seconds
        extra["exactCostEstimateSeconds"] = round(estimate, 2)
        extra["rolloutStepSeconds"] = round(result.step_seconds, 4)
        notes.append(
            f"{mode} took {result.seconds:.1f}s; exact would need about {estimate:.0f}s of RL steps "
            f"({len(candidates) + 1} runs x {spec.probe.steps} steps) plus {len(candidates) + 2} evaluations"
        )
    report = ProbeReport(
        model=spec.model.uri,
        task=measured_on(spec),
        base_fingerprint=model_fingerprint(spec.model),
        num_layers=result.num_layers,
        mode=mode,
        layers_path=result.stack_path,
        layers=[
            LayerScore(
                index=i,
                name=f"{result.stack_path}.{i}",
                score=result.scores[i],
                rank=ranks[i],
                details=result.details.get(i, {}),
            )
            for i in candidates
        ],
        strategy=spec.selection.strategy,
        elapsed_seconds=result.seconds,
        notes=notes,
        extra=extra,
    )
    report.selected = select_layers(spec.selection, report)
    progress.finish("probe", f"selected {report.selected}")
    return report
