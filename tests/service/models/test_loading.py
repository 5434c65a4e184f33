"""Loading local and built-in models, dtypes, tokenizers, and the gate on remote code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from service.errors import InputError, LayerpilotError, UnsupportedArchitectureError
from service.models import hub
from service.models.hub import DEMO_MODEL_DIR, resolve_model_dir
from service.models.loading import load_model_and_tokenizer
from service.spec.models import ModelSpec
from tests.service.models.tiny_models import (
    char_tokenizer,
    same_weights,
    save_tiny,
    tiny,
)

# --------------------------------------------------------------------------------------------------
# Local directories and the built-in model


def test_demo_uri_maps_to_the_shipped_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Path(hub.__file__).parents[1] / "assets" / "demo_model" == DEMO_MODEL_DIR
    fake = tmp_path / "demo"
    fake.mkdir()
    monkeypatch.setattr(hub, "DEMO_MODEL_DIR", fake)
    with pytest.raises(LayerpilotError, match="model builtin:demo is missing"):
        resolve_model_dir("builtin:demo")
    (fake / "config.json").write_text("{}")
    assert resolve_model_dir("builtin:demo") == fake


def test_local_directory_round_trip(tmp_path: Path) -> None:
    original = save_tiny(tmp_path / "m")
    assert resolve_model_dir(str(tmp_path / "m")) == (tmp_path / "m").resolve()

    model, tokenizer = load_model_and_tokenizer(ModelSpec(uri=str(tmp_path / "m")))

    assert type(model).__name__ == "LlamaForCausalLM"
    assert same_weights(model, original)
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.pad_token == "<pad>"
    assert tokenizer.padding_side == "left"
    assert tokenizer("1+2=")["input_ids"] == [3, 12, 4, 13]
    assert model.generation_config.pad_token_id == 0


def test_cpu_loads_float32_unless_asked(tmp_path: Path) -> None:
    """transformers 5 defaults to the checkpoint's dtype; on CPU layerpilot wants float32."""
    tiny().bfloat16().save_pretrained(tmp_path)
    char_tokenizer().save_pretrained(tmp_path)
    model, _ = load_model_and_tokenizer(ModelSpec(uri=str(tmp_path)))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    model, _ = load_model_and_tokenizer(ModelSpec(uri=str(tmp_path)), dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_tokenizer_without_pad_falls_back_to_eos(tmp_path: Path) -> None:
    save_tiny(tmp_path, pad=False)
    _, tokenizer = load_model_and_tokenizer(ModelSpec(uri=str(tmp_path)))
    assert tokenizer.pad_token == tokenizer.eos_token == "<eos>"
    assert tokenizer.padding_side == "left"
    padded = tokenizer(["1", "12"], padding=True)["input_ids"]
    assert padded[0] == [1, 3]


def test_missing_or_wrong_local_paths_are_spec_errors(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    for uri, needle in [
        (str(tmp_path / "nope"), "does not exist"),
        (str(tmp_path / "file.txt"), "is a file"),
        (str(tmp_path / "empty"), "no config.json"),
    ]:
        with pytest.raises(InputError, match=needle) as caught:
            resolve_model_dir(uri)
        assert caught.value.field == "model.uri"
        with pytest.raises(InputError, match=needle):
            load_model_and_tokenizer(ModelSpec(uri=uri))


def test_config_for_unknown_or_non_causal_model_type(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no_such_arch"}))
    with pytest.raises(UnsupportedArchitectureError, match="no_such_arch") as caught:
        load_model_and_tokenizer(ModelSpec(uri=str(tmp_path)))
    assert caught.value.field == "model.uri"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(UnsupportedArchitectureError, match="no causal language-model head"):
        load_model_and_tokenizer(ModelSpec(uri=str(tmp_path)))


# --------------------------------------------------------------------------------------------------
# Remote code


SENTINEL_CODE = "import pathlib\npathlib.Path(__file__).with_name('RAN').write_text('remote code ran')\n"


def test_trust_remote_code_is_off_by_default_and_refused(tmp_path: Path) -> None:
    assert ModelSpec().trust_remote_code is False
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "tiny_custom",
                "auto_map": {
                    "AutoConfig": "configuration_tiny.TinyConfig",
                    "AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM",
                },
            }
        )
    )
    (tmp_path / "configuration_tiny.py").write_text(SENTINEL_CODE)
    (tmp_path / "modeling_tiny.py").write_text(SENTINEL_CODE)
    with pytest.raises(InputError, match=r"modeling_tiny\.TinyForCausalLM") as caught:
        load_model_and_tokenizer(ModelSpec(uri=str(tmp_path)))
    assert caught.value.field == "model.trustRemoteCode"
    assert "model.trustRemoteCode: true" in str(caught.value)
    assert not (tmp_path / "RAN").exists()


def test_auto_map_on_a_native_architecture_loads_builtin_code(tmp_path: Path) -> None:
    original = save_tiny(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "modeling_evil.py").write_text(SENTINEL_CODE)
    model, _ = load_model_and_tokenizer(ModelSpec(uri=str(tmp_path)))
    assert type(model).__module__.startswith("transformers.models.llama")
    assert same_weights(model, original)
    assert not (tmp_path / "RAN").exists()
