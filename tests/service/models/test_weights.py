"""A model's stored weights: the base tensors training compares against (read from its files, not a
copy in memory) and the fingerprint that ties a patch to its base."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, Qwen3Config

from service.models.hub import DEMO_MODEL_DIR
from service.models.loading import load_model_and_tokenizer
from service.models.weights import fingerprint_model_dir, has_stored_tensors, stored_tensors
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


def _fingerprint_from_loaded_tensors(model_dir: Path) -> str:
    """The fingerprint's definition, computed the slow way: from every tensor loaded in memory."""
    tensors: dict[str, torch.Tensor] = {}
    for file in model_dir.glob("*.safetensors"):
        tensors.update(load_file(str(file)))
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def test_the_streamed_fingerprint_is_the_hash_of_the_loaded_tensors(tmp_path: Path) -> None:
    """Streaming from the files keeps every fingerprint already recorded in patches and runs valid."""
    model = AutoModelForCausalLM.from_config(
        Qwen3Config(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
        )
    ).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="8KB")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    for model_dir in (DEMO_MODEL_DIR, tmp_path / "sharded"):
        assert fingerprint_model_dir(model_dir) == _fingerprint_from_loaded_tensors(model_dir)
    model.save_pretrained(tmp_path / "whole")
    assert fingerprint_model_dir(tmp_path / "whole") == fingerprint_model_dir(tmp_path / "sharded")
