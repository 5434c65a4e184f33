"""A training run's directory: resumable checkpoints, `run.json`, and the rules for reusing it.

Finished work is never overwritten: a directory that holds a run needs `--resume`, and resuming
is refused when the run was started with other layers, another model or other training settings
(its `trainingHash`, see `service.spec.fingerprint`).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from service.errors import InputError
from service.fields import Fields
from service.files import write_json
from service.patch import PATCH_META
from service.ranks import is_main
from service.spec.fingerprint import fingerprint
from service.spec.models import LayerAdaptationSpec

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
CALIBRATION = "calibration"  # `learningRateMultiplier: auto`: the ladder's runs and calibration.json
RUN_FILE = "run.json"


@dataclass(frozen=True)
class RunFile:
    """What `run.json` holds: what a resumed training must match."""

    layers: list[int]
    spec: LayerAdaptationSpec
    model_dir: Path


RUN_FILE_FIELDS: Fields[RunFile] = Fields(
    {
        "layers": ("the layers this run trains", lambda r: r.layers),
        "modelUri": ("the spec's `model.uri`", lambda r: r.spec.model.uri),
        "modelDir": ("where the base model's files were", lambda r: str(r.model_dir)),
        "specHash": ("hash of the whole spec", lambda r: fingerprint(r.spec)),
        "trainingHash": (
            "hash of what a resumed run must share with this one (data, rewards, algorithm, …)",
            lambda r: fingerprint(r.spec, "training"),
        ),
    }
)
"""Every field of `run.json`, written when a training starts (the reference is generated from this)."""


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N` under the run's checkpoint directory."""
    root = out_dir / CHECKPOINTS
    if not root.is_dir():
        return None
    found = [
        (int(p.name.split("-")[1]), p)
        for p in root.glob("checkpoint-*")
        if p.name.split("-")[1].isdigit() and (p / "trainer_state.json").exists()
    ]
    return max(found)[1] if found else None


def prepare_run_dir(
    out_dir: Path, spec: LayerAdaptationSpec, layers: list[int], *, resume: bool
) -> Path | None:
    """`check_run_dir`, then clear a half-written checkpoint directory; the checkpoint to resume from."""
    checkpoint = check_run_dir(out_dir, spec, layers, resume=resume)
    if resume and checkpoint is None:
        if (out_dir / CHECKPOINTS).is_dir():
            log.warning("--resume: no complete checkpoint in %s yet; starting from step 0", out_dir)
        if is_main():  # other ranks of a launch leave the cleaning to the main one
            shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
    return checkpoint


def check_run_dir(
    out_dir: Path, spec: LayerAdaptationSpec, layers: list[int], *, resume: bool
) -> Path | None:
    """Never overwrite finished work: a directory with checkpoints needs --resume, and matching layers.

    Touches nothing: bad input is refused before any file changes. Returns the newest checkpoint.
    """
    checkpoint = latest_checkpoint(out_dir)
    run_file = out_dir / RUN_FILE
    if not resume:
        if checkpoint is not None or (out_dir / PATCH_META).exists() or (out_dir / CALIBRATION).exists():
            raise InputError(
                "--out",
                f"{out_dir} already holds a training run",
                "pass --resume to continue it, or choose an empty directory",
            )
        return None
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        if sorted(previous["layers"]) != sorted(layers):
            raise InputError(
                "--layers",
                f"the run in {out_dir} trains layers {previous['layers']}, not {sorted(layers)}",
                f"resume with --layers {','.join(map(str, previous['layers']))} or use another --out",
            )
        if previous.get("modelUri") != spec.model.uri:
            raise InputError(
                "model.uri", f"the run in {out_dir} trains {previous.get('modelUri')}", "use the same model"
            )
        if previous.get("trainingHash", fingerprint(spec, "training")) != fingerprint(spec, "training"):
            raise InputError(
                "--resume",
                f"the run in {out_dir} was trained with other settings (data, rewards, algorithm, "
                "batch size, seed or precision); continuing it would mix two trainings",
                "use the original spec, or a new output directory",
            )
    return checkpoint


def write_run_file(out_dir: Path, spec: LayerAdaptationSpec, layers: list[int], model_dir: Path) -> None:
    write_json(out_dir / RUN_FILE, RUN_FILE_FIELDS.json(RunFile(layers, spec, model_dir)))
