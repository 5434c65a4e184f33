"""A probe process keeps its model loaded: units train it in place and put the base weights back,
with the same results as a unit that loads the model itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerCallback

import service.training.resident as resident_module
from service.models.loading import load_model_and_tokenizer
from service.probe.exact import run_exact
from service.probe.halving import run_halving
from service.spec.models import LayerAdaptationSpec
from service.training.config import choose_precision
from service.training.resident import ResidentModel
from service.training.trainer import train
from tests.conftest import small_spec
from tests.service.probe.helpers import probe_spec


def _partials(out: Path) -> dict[str, dict[str, Any]]:
    """Every unit's partial result, less what a clock measures."""
    found = {}
    for path in sorted((out / "partials").glob("*.json")):
        data = json.loads(path.read_text())
        data.pop("seconds")
        data.get("trainMetrics", {}).pop("step_time", None)
        found[path.name] = data
    return found


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The models a resident loads (a spy on the real loader, which still runs)."""
    seen: list[str] = []

    def counted(spec: Any, **kwargs: Any) -> Any:
        seen.append(spec.uri)
        return load_model_and_tokenizer(spec, **kwargs)

    monkeypatch.setattr(resident_module, "load_model_and_tokenizer", counted)
    return seen


def test_an_exact_probe_with_its_model_kept_loaded_gives_the_same_partials(
    tmp_path: Path, loads: list[str]
) -> None:
    """`full` trains every layer first, then each layer trains from the restored base: every partial
    (scores per item, weight changes, TRL's metrics) equals that of a probe loading the model per
    unit, and this process loaded it once."""
    spec = probe_spec(probe={"layers": [1, 3]})
    run_exact(spec, tmp_path / "kept", parallel=1)
    assert loads == ["builtin:demo"]
    run_exact(spec, tmp_path / "reloaded", parallel=1, keep_model=False)
    kept, reloaded = _partials(tmp_path / "kept"), _partials(tmp_path / "reloaded")
    assert list(kept) == ["base.json", "full.json", "layer-1.json", "layer-3.json"]
    assert kept == reloaded
    assert kept["layer-3.json"]["deltas"]["3"] > 0


def test_halving_rungs_on_a_kept_model_continue_as_on_a_fresh_load(tmp_path: Path, loads: list[str]) -> None:
    """Rungs resume their checkpoints over the restored base: the same race, the same partials."""
    spec = probe_spec(probe={"steps": 4, "mode": "halving"})
    run_halving(spec, tmp_path / "kept", parallel=1)
    run_halving(spec, tmp_path / "reloaded", parallel=1, keep_model=False)
    kept, reloaded = _partials(tmp_path / "kept"), _partials(tmp_path / "reloaded")
    rungs = {name.split("-step-")[1] for name in kept if "-step-" in name}
    assert rungs == {"1.json", "2.json"}  # three rungs: two short ones continued by the last
    assert kept == reloaded
    assert loads == ["builtin:demo"]


def test_pool_workers_keep_their_model_and_match_one_process(tmp_path: Path) -> None:
    """Two worker processes, each with its own kept model, give the single process's partials."""
    spec = probe_spec(probe={"layers": [1, 3]})
    run_exact(spec, tmp_path / "pool", parallel=2)
    run_exact(spec, tmp_path / "one", parallel=1, keep_model=False)
    assert _partials(tmp_path / "pool") == _partials(tmp_path / "one")


class _Fail(TrainerCallback):  # type: ignore[misc]
    def on_step_end(self, *_: Any, **__: Any) -> None:
        raise RuntimeError("the node went away")


def _state(model: Any) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _fresh(spec: LayerAdaptationSpec) -> dict[str, torch.Tensor]:
    model, _ = load_model_and_tokenizer(spec.model)
    return _state(model)


def test_restore_puts_back_the_base_after_a_training_and_after_a_failed_one(tmp_path: Path) -> None:
    """With activation checkpointing on, a training leaves the model trained; `restore` gives the
    fresh load's weights, cache setting and mode back, also when the training failed half way."""
    spec = small_spec(training={"gradientCheckpointing": True})
    resident = ResidentModel()
    model, _ = resident.take(spec.model, choose_precision(spec.training.precision))
    fresh = _fresh(spec)
    train(spec, [2, 4], tmp_path / "ok", max_steps=2, resident=resident)
    assert resident.holds_training and not model.is_gradient_checkpointing and model.config.use_cache
    trained = _state(model)
    assert not torch.equal(
        trained["model.layers.2.mlp.up_proj.weight"], fresh["model.layers.2.mlp.up_proj.weight"]
    )
    assert torch.equal(
        trained["model.layers.3.mlp.up_proj.weight"], fresh["model.layers.3.mlp.up_proj.weight"]
    )
    resident.restore()
    assert not resident.holds_training and all(torch.equal(fresh[k], v) for k, v in _state(model).items())

    with pytest.raises(RuntimeError, match="went away"):
        train(spec, [2], tmp_path / "failed", max_steps=2, resident=resident, callbacks=[_Fail()])
    resident.restore()
    assert all(torch.equal(fresh[k], v) for k, v in _state(model).items())
    assert all(p.grad is None for p in model.parameters()) and not model.training
    assert resident.take(spec.model, choose_precision(spec.training.precision))[0] is model
