"""TRL's GRPOTrainer as layerpilot builds it: checkpoints of the trained weights only, activation
checkpointing that never reaches frozen layers, GiGPO's per-token advantages for an agent that asks
for them, and the callbacks that turn TRL's logs into hooks.

`service.training.trainer` runs a training with it; the gradient probe builds one for its rollouts.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any, cast

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from service.errors import LayerpilotError
from service.progress import Progress, StepHook, reward_info
from service.training.gigpo import EpisodeSteps, GiGPO
from service.training.task import Task


def build_trainer(
    model: Any, tokenizer: Any, task: Task, config_kwargs: dict[str, Any], callbacks: Sequence[Any] = ()
) -> Any:
    """TRL's GRPOTrainer over a model whose trainable parameters were already chosen."""
    # Deferred: TRL and datasets take seconds to import, and only training needs them.
    import datasets
    from trl.trainer.grpo_config import GRPOConfig
    from trl.trainer.grpo_trainer import GRPOTrainer

    reward_funcs, weights = task.rewards
    if task.rollout is not None:
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is TRL's, and we pin TRL
    trainer = _selective_trainer_class(GRPOTrainer)(
        model=model,
        reward_funcs=cast(Any, list(reward_funcs)),
        args=GRPOConfig(**config_kwargs, reward_weights=weights),
        train_dataset=datasets.Dataset.from_list(task.rows),
        processing_class=tokenizer,
        callbacks=list(callbacks),
        rollout_func=task.rollout,
    )
    trainer.gigpo = task.gigpo
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
        gigpo: GiGPO | None = None

        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> Any:
            # an agent's rollout starts each episode from its row's seed (see service.training.rollout)
            self.batch_rows = inputs
            output = super()._generate_and_score_completions(inputs)
            if self.gigpo is not None:
                output["advantages"] = self._gigpo_advantages(inputs, output)
            return output

        def _gigpo_advantages(self, rows: list[dict[str, Any]], output: dict[str, Any]) -> Any:
            """GiGPO's (B, T) advantages in place of TRL's (B,) episode advantages, which they add to.

            TRL's rollout columns reach `rows` (`service.training.rollout`); a group may span
            processes, so every process gathers the batch's episodes and keeps its own rows.
            """
            from accelerate.utils import gather_object

            assert self.gigpo is not None
            mine = [
                EpisodeSteps(
                    row["episode_state_keys"], row["episode_step_rewards"], bool(row["episode_error"])
                )
                for row in rows
            ]
            advantages, steps = self.gigpo.advantages(
                output["advantages"],
                gather_object(mine),
                first=self.accelerator.process_index * len(rows),
                spans=[row["episode_action_spans"] for row in rows],
                group_size=self.num_generations,
                width=output["completion_ids"].shape[1],
            )
            self._metrics["train"]["gigpo/grouped_actions"].append(steps.grouped_share)
            self._metrics["train"]["gigpo/step_advantage"].append(steps.mean_abs)
            return advantages

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


def enable_checkpointing(model: Any) -> None:
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


class StepHooks(TrainerCallback):
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


class StopAt(TrainerCallback):
    """Ends training at `step`, with a checkpoint there, before the scheduled `max_steps`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> Any:
        if state.global_step >= self.step:
            control.should_training_stop = True
            control.should_save = True
        return control


def progress_hook(progress: Progress) -> StepHook:
    def hook(step: int, max_steps: int, logs: dict[str, float]) -> None:
        progress.update("train", step, reward_info(logs))

    return hook
