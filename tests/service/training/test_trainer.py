"""Real TRL GRPO runs on the shipped demo model: which weights change, resume, loss types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from service.errors import InputError
from service.models.hub import DEMO_MODEL_DIR
from service.models.loading import load_model_and_tokenizer
from service.models.stack import find_decoder_layers, freeze_except
from service.patch import PATCH_TENSORS, LayerDeltas, apply_to_model, read_patch
from service.spec.models import ModelSpec
from service.training.config import LOSS_DEFAULTS, choose_precision, grpo_config_kwargs
from service.training.grpo import enable_checkpointing
from service.training.rundir import latest_checkpoint
from service.training.trainer import train
from tests.conftest import small_spec


def _base_state() -> dict[str, torch.Tensor]:
    return load_file(str(DEMO_MODEL_DIR / "model.safetensors"))


def _checkpoint_state(out: Path) -> dict[str, torch.Tensor]:
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None
    return load_file(str(checkpoint / "model.safetensors"))


def test_only_the_chosen_layer_changes(trained_run: dict[str, Any]) -> None:
    base, trained = _base_state(), trained_run["final_state"]
    prefix = f"model.layers.{trained_run['layer']}."
    assert set(base) <= set(trained)
    outside = [n for n in base if not n.startswith(prefix)]
    inside = [n for n in base if n.startswith(prefix)]
    assert outside and inside
    for name in outside:
        assert torch.equal(base[name], trained[name]), f"{name} changed but is outside layer 2"
    changed = [n for n in inside if not torch.equal(base[n], trained[n])]
    assert changed, "no tensor of the trained layer changed"


def test_a_checkpoint_holds_only_the_trained_layer(trained_run: dict[str, Any]) -> None:
    """The frozen layers are the base model's: checkpoints do not copy them (resume is tested below)."""
    prefix = f"model.layers.{trained_run['layer']}."
    checkpoint = _checkpoint_state(trained_run["out"])
    assert set(checkpoint) == {n for n in _base_state() if n.startswith(prefix)}
    for name, tensor in checkpoint.items():
        assert torch.equal(tensor, trained_run["final_state"][name])


def test_patch_holds_exactly_the_layer_tensors(trained_run: dict[str, Any]) -> None:
    patch = load_file(str(trained_run["out"] / PATCH_TENSORS))
    prefix = f"model.layers.{trained_run['layer']}."
    assert set(patch) == {n for n in _base_state() if n.startswith(prefix)}
    trained = _checkpoint_state(trained_run["out"])
    for name, tensor in patch.items():
        assert torch.equal(tensor, trained[name])
    meta = read_patch(trained_run["out"]).meta
    assert meta["layers"] == [trained_run["layer"]]
    assert meta["base"]["fingerprint"].startswith("sha256:")
    assert meta["trainedSteps"] == 3


def test_base_plus_patch_reproduces_trained_logits(trained_run: dict[str, Any]) -> None:
    trained, _ = load_model_and_tokenizer(ModelSpec())
    trained.load_state_dict(trained_run["final_state"])
    trained.eval()
    base, tokenizer = load_model_and_tokenizer(ModelSpec())
    base.eval()
    batch = tokenizer(["12+7=", "99+99=", "3+4="], return_tensors="pt", padding=True)
    with torch.no_grad():
        before = base(**batch).logits
        apply_to_model(base, read_patch(trained_run["out"]))
        patched = base(**batch).logits
        expected = trained(**batch).logits
    assert torch.equal(patched, expected)
    assert not torch.equal(before, expected)


def test_deltas_name_the_trained_layer(trained_run: dict[str, Any]) -> None:
    deltas = trained_run["result"].deltas
    assert list(deltas.relative) == [trained_run["layer"]] and deltas.relative[2] > 0
    assert all(n.startswith("model.layers.2.") for n in deltas.tensors)
    written = LayerDeltas.read(trained_run["out"])
    assert written == deltas and written is not None and written.relative_json() == {"2": deltas.relative[2]}


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_each_loss_type_trains(loss_type: str, tmp_path: Path) -> None:
    spec = small_spec(algorithm={"lossType": loss_type}, training={"maxSteps": 2, "saveSteps": 2})
    kwargs = grpo_config_kwargs(spec, tmp_path, max_steps=2, precision=choose_precision("auto", "cpu"))
    assert kwargs["loss_type"] == loss_type
    for key, value in LOSS_DEFAULTS[loss_type].items():
        assert kwargs[key] == value
    result = train(spec, [4], tmp_path / "run")
    assert result.global_step == 2
    assert result.deltas.relative[4] > 0


