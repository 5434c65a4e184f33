"""Layer-selective GRPO: TRL does the RL; we choose, freeze, checkpoint and package.

Only the chosen decoder layers have `requires_grad`; the optimizer therefore holds state for them
alone, and the result is written as a layer patch (see `service.patch`).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from service.data import check_chat_template, load_rows, unreadable_characters
from service.errors import InputError, LayerpilotError
from service.models.hub import resolve_model_dir
from service.models.loading import load_empty_model, load_model_and_tokenizer
from service.models.stack import count_parameters, find_decoder_layers, freeze_except
from service.models.weights import fingerprint_model_dir, stored_tensors
from service.patch import PATCH_FILES, PATCH_META, LayerDeltas, compute_deltas, write_patch
from service.progress import SILENT, Progress, StepHook, reward_info
from service.ranks import is_main
from service.record import Record
from service.rewards.registry import build_rewards
from service.spec.indices import check_layer_indices
from service.spec.models import LayerAdaptationSpec
from service.training.config import choose_precision, grpo_config_kwargs
from service.training.metrics import step_recorder, training_summary
from service.training.rundir import CHECKPOINTS, latest_checkpoint, prepare_run_dir, write_run_file


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

    def to_json(self) -> dict[str, Any]:
        return {
            "outDir": str(self.out_dir),
            "layers": self.layers,
            "globalStep": self.global_step,
            "maxSteps": self.max_steps,
            "resumedFrom": self.resumed_from,
            "seconds": round(self.seconds, 2),
            "trainableParameters": self.trainable_parameters,
            "totalParameters": self.total_parameters,
            "layerDeltas": self.deltas.relative_json(),
            "metrics": self.metrics,
            "warnings": self.warnings,
        }


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
) -> TrainResult:
    """RL-train only `layers` of the spec's model with GRPO; write the layer patch into `out_dir`.

    The learning rate is `algorithm.learningRate` × `training.learningRateMultiplier`, unless
    `learning_rate` is given (a probe unit passes the shared rate). `stop_at` ends this call at that
    step, checkpointed, of a run scheduled for `max_steps`: resuming it later continues the same
    learning-rate schedule, so the result equals one uninterrupted run (the halving probe's rungs).

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
        learning_rate = spec.algorithm.learning_rate * spec.training.learning_rate_multiplier
    config_kwargs["learning_rate"] = learning_rate
    reward_funcs, weights = build_rewards(spec.rewards)
    train_rows, _ = load_rows(spec.dataset)
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
    model, tokenizer = load_model_and_tokenizer(
        spec.model, dtype=precision.load_dtype, device=precision.device
    )
    check_chat_template(train_rows, tokenizer, spec.model.uri, spec.dataset)
    warnings = [found] if (found := unreadable_characters(train_rows, tokenizer, spec.model.uri)) else []
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
        _enable_checkpointing(model)
    params = dict(model.named_parameters())
    # The base weights of the trained layers are read back from the model's files at the end (a
    # lazy mapping: nothing is read now); only a model whose files do not hold them (renamed
    # tensors, a GGUF file) keeps a copy in memory meanwhile.
    base_state = stored_tensors(model_dir, trainable)
    if base_state is None:
        base_state = {n: _whole(params[n]).detach().to("cpu", copy=True) for n in trainable}
    n_trainable, total = count_parameters(model)

    if is_main():
        write_run_file(out_dir, spec, chosen, model_dir)
    trainer = build_trainer(
        model,
        tokenizer,
        (reward_funcs, weights),
        train_rows,
        config_kwargs,
        callbacks=[
            _StepHooks(
                [_progress_hook(progress), *([step_recorder(record, spec)] if record else []), *on_step]
            ),
            *([_StopAt(stop_at)] if stop_at is not None else []),
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
                "fingerprint": fingerprint_model_dir(model_dir),
                "modelType": stack.model_type,
                "numLayers": len(stack),
            },
            spec=spec.model_dump(mode="json", by_alias=True),
            extra={"trainedSteps": trainer.state.global_step},
        )
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
    )
    if record is not None and is_main():
        record_training(record, result)
    return result


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


