"""Finding and freezing decoder layers in every architecture the product promises, and beyond."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    LlamaConfig,
    Qwen3Config,
)

from service.errors import InputError, LayerpilotError, UnsupportedArchitectureError
from service.models.stack import LAYER_PATHS, LayerStack, count_parameters, find_decoder_layers, freeze_except
from tests.service.models.tiny_models import (
    ARCHITECTURES,
    LLAMA_LIKE,
    batch,
    build,
    tiny,
    tiny_bert,
)

# --------------------------------------------------------------------------------------------------
# Discovery and freezing on every table architecture the product promises


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_stack_found_frozen_and_trained(arch: str) -> None:
    model = tiny(arch)
    stack = find_decoder_layers(model)
    assert stack.path == ARCHITECTURES[arch][1] == LAYER_PATHS[arch]
    assert stack.model_type == arch
    assert len(stack) == 3
    assert stack.prefix(1) == f"{stack.path}.1."

    trainable = freeze_except(model, stack, [1])

    layer_one = {f"{stack.prefix(1)}{name}" for name, _ in stack.layers[1].named_parameters()}
    assert layer_one
    assert trainable == sorted(layer_one) == sorted(stack.parameter_names(model, 1))
    grads_on = {name for name, p in model.named_parameters() if p.requires_grad}
    assert grads_on == layer_one
    assert all(name.startswith(stack.prefix(1)) for name in grads_on)

    model.train()
    ids = batch()
    model(input_ids=ids, labels=ids).loss.backward()
    params = dict(model.named_parameters())
    assert all(p.grad is None for name, p in params.items() if name not in layer_one)
    assert all(params[name].grad is not None for name in layer_one)
    assert any(params[name].grad.abs().sum() > 0 for name in layer_one)  # type: ignore[union-attr]


def test_count_parameters_follows_freezing_and_counts_tied_weights_once() -> None:
    model = build(Qwen3Config(**LLAMA_LIKE, head_dim=8, tie_word_embeddings=True))
    assert model.get_submodule("lm_head").weight is model.get_submodule("model.embed_tokens").weight
    unique = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert count_parameters(model) == (unique, unique)

    stack = find_decoder_layers(model)
    freeze_except(model, stack, [0, 2])
    expected = sum(p.numel() for i in (0, 2) for p in stack.layers[i].parameters())
    assert count_parameters(model) == (expected, unique)


def test_freeze_except_is_repeatable_and_returns_sorted_names() -> None:
    model = tiny()
    stack = find_decoder_layers(model)
    freeze_except(model, stack, [0])
    names = freeze_except(model, stack, [2, 1])
    assert names == sorted(names)
    assert {n.split(".")[2] for n in names} == {"1", "2"}
    assert not any(p.requires_grad for p in stack.layers[0].parameters())


def test_layer_prefix_does_not_confuse_layer_1_with_layer_10() -> None:
    config = LlamaConfig(**{**LLAMA_LIKE, "num_hidden_layers": 11})
    model = build(config)
    stack = find_decoder_layers(model)
    names = freeze_except(model, stack, [1])
    assert names and all(n.startswith("model.layers.1.") for n in names)
    assert not any(p.requires_grad for p in stack.layers[10].parameters())


def test_bare_base_model_is_found_without_the_head_prefix() -> None:
    model = build(LlamaConfig(**LLAMA_LIKE), head=False)
    stack = find_decoder_layers(model)
    assert stack.path == "layers"
    assert freeze_except(model, stack, [2])[0].startswith("layers.2.")


def test_shared_weights_across_the_chosen_boundary_are_refused() -> None:
    model = tiny()
    stack = find_decoder_layers(model)
    shared = model.get_submodule("model.layers.0.mlp.up_proj").weight
    model.get_submodule("model.layers.1.mlp.up_proj").weight = shared
    with pytest.raises(LayerpilotError, match="same tensor") as caught:
        freeze_except(model, stack, [1])
    assert not isinstance(caught.value, InputError)
    assert "model.layers.1.mlp.up_proj.weight" in str(caught.value)
    assert "model.layers.0.mlp.up_proj.weight" in str(caught.value)
    # Both sharers chosen: the shared tensor is trained as part of the chosen layers only.
    names = freeze_except(model, stack, [0, 1])
    assert "model.layers.1.mlp.up_proj.weight" in names


@pytest.mark.parametrize(
    ("indices", "needle"),
    [([3], "0..2"), ([-1], "0..2"), ([1, 1], "repeat"), ([], "0..2")],
)
def test_bad_indices_name_the_valid_range(indices: list[int], needle: str) -> None:
    model = tiny()
    stack = find_decoder_layers(model)
    with pytest.raises(InputError, match=needle.replace(".", r"\.")) as caught:
        freeze_except(model, stack, indices)
    assert caught.value.field == "layers"
    assert all(p.requires_grad for p in model.parameters())  # nothing changed before the check


def test_prefix_of_missing_layer_is_an_index_error() -> None:
    stack = find_decoder_layers(tiny())
    with pytest.raises(IndexError):
        stack.prefix(3)


# --------------------------------------------------------------------------------------------------
# Architectures outside the table


def test_unknown_architecture_names_type_class_and_candidates() -> None:
    model = tiny_bert()
    with pytest.raises(UnsupportedArchitectureError) as caught:
        find_decoder_layers(model)
    error = caught.value
    assert error.field == "model.uri"
    message = str(error)
    assert "'bert'" in message and "BertLMHeadModel" in message
    assert "bert.encoder.layer (2 × BertLayer)" in message
    assert "set model.layersPath to one of them" in message


def test_layers_path_override_makes_an_unknown_architecture_trainable() -> None:
    model = tiny_bert()
    stack = find_decoder_layers(model, "bert.encoder.layer")
    assert isinstance(stack, LayerStack)
    assert (stack.path, len(stack), stack.model_type) == ("bert.encoder.layer", 2, "bert")
    names = freeze_except(model, stack, [1])
    assert names and all(n.startswith("bert.encoder.layer.1.") for n in names)
    ids = batch()
    model(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    assert all(p.grad is not None for p in stack.layers[1].parameters())


def test_layers_path_overrides_the_table() -> None:
    model = tiny()
    stack = find_decoder_layers(model, "model.layers")
    assert stack.path == "model.layers"


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("bert.encoder", "is a BertEncoder, not a list of layers"),
        ("bert.decoder.layer", "does not exist"),
        ("", "does not exist"),
    ],
)
def test_bad_layers_path_is_a_spec_error_listing_candidates(path: str, needle: str) -> None:
    with pytest.raises(InputError, match=needle) as caught:
        find_decoder_layers(tiny_bert(), path)
    assert caught.value.field == "model.layersPath"
    assert "bert.encoder.layer (2 × BertLayer)" in str(caught.value)


def test_module_without_any_layer_list() -> None:
    with pytest.raises(UnsupportedArchitectureError, match="no list of repeated layers"):
        find_decoder_layers(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)))


def test_known_type_with_unexpected_structure_lists_what_it_found() -> None:
    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = LlamaConfig(**LLAMA_LIKE)
            self.blocks = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(3))

    with pytest.raises(UnsupportedArchitectureError, match=r"no decoder layers at model\.layers") as caught:
        find_decoder_layers(Odd())
    assert "blocks (3 × Linear)" in str(caught.value)


def test_architecture_table_covers_the_promised_model_types() -> None:
    promised = {
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "qwen3_moe",
        "gemma",
        "gemma2",
        "gemma3_text",
        "phi3",
        "phi",
        "gpt2",
        "gpt_neox",
        "opt",
        "falcon",
        "gptj",
        "bloom",
        "olmo",
        "olmo2",
        "starcoder2",
        "stablelm",
        "cohere",
        "granite",
    }
    assert promised <= LAYER_PATHS.keys()
    assert LAYER_PATHS["opt"] == "model.decoder.layers"
    assert LAYER_PATHS["bloom"] == "transformer.h"
