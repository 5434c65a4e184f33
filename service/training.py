"""Layer-selective GRPO: TRL does the RL; we choose, freeze, checkpoint and package.

Only the chosen decoder layers have `requires_grad`; the optimizer therefore holds state for them
alone, and the result is written as a layer patch (see `service.delta`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import TrainerCallback

from service.delta import fingerprint_model_dir, write_patch
from service.errors import SpecError
from service.layers import (
    find_decoder_layers,
    freeze_except,
    load_model_and_tokenizer,
    resolve_model_dir,
)
from service.rewards import build_rewards
from service.spec import LayerAdaptationSpec, LossType, Precision, check_layer_indices

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
RUN_FILE = "run.json"

# GRPOConfig fields that the spec owns: setting them through `algorithm.extra` would silently
# contradict the spec, so the error names the spec field to use instead.
SPEC_OWNED = {
    "learning_rate": "algorithm.learningRate",
    "num_generations": "algorithm.numGenerations",
    "max_completion_length": "algorithm.maxCompletionLength",
    "beta": "algorithm.beta",
    "temperature": "algorithm.temperature",
    "loss_type": "algorithm.lossType",
    "max_steps": "training.maxSteps",
    "per_device_train_batch_size": "training.batchSize",
    "seed": "training.seed",
    "save_steps": "training.saveSteps",
    "save_total_limit": "training.saveTotalLimit",
    "gradient_checkpointing": "training.gradientCheckpointing",
    "bf16": "training.precision",
    "fp16": "training.precision",
    "output_dir": "--out",
    "reward_weights": "rewards[].weight",
}

# What each loss type's paper prescribes beyond the loss aggregation itself.
LOSS_DEFAULTS: dict[str, dict[str, Any]] = {
    # Dr. GRPO (Liu et al. 2025): no per-group std scaling (question-difficulty bias), and a
    # constant normaliser instead of per-sequence length (length bias); TRL's "dr_grpo" is the latter.
    LossType.dr_grpo.value: {"scale_rewards": "none"},
    # DAPO (Yu et al. 2025): clip-higher with eps_high = 0.28 and token-level normalisation.
    LossType.dapo.value: {"epsilon_high": 0.28},
    LossType.grpo.value: {"scale_rewards": "group"},
}


@dataclass(frozen=True)
class RunPrecision:
    """How the model is loaded and run: weights dtype, autocast, and device."""

    device: str
    load_dtype: torch.dtype
    bf16: bool


def choose_precision(requested: str, device: str | None = None) -> RunPrecision:
    """Pick dtype and autocast for the device. bfloat16 needs CUDA; CPU always runs float32."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_cuda = device.startswith("cuda")
    bf16_ok = on_cuda and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if requested == Precision.bfloat16.value and not bf16_ok:
        raise SpecError(
            "training.precision",
            f"bfloat16 needs a CUDA GPU that supports it; this run is on {device}",
            "use precision: auto or float32",
        )
    use_bf16 = requested == Precision.bfloat16.value or (requested == Precision.auto.value and bf16_ok)
    return RunPrecision(
        device=device, load_dtype=torch.bfloat16 if use_bf16 else torch.float32, bf16=use_bf16
    )


def grpo_config_kwargs(
    spec: LayerAdaptationSpec, output_dir: Path, *, max_steps: int, precision: RunPrecision
) -> dict[str, Any]:
    """The GRPOConfig arguments for a spec: a pure function, so tests compare dicts."""
    algo, train = spec.algorithm, spec.training
    kwargs: dict[str, Any] = {
        "output_dir": str(output_dir),
        "learning_rate": algo.learning_rate,
        "num_generations": algo.num_generations,
        "max_completion_length": algo.max_completion_length,
        "beta": algo.beta,
        "temperature": algo.temperature,
        "loss_type": algo.loss_type,
        "per_device_train_batch_size": train.batch_size,
        "max_steps": max_steps,
        "seed": train.seed,
        "data_seed": train.seed,
        "save_strategy": "steps",
        "save_steps": train.save_steps,
        "save_total_limit": train.save_total_limit,
        "logging_steps": 1,
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": precision.device == "cpu",
        "bf16": precision.bf16,
        "fp16": False,
        # We enable checkpointing ourselves (see `_enable_checkpointing`): TRL/transformers would make
        # the embeddings require grad, sending gradients through every frozen layer below.
        "gradient_checkpointing": False,
        "dataloader_num_workers": 0,
        "remove_unused_columns": False,
        **LOSS_DEFAULTS[algo.loss_type],
    }
    kwargs.update(validate_extra(algo.extra))
    return kwargs


def validate_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """Check `algorithm.extra` against TRL's GRPOConfig fields, once, before any model loads."""
    if not extra:
        return {}
    from trl.trainer.grpo_config import GRPOConfig

    known = {f.name for f in dataclasses.fields(GRPOConfig)}
    for key in extra:
        if key in SPEC_OWNED:
            raise SpecError(f"algorithm.extra.{key}", "is set by the spec", f"set {SPEC_OWNED[key]} instead")
        if key not in known:
            import difflib

            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean `{close[0]}`?" if close else "see TRL's GRPOConfig for valid names"
            raise SpecError(f"algorithm.extra.{key}", "is not a TRL GRPOConfig option", hint)
    if extra.get("use_vllm") and not torch.cuda.is_available():
        raise SpecError("algorithm.extra.use_vllm", "vLLM generation needs a CUDA GPU", "remove use_vllm")
    return dict(extra)


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
    deltas: dict[str, Any]
    metrics: dict[str, float]

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
            "layerDeltas": {k: v["relative"] for k, v in self.deltas["layers"].items()},
            "metrics": self.metrics,
        }


