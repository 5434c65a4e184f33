"""Layer-selective GRPO: TRL does the RL; we choose, freeze, checkpoint and package.

Only the chosen decoder layers have `requires_grad`; the optimizer therefore holds state for them
alone, and the result is written as a layer patch (see `service.patch`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from service.errors import InputError
from service.fields import Fields
from service.models.hub import resolve_model_dir
from service.models.loading import load_empty_model, load_model_and_tokenizer
from service.models.stack import count_parameters, find_decoder_layers, freeze_except
from service.models.weights import base_fingerprint, stored_tensors
from service.patch import PATCH_FILES, PATCH_META, LayerDeltas, compute_deltas, write_patch
from service.progress import SILENT, Progress, StepHook, reward_info
from service.ranks import is_main
from service.record import Record
from service.spec.indices import check_layer_indices
from service.spec.models import LayerAdaptationSpec
from service.training.config import choose_precision, grpo_config_kwargs
from service.training.grpo import StepHooks, StopAt, build_trainer, enable_checkpointing, progress_hook
from service.training.metrics import nothing_learned, step_recorder, training_summary
from service.training.resident import ResidentModel
from service.training.rundir import CHECKPOINTS, latest_checkpoint, prepare_run_dir, write_run_file
from service.training.task import check_task, training_task


@dataclass
class TrainResult:
    out_dir: Path
    layers: list[int]
    global_step: int
    max_steps: int
    resumed_from: str | None
    seconds: float
    trainable_parameters: int
    total_parameters: int
    deltas: LayerDeltas
    metrics: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    learning_rate: dict[str, Any] = field(default_factory=dict)  # the patch's `learningRate`

    def to_json(self) -> dict[str, Any]:
        return TRAIN_RESULT_FIELDS.json(self)


TRAIN_RESULT_FIELDS: Fields[TrainResult] = Fields(
    {
        "outDir": ("the output directory (`--out`)", lambda r: str(r.out_dir)),
        "layers": ("the layers trained", lambda r: r.layers),
        "globalStep": ("optimizer steps behind the weights", lambda r: r.global_step),
        "maxSteps": ("the steps the run is scheduled for", lambda r: r.max_steps),
        "resumedFrom": ("the checkpoint it continued from, or null", lambda r: r.resumed_from),
        "seconds": ("wall time of the training", lambda r: round(r.seconds, 2)),
        "trainableParameters": ("parameters trained", lambda r: r.trainable_parameters),
        "totalParameters": ("parameters of the whole model", lambda r: r.total_parameters),
        "layerDeltas": (
            "relative weight change ‖ΔW‖/‖W‖ per trained layer",
            lambda r: r.deltas.relative_json(),
        ),
        "learningRate": (
            "the rate trained at: `rate`, `multiplier`, `chosenBy` (`spec` or `calibration`) and, for "
            "`learningRateMultiplier: auto`, the `calibration` that chose it",
            lambda r: r.learning_rate,
        ),
        "metrics": ("TRL's metrics of the last logged step", lambda r: r.metrics),
        "warnings": (
            "what a person must know about the run, e.g. that no reward varied, so nothing was learned",
            lambda r: r.warnings,
        ),
    }
)
"""Every field of `layerpilot train --json` (the reference is generated from this)."""


def train(
    spec: LayerAdaptationSpec,
    layers: Sequence[int],
    out_dir: Path,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    progress: Progress = SILENT,
    record: Record | None = None,
    on_step: Sequence[StepHook] = (),
    callbacks: Sequence[Any] = (),
    device: str | None = None,
    learning_rate: float | None = None,
    stop_at: int | None = None,
    resident: ResidentModel | None = None,
    held_out: int = 0,
    calibration: dict[str, Any] | None = None,
) -> TrainResult:
    """RL-train only `layers` of the spec's model with GRPO; write the layer patch into `out_dir`.

    The learning rate is `algorithm.learningRate` × `training.learningRateMultiplier`, unless
    `learning_rate` is given (a probe unit passes the shared rate). `stop_at` ends this call at that
    step, checkpointed, of a run scheduled for `max_steps`: resuming it later continues the same
    learning-rate schedule, so the result equals one uninterrupted run (the halving probe's rungs).
    With `resident`, the model kept there is trained in place instead of loading one, and left
    trained for the caller to evaluate before it calls `resident.restore()`. `held_out` training
    items are left out (the calibration items of `auto`, see `service.calibration`, which passes the
    `calibration` that chose `learning_rate` for the patch's record).

    `progress` sees the `train` phase; `record` (on the main process) gets TRL's metrics at every
    step, and at the end the weight change per layer, the totals and the patch files; `on_step`
    hooks get TRL's metrics after every step (on the main process only); `callbacks` are extra
    `transformers.TrainerCallback`s.
    """
    started = time.perf_counter()
    max_steps = max_steps or spec.training.max_steps
    precision = choose_precision(spec.training.precision, device)
    config_kwargs = grpo_config_kwargs(spec, out_dir / CHECKPOINTS, max_steps=max_steps, precision=precision)
    if learning_rate is None:
        multiplier = spec.training.learning_rate_multiplier
        if isinstance(multiplier, str):
            raise InputError(
                "training.learningRateMultiplier",
                "is auto, which this call cannot calibrate",
                "train through service.calibration.train_layers, or give a number",
            )
        learning_rate = spec.algorithm.learning_rate * multiplier
    config_kwargs["learning_rate"] = learning_rate
    rate = rate_record(spec, learning_rate, calibration)
    task = training_task(spec, held_out=held_out)
    resume_from = prepare_run_dir(out_dir, spec, list(layers), resume=resume)
    if resume:
        finished = finished_run(out_dir, spec, stop_at or max_steps, started)
        if finished is not None and stop_at is not None and finished.global_step > stop_at:
            raise InputError(
                "--out",
                f"the run in {out_dir} already trained {finished.global_step} steps, past step {stop_at}",
                "use a new directory to stop a run earlier",
            )
        if finished is not None:
            progress.note(
                f"the run in {out_dir} already finished its {finished.global_step} steps; "
                "nothing to train (raise --max-steps to train further)"
            )
            return finished

    model_dir = resolve_model_dir(spec.model.uri, spec.model.revision)
    if resident is not None:
        model, tokenizer = resident.take(spec.model, precision)
    else:
        model, tokenizer = load_model_and_tokenizer(
            spec.model, dtype=precision.load_dtype, device=precision.device
        )
    warnings = check_task(task, spec, tokenizer)
    for text in warnings:
        progress.note(f"warning: {text}")
    stack = find_decoder_layers(model, spec.model.layers_path)
    chosen = check_layer_indices(list(layers), len(stack), field="layers")
    trainable = freeze_except(model, stack, chosen)
    if precision.load_dtype != torch.float32:
        # Trained layers keep float32 master weights; frozen ones stay in the compact dtype.
        for index in chosen:
            stack.layers[index].to(torch.float32)
    if spec.training.gradient_checkpointing:
        enable_checkpointing(model)
    params = dict(model.named_parameters())
    # The base weights of the trained layers are read back from the model's files at the end (a
    # lazy mapping: nothing is read now); only a model whose files do not hold them (renamed
    # tensors, a GGUF file) keeps a copy in memory meanwhile.
    base_state = stored_tensors(model_dir, trainable)
    if base_state is None:
        base_state = {n: _whole(params[n]).detach().to("cpu", copy=True) for n in trainable}
    if resident is not None:
        resident.training(stack, chosen, base_state)
    n_trainable, total = count_parameters(model)

    if is_main():
        write_run_file(out_dir, spec, chosen, model_dir)
    trainer = build_trainer(
        model,
        tokenizer,
        task,
        config_kwargs,
        callbacks=[
            StepHooks(
                [progress_hook(progress), *([step_recorder(record, spec)] if record else []), *on_step]
            ),
            *([StopAt(stop_at)] if stop_at is not None else []),
            *callbacks,
        ],
    )
    progress.start("train", stop_at or max_steps)
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    trained_state = {name: _whole(params[name]) for name in trainable}  # a collective under FSDP2
    if not is_main():  # every rank trained the same weights; the main process writes them
        deltas = compute_deltas(base_state, trained_state, stack.path)
    else:
        deltas = write_patch(
            out_dir,
            trained=trained_state,
            base=base_state,
            layers=chosen,
            layers_path=stack.path,
            base_ref={
                "uri": spec.model.uri,
                "revision": spec.model.revision,
                "fingerprint": base_fingerprint(model_dir),
                "modelType": stack.model_type,
                "numLayers": len(stack),
            },
            spec=spec.model_dump(mode="json", by_alias=True),
            trained_steps=trainer.state.global_step,
            learning_rate=rate,
        )
    if resident is not None:
        resident.settle()
    history = [h for h in trainer.state.log_history if "loss" in h or "reward" in h]
    warnings += [found] if (found := nothing_learned(history, deltas)) else []
    last = history[-1] if history else {}
    metrics = {k: float(v) for k, v in last.items() if isinstance(v, int | float)}
    metrics["train_loss"] = float(output.training_loss)
    progress.finish("train", reward_info(metrics))
    result = TrainResult(
        out_dir=out_dir,
        layers=chosen,
        global_step=trainer.state.global_step,
        max_steps=max_steps,
        resumed_from=str(resume_from) if resume_from else None,
        seconds=time.perf_counter() - started,
        trainable_parameters=n_trainable,
        total_parameters=total,
        deltas=deltas,
        metrics=metrics,
        warnings=warnings,
        learning_rate=rate,
    )
    if task.rollout is not None and is_main():
        transcripts = task.rollout.write_transcripts(out_dir)
        if record is not None and transcripts is not None:
            record.add_artifact(transcripts, "transcripts")
    if record is not None and is_main():
        record_training(record, result)
    return result


def rate_record(
    spec: LayerAdaptationSpec, learning_rate: float, calibration: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What the patch and the result say of the rate: `learningRate` of `layer_patch.json`."""
    return {
        "rate": learning_rate,
        "multiplier": round(learning_rate / spec.algorithm.learning_rate, 6),
        "chosenBy": "calibration" if calibration is not None else "spec",
        **({"calibration": calibration} if calibration is not None else {}),
    }


def record_training(record: Record, result: TrainResult) -> None:
    """The weight change per layer (step = layer index) and the totals."""
    record.log_by_layer({i: {"by_layer/delta_relative": v} for i, v in result.deltas.relative.items()})
    summary = training_summary(
        result.seconds, result.global_step, result.trainable_parameters, result.total_parameters
    )
    record.log_metrics(summary)


def record_patch(record: Record, out_dir: Path) -> None:
    """The layer patch's files as the run's `layer_patch` artifacts (a probe unit's are not kept)."""
    for name in PATCH_FILES:
        record.add_artifact(out_dir / name, "layer_patch")


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a parameter FSDP2 shards (a DTensor; every rank must call this), else itself."""
    full = getattr(tensor, "full_tensor", None)
    return cast(torch.Tensor, full()) if callable(full) else tensor


def finished_run(
    out_dir: Path, spec: LayerAdaptationSpec, max_steps: int, started: float | None = None
) -> TrainResult | None:
    """The result of a run that already reached `max_steps` (its patch and newest checkpoint agree)."""
    meta_path, checkpoint = out_dir / PATCH_META, latest_checkpoint(out_dir)
    if not meta_path.is_file() or checkpoint is None:
        return None
    meta = json.loads(meta_path.read_text())
    steps = int(meta.get("trainedSteps") or 0)
    if steps < max_steps or int(checkpoint.name.split("-")[1]) != steps:
        return None
    deltas = LayerDeltas.read(out_dir)
    if deltas is None:
        return None
    _, total = count_parameters(load_empty_model(spec.model))
    return TrainResult(
        out_dir=out_dir,
        layers=list(meta["layers"]),
        global_step=steps,
        max_steps=max_steps,
        resumed_from=str(checkpoint),
        seconds=time.perf_counter() - started if started is not None else 0.0,
        trainable_parameters=int(meta.get("numParameters") or 0),
        total_parameters=total,
        deltas=deltas,
        metrics={},
        learning_rate=dict(meta.get("learningRate") or {}),
    )
