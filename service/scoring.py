"""Scoring a model a process may already hold: the base, or the base with a training's layers.

A probe unit and a calibration trial train the model kept in a `ResidentModel` and score it in place
when it is loaded as `service.evaluation.evaluate` would load it (float32 on the CPU); elsewhere,
and for a run that finished before this process started, the patch is applied to a fresh load.
"""

from __future__ import annotations

from pathlib import Path

from service.data import Row
from service.environments.registry import environment_factory
from service.environments.seeds import EpisodeStart
from service.evaluation import EvalResult, evaluate_loaded
from service.patch import load_patched_model, read_patch
from service.progress import SILENT, Progress
from service.spec.models import LayerAdaptationSpec
from service.training.config import choose_precision
from service.training.resident import ResidentModel


def score(
    spec: LayerAdaptationSpec,
    patch_dir: Path | None,
    resident: ResidentModel | None,
    *,
    items: list[Row] | list[EpisodeStart] | None = None,
    progress: Progress = SILENT,
) -> EvalResult:
    """The base model (no `patch_dir`) or base + the patch in `patch_dir`, scored on the eval items
    or on `items`: in place when `resident` holds that model as a fresh load would, else loaded anew."""
    factory = environment_factory(spec.environment) if spec.environment else None  # before the model loads
    loaded = None
    if resident is not None and (patch_dir is None or resident.holds_training):
        if patch_dir is None:
            resident.take(spec.model, choose_precision(spec.training.precision))
        loaded = resident.as_evaluated()
    if loaded is None:  # also a run finished before this call: its patch, on a fresh load
        loaded = load_patched_model(spec.model, read_patch(patch_dir) if patch_dir else None)
    return evaluate_loaded(spec, *loaded, factory, items=items, progress=progress)
