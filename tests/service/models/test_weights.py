"""The base weights training compares against come from the model's files, not a copy in memory."""

from __future__ import annotations

import torch

from service.models.hub import DEMO_MODEL_DIR
from service.models.loading import load_model_and_tokenizer
from service.models.weights import has_stored_tensors, stored_tensors
from service.spec.models import ModelSpec


def test_the_stored_tensors_of_a_layer_are_the_loaded_parameters() -> None:
    model, _ = load_model_and_tokenizer(ModelSpec(uri="builtin:demo"))
    names = [n for n, _ in model.named_parameters() if n.startswith("model.layers.2.")]
    assert names and has_stored_tensors(DEMO_MODEL_DIR, names)
    stored = stored_tensors(DEMO_MODEL_DIR, names)
    assert stored is not None and stored.keys() == set(names)
    params = dict(model.named_parameters())
    assert all(torch.equal(stored[n].to(params[n].dtype), params[n].detach()) for n in names)


def test_a_name_the_files_do_not_hold_gives_no_partial_answer() -> None:
    names = ["model.layers.2.mlp.up_proj.weight", "model.layers.2.not_a_tensor"]
    assert not has_stored_tensors(DEMO_MODEL_DIR, names)
    assert stored_tensors(DEMO_MODEL_DIR, names) is None