class _Crash(TrainerCallback):  # type: ignore[misc]
    """Simulates a killed Job: dies after the checkpoint of step 2 is written."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 3:
            raise RuntimeError("simulated crash")


def test_resume_after_interruption_finishes_at_the_same_step(tmp_path: Path) -> None:
    spec = small_spec(training={"maxSteps": 4, "saveSteps": 2})
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(spec, [1], out, callbacks=[_Crash()])
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None and checkpoint.name == "checkpoint-2"
    assert not (out / PATCH_TENSORS).exists()

    with pytest.raises(InputError, match="--resume"):
        train(spec, [1], out)
    with pytest.raises(InputError, match="trains layers"):
        train(spec, [3], out, resume=True)
    with pytest.raises(InputError, match="other settings"):
        train(
            small_spec(training={"maxSteps": 4, "saveSteps": 2}, algorithm={"beta": 0.1}),
            [1],
            out,
            resume=True,
        )

    result = train(spec, [1], out, resume=True)
    assert result.resumed_from is not None and result.resumed_from.endswith("checkpoint-2")
    assert result.global_step == 4
    assert latest_checkpoint(out).name == "checkpoint-4"  # type: ignore[union-attr]
    assert read_patch(out).meta["trainedSteps"] == 4


def test_gradient_checkpointing_sends_no_gradient_through_frozen_lower_layers() -> None:
    model, tokenizer = load_model_and_tokenizer(ModelSpec())
    stack = find_decoder_layers(model)
    freeze_except(model, stack, [4])
    enable_checkpointing(model)
    model.train()
    backward_calls: list[int] = []
    for index in (0, 3):
        stack.layers[index].register_full_backward_hook(lambda *_, i=index: backward_calls.append(i))
    batch = tokenizer(["12+7=19", "3+4=7"], return_tensors="pt", padding=True)
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    assert backward_calls == []
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None for n, g in grads.items() if not n.startswith("model.layers.4."))
    assert any(
        g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("model.layers.4.")
    )


@pytest.mark.heavy
def test_rl_of_all_layers_raises_demo_accuracy(tmp_path: Path) -> None:
    """The demo's premise: the shipped model has room to improve under RL, measurably."""
    from service.evaluation import evaluate

    spec = small_spec(
        dataset={"evalSize": 150},
        algorithm={"numGenerations": 8, "learningRate": 5e-5},
        training={"maxSteps": 30, "batchSize": 32, "saveSteps": 30},
    )
    before = evaluate(spec).score
    train(spec, list(range(6)), tmp_path / "run")
    after = evaluate(spec, patch_dir=tmp_path / "run").score
    assert after >= before + 0.08, (before, after)


class _Rate(TrainerCallback):  # type: ignore[misc]
    """Records the learning rate the trainer was configured with."""

    def __init__(self) -> None:
        self.rate: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.rate = args.learning_rate


def test_the_learning_rate_multiplier_scales_training_but_not_a_probe_unit(tmp_path: Path) -> None:
    spec = small_spec(algorithm={"learningRate": 1e-4}, training={"maxSteps": 1, "learningRateMultiplier": 3})
    scaled, shared = _Rate(), _Rate()
    train(spec, [1], tmp_path / "train", callbacks=[scaled])
    train(spec, [1], tmp_path / "unit", callbacks=[shared], learning_rate=spec.algorithm.learning_rate)
    assert scaled.rate == pytest.approx(3e-4) and shared.rate == pytest.approx(1e-4)


def test_a_run_stopped_early_and_continued_equals_one_uninterrupted_run(tmp_path: Path) -> None:
    """`stop_at` ends a run scheduled for more steps; resuming it keeps that learning-rate schedule
    (the halving probe's rungs), so the weights equal those of one run straight through."""
    spec = small_spec(training={"maxSteps": 4, "saveSteps": 50})
    straight = train(spec, [2], tmp_path / "straight")
    stopped = train(spec, [2], tmp_path / "rungs", stop_at=2)
    assert stopped.global_step == 2 and latest_checkpoint(tmp_path / "rungs").name == "checkpoint-2"  # type: ignore[union-attr]
    halfway = read_patch(tmp_path / "rungs").tensors
    continued = train(spec, [2], tmp_path / "rungs", resume=True)
    assert continued.global_step == 4 and continued.resumed_from.endswith("checkpoint-2")  # type: ignore[union-attr]
    a, b = read_patch(tmp_path / "straight").tensors, read_patch(tmp_path / "rungs").tensors
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
    assert any(not torch.equal(halfway[name], b[name]) for name in a)  # it did train on
    assert straight.deltas.relative == continued.deltas.relative
    with pytest.raises(InputError, match="past step 2"):
        train(spec, [2], tmp_path / "straight", resume=True, stop_at=2)
