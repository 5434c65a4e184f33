"""Knockout: a skipped layer is exactly absent from the forward pass, and the probe ranks layers by
how much the base model's score drops without each, for prompts and for agents alike."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from service.models.loading import load_model_and_tokenizer
from service.models.stack import find_decoder_layers
from service.probe.knockout import skipped
from service.probe.run import run_probe
from service.spec.demo import demo_spec
from service.spec.models import LayerAdaptationSpec, ModelSpec


def test_a_skipped_layer_is_absent_from_the_forward_pass_and_back_after() -> None:
    model, tokenizer = load_model_and_tokenizer(ModelSpec(uri="builtin:demo"))
    ids = torch.tensor([tokenizer("12+34=")["input_ids"]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        without = copy.deepcopy(model)
        layers = find_decoder_layers(without).layers
        without.model.layers = torch.nn.ModuleList([layer for i, layer in enumerate(layers) if i != 2])
        without.config.num_hidden_layers -= 1
        without.config.layer_types = without.config.layer_types[:-1]
        with skipped(find_decoder_layers(model).layers[2]):
            knocked = model(input_ids=ids).logits
        assert torch.allclose(knocked, without(input_ids=ids, use_cache=False).logits, atol=1e-5)
        assert not torch.allclose(knocked, before, atol=1e-3)
        assert torch.equal(model(input_ids=ids).logits, before)  # the hook is gone


def test_knockout_ranks_by_the_score_each_layer_costs_when_skipped(tmp_path: Path) -> None:
    spec = LayerAdaptationSpec.model_validate({"dataset": {"evalSize": 32}})
    report = run_probe(spec, tmp_path / "probe", mode="knockout")
    assert report.mode == "knockout" and report.task == "builtin:arith" and len(report.layers) == 6
    for layer in report.layers:
        details = layer.details
        assert layer.score == details["baseScore"] - details["scoreWithout"]
    first = min(report.layers, key=lambda layer: layer.rank)
    assert first.score == max(layer.score for layer in report.layers) > 0
    assert report.selected == [first.index]


def test_knockout_plays_an_agents_episodes(tmp_path: Path) -> None:
    data = demo_spec("agent").model_dump(mode="json", by_alias=True)
    data["environment"].update(evalEpisodes=16)
    data["probe"].update(layers=[1, 4])
    report = run_probe(LayerAdaptationSpec.model_validate(data), tmp_path / "probe", mode="knockout")
    assert [layer.index for layer in report.layers] == [1, 4]
    assert report.layers[0].details["baseScore"] == report.layers[1].details["baseScore"]
    assert report.task and report.task.startswith("builtin:gridworld")