def nothing_learned(history: Sequence[dict[str, Any]], deltas: LayerDeltas) -> str | None:
    """Why a run learned nothing, when no step gave GRPO a group whose rewards differed.

    GRPO learns from the differences between a group's rewards; when every group's rewards are
    equal at every step (all 0, typically), every advantage is 0 and the weights do not move.

    >>> found = nothing_learned([{"reward": 0.0, "reward_std": 0.0}] * 3, LayerDeltas({1: 0.0}, {1: 0.0}, {}))
    >>> found.split(", so")[0], nothing_learned([{"reward": 0.5, "reward_std": 0.2}], LayerDeltas({}, {}, {}))
    ('every reward was 0.0 in all 3 steps', None)
    """
    steps = [h for h in history if "reward" in h]
    if not steps or any(float(h.get("reward_std", 1.0)) > 0 for h in steps):
        return None
    values = {round(float(h["reward"]), 6) for h in steps}
    what = f"every reward was {values.pop()}" if len(values) == 1 else "no group's rewards ever differed"
    moved = max(deltas.relative.values(), default=0.0)
    return (
        f"{what} in all {len(steps)} steps, so GRPO had nothing to learn from and the weights did not "
        f"change (relative weight change {moved:.1e}); check that the reward fits the data and the model "
        "can read it (`layerpilot eval` shows completions)"
    )


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
    )


def build_trainer(
    model: Any,
    tokenizer: Any,
    rewards: tuple[Sequence[Any], list[float]],
    train_rows: list[dict[str, Any]],
    config_kwargs: dict[str, Any],
    callbacks: Sequence[Any] = (),
) -> Any:
    """TRL's GRPOTrainer over a model whose trainable parameters were already chosen."""
    # Deferred: TRL and datasets take seconds to import, and only training needs them.
    import datasets
    from trl.trainer.grpo_config import GRPOConfig
    from trl.trainer.grpo_trainer import GRPOTrainer

    reward_funcs, weights = rewards
    trainer = _selective_trainer_class(GRPOTrainer)(
        model=model,
        reward_funcs=cast(Any, list(reward_funcs)),
        args=GRPOConfig(**config_kwargs, reward_weights=weights),
        train_dataset=datasets.Dataset.from_list(train_rows),
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    _quiet(trainer)
    return trainer


@functools.cache
def _selective_trainer_class(base: type) -> type:
    """`base` (TRL's GRPOTrainer) whose checkpoints hold the trained parameters only.

    transformers saves the whole model in every checkpoint; the frozen layers are the base model's,
    unchanged and already on disk. Saving only what trains makes a one-layer checkpoint a fraction of
    the model (a layer of Qwen3-8B is under 3 % of it) and spares the memory that serialising the
    whole model costs at each save. Resuming loads it non-strictly over the base model (transformers
    does so already); FSDP/DeepSpeed state dicts and PEFT adapters keep transformers' own saving.
    """

    class LayerSelectiveGRPOTrainer(base):
        def _save(self, output_dir: str | None = None, state_dict: dict[str, Any] | None = None) -> None:
            model = self.accelerator.unwrap_model(self.model)
            if state_dict is None and not hasattr(model, "peft_config"):
                state_dict = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
            super()._save(output_dir, state_dict)

        def _issue_warnings_after_load(self, load_result: Any) -> None:
            # The frozen parameters are missing from a selective checkpoint by design.
            trained = {n for n, p in self.model.named_parameters() if p.requires_grad}
            missing = [k for k in load_result.missing_keys if k in trained]
            if missing or load_result.unexpected_keys:
                raise LayerpilotError(
                    f"--resume: the checkpoint does not hold this run's trained weights (missing "
                    f"{missing[:2]}, unexpected {list(load_result.unexpected_keys)[:2]}); "
                    "train into a new --out, or delete the checkpoint"
                )

    return LayerSelectiveGRPOTrainer


def _enable_checkpointing(model: Any) -> None:
    """Activation checkpointing that never forces gradients through frozen lower layers.

    transformers' `gradient_checkpointing_enable` also calls `enable_input_require_grads`, a
    workaround for reentrant checkpointing that makes the embedding output require grad — and with
    it every frozen layer below the trained ones runs a backward pass for nothing. Non-reentrant
    checkpointing does not need it, so we undo it.
    """
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.disable_input_require_grads()
    model.config.use_cache = False


def _quiet(trainer: Any) -> None:
    """Results go to stdout and progress to our own hook: drop transformers' printers."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


class _StepHooks(TrainerCallback):
    """Forwards (step, max_steps, logs) to plain functions, so callers need no transformers types.

    Under a distributed launcher every rank trains, but only the main process reports.
    """

    def __init__(self, hooks: Sequence[StepHook]) -> None:
        self.hooks = list(hooks)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if not getattr(state, "is_world_process_zero", True):
            return
        numbers = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
        for hook in self.hooks:
            hook(state.global_step, state.max_steps, numbers)


class _StopAt(TrainerCallback):
    """Ends training at `step`, with a checkpoint there, before the scheduled `max_steps`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> Any:
        if state.global_step >= self.step:
            control.should_training_stop = True
            control.should_save = True
        return control


def _progress_hook(progress: Progress) -> StepHook:
    def hook(step: int, max_steps: int, logs: dict[str, float]) -> None:
        progress.update("train", step, reward_info(logs))

    return hook