StepHook = Callable[[int, int, dict[str, float]], None]


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


def train(
    spec: LayerAdaptationSpec,
    layers: Sequence[int],
    out_dir: Path,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    on_step: StepHook | None = None,
    callbacks: Sequence[Any] = (),
    device: str | None = None,
) -> TrainResult:
    """RL-train only `layers` of the spec's model with GRPO; write the layer patch into `out_dir`."""
    from service.data import load_rows

    started = time.perf_counter()
    max_steps = max_steps or spec.training.max_steps
    precision = choose_precision(spec.training.precision, device)
    config_kwargs = grpo_config_kwargs(spec, out_dir / CHECKPOINTS, max_steps=max_steps, precision=precision)
    reward_funcs, weights = build_rewards(spec.rewards)
    train_rows, _ = load_rows(spec.dataset)
    resume_from = _prepare_out_dir(out_dir, spec, list(layers), resume)

    model_dir = resolve_model_dir(spec.model.uri, spec.model.revision)
    model, tokenizer = load_model_and_tokenizer(
        spec.model, dtype=precision.load_dtype, device=precision.device
    )
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
    base_state = {name: params[name].detach().to("cpu", copy=True) for name in trainable}
    total = sum(p.numel() for p in model.parameters())
    n_trainable = sum(params[n].numel() for n in trainable)

    _write_run_file(out_dir, spec, chosen, model_dir)
    trainer = build_trainer(
        model,
        tokenizer,
        (reward_funcs, weights),
        train_rows,
        config_kwargs,
        callbacks=[_StepCallback(on_step), *callbacks],
    )
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    trained_state = {name: params[name] for name in trainable}
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
    last = history[-1] if history else {}
    metrics = {k: float(v) for k, v in last.items() if isinstance(v, int | float)}
    metrics["train_loss"] = float(output.training_loss)
    return TrainResult(
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
    import datasets
    from trl.trainer.grpo_config import GRPOConfig
    from trl.trainer.grpo_trainer import GRPOTrainer

    reward_funcs, weights = rewards
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=cast(Any, list(reward_funcs)),
        args=GRPOConfig(**config_kwargs, reward_weights=weights),
        train_dataset=datasets.Dataset.from_list(train_rows),
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    _quiet(trainer)
    return trainer


def _prepare_out_dir(
    out_dir: Path, spec: LayerAdaptationSpec, layers: list[int], resume: bool
) -> Path | None:
    """Never overwrite finished work: a directory with checkpoints needs --resume, and matching layers."""
    checkpoint = latest_checkpoint(out_dir)
    run_file = out_dir / RUN_FILE
    if not resume:
        if checkpoint is not None or (out_dir / "layer_patch.json").exists():
            raise SpecError(
                "--out",
                f"{out_dir} already holds a training run",
                "pass --resume to continue it, or choose an empty directory",
            )
        return None
    if run_file.exists():
        previous = json.loads(run_file.read_text())
        if sorted(previous["layers"]) != sorted(layers):
            raise SpecError(
                "--layers",
                f"the run in {out_dir} trains layers {previous['layers']}, not {sorted(layers)}",
                f"resume with --layers {','.join(map(str, previous['layers']))} or use another --out",
            )
        if previous.get("modelUri") != spec.model.uri:
            raise SpecError(
                "model.uri", f"the run in {out_dir} trains {previous.get('modelUri')}", "use the same model"
            )
        if previous.get("trainingHash", training_fingerprint(spec)) != training_fingerprint(spec):
            raise SpecError(
                "--resume",
                f"the run in {out_dir} was trained with other settings (data, rewards, algorithm, "
                "batch size, seed or precision); continuing it would mix two trainings",
                "use the original spec, or a new output directory",
            )
    if checkpoint is None:
        if (out_dir / CHECKPOINTS).is_dir():
            log.warning("--resume: no complete checkpoint in %s yet; starting from step 0", out_dir)
        shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
    return checkpoint


def training_fingerprint(spec: LayerAdaptationSpec) -> str:
    """Hash of what a resumed run must share with the run it continues.

    Length and checkpointing (`maxSteps`, `saveSteps`, `saveTotalLimit`) may change between
    attempts — extending a run is the point of resuming — and so may probe, selection, tracking and
    resources, which do not touch the weights.
    """
    relevant = spec.model_dump(
        mode="json", by_alias=True, include={"model", "dataset", "rewards", "algorithm"}
    )
    relevant["training"] = spec.training.model_dump(
        mode="json", by_alias=True, exclude={"max_steps", "save_steps", "save_total_limit"}
    )
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _write_run_file(out_dir: Path, spec: LayerAdaptationSpec, layers: list[int], model_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "layers": layers,
        "modelUri": spec.model.uri,
        "modelDir": str(model_dir),
        "specHash": spec.fingerprint(),
        "trainingHash": training_fingerprint(spec),
    }
    (out_dir / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n")


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
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


class _StepCallback(TrainerCallback):
    """Forwards (step, max_steps, logs) to a plain function, so callers need no transformers types."""

    def __init__(self, hook: StepHook | None) -> None:
        self.hook = hook

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if self.hook is not None:
            numbers = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
            self.hook(state.global_step, state.max_steps, numbers)
