"""Decoder-layer discovery, freezing and model loading, on real (tiny) transformers models."""

from __future__ import annotations

import fnmatch
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    BertConfig,
    BertLMHeadModel,
    Gemma2Config,
    GemmaConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from service import layers
from service.errors import LayerpilotError, SpecError, UnsupportedArchitectureError
from service.layers import (
    DEMO_MODEL_DIR,
    HUB_ALLOW_PATTERNS,
    LAYER_PATHS,
    LayerStack,
    count_parameters,
    find_decoder_layers,
    freeze_except,
    load_model_and_tokenizer,
    resolve_model_dir,
)
from service.spec import ModelSpec

VOCAB = 64
IDS: dict[str, Any] = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 1}
LLAMA_LIKE: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 64,
    **IDS,
}
COMMIT = "0123456789abcdef0123456789abcdef01234567"

# name -> (config factory, expected stack path)
ARCHITECTURES: dict[str, tuple[Callable[[], PretrainedConfig], str]] = {
    "llama": (lambda: LlamaConfig(**LLAMA_LIKE), "model.layers"),
    "mistral": (lambda: MistralConfig(**LLAMA_LIKE), "model.layers"),
    "qwen2": (lambda: Qwen2Config(**LLAMA_LIKE), "model.layers"),
    "qwen3": (lambda: Qwen3Config(**LLAMA_LIKE, head_dim=8), "model.layers"),
    "gemma": (lambda: GemmaConfig(**LLAMA_LIKE, head_dim=8), "model.layers"),
    "gemma2": (lambda: Gemma2Config(**LLAMA_LIKE, head_dim=8), "model.layers"),
    "phi3": (lambda: Phi3Config(**LLAMA_LIKE), "model.layers"),
    "gpt2": (
        lambda: GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=3, n_head=2, n_positions=64, **IDS),
        "transformer.h",
    ),
    "gpt_neox": (
        lambda: GPTNeoXConfig(
            vocab_size=VOCAB,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            max_position_embeddings=64,
            **IDS,
        ),
        "gpt_neox.layers",
    ),
}


def build(config: PretrainedConfig, *, head: bool = True) -> PreTrainedModel:
    torch.manual_seed(0)
    auto = AutoModelForCausalLM if head else AutoModel
    model = auto.from_config(config)  # type: ignore[no-untyped-call]
    assert isinstance(model, PreTrainedModel)
    return model


def tiny(arch: str = "llama") -> PreTrainedModel:
    return build(ARCHITECTURES[arch][0]())


def tiny_bert() -> PreTrainedModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        is_decoder=True,
    )
    return BertLMHeadModel(config)


def char_tokenizer(*, pad: bool = True) -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<eos>": 1, **{ch: i + 2 for i, ch in enumerate("0123456789+=")}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        eos_token="<eos>",
        pad_token="<pad>" if pad else None,
        padding_side="right",
    )


def save_tiny(directory: Path, arch: str = "llama", *, pad: bool = True) -> PreTrainedModel:
    model = tiny(arch)
    model.save_pretrained(directory)
    char_tokenizer(pad=pad).save_pretrained(directory)
    return model


def batch() -> torch.Tensor:
    return torch.randint(2, VOCAB, (2, 8), generator=torch.Generator().manual_seed(0))


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


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
    assert not isinstance(caught.value, SpecError)
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
    with pytest.raises(SpecError, match=needle.replace(".", r"\.")) as caught:
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
    with pytest.raises(SpecError, match=needle) as caught:
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
        "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
        "gemma3_text", "phi3", "phi", "gpt2", "gpt_neox", "opt", "falcon", "gptj", "bloom", "olmo",
        "olmo2", "starcoder2", "stablelm", "cohere", "granite",
    }  # fmt: skip
    assert promised <= LAYER_PATHS.keys()
    assert LAYER_PATHS["opt"] == "model.decoder.layers"
    assert LAYER_PATHS["bloom"] == "transformer.h"


# --------------------------------------------------------------------------------------------------
# Local directories and the built-in model


def test_demo_uri_maps_to_the_shipped_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Path(layers.__file__).parent / "assets" / "demo_model" == DEMO_MODEL_DIR
    fake = tmp_path / "demo"
    fake.mkdir()
    monkeypatch.setattr(layers, "DEMO_MODEL_DIR", fake)
    with pytest.raises(LayerpilotError, match="demo model is missing"):
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
        with pytest.raises(SpecError, match=needle) as caught:
            resolve_model_dir(uri)
        assert caught.value.field == "model.uri"
        with pytest.raises(SpecError, match=needle):
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
    with pytest.raises(SpecError, match=r"modeling_tiny\.TinyForCausalLM") as caught:
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


# --------------------------------------------------------------------------------------------------
# hf:// through a real Hugging Face cache layout, offline


def write_hub_cache(cache: Path, repo_id: str, source: Path, *, refs: dict[str, str] | None = None) -> Path:
    """Lay out `source` the way huggingface_hub 2.x caches a download: blobs + symlinked snapshot + refs."""
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = storage / "snapshots" / COMMIT
    (storage / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for i, file in enumerate(sorted(source.iterdir())):
        blob = storage / "blobs" / f"{i:040x}"
        shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    (storage / "refs").mkdir()
    for ref, commit in (refs or {"main": COMMIT}).items():
        (storage / "refs" / ref).write_text(commit)  # no newline: the hub reads it verbatim
    return snapshot


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_hub_model_resolves_from_the_cache_offline(offline_hub: Path, tmp_path: Path) -> None:
    original = save_tiny(tmp_path / "src")
    snapshot = write_hub_cache(offline_hub, "org/tiny", tmp_path / "src", refs={"main": COMMIT, "v1": COMMIT})

    assert resolve_model_dir("hf://org/tiny") == snapshot
    assert resolve_model_dir("hf://org/tiny", "v1") == snapshot
    assert resolve_model_dir("hf://org/tiny", COMMIT) == snapshot

    model, tokenizer = load_model_and_tokenizer(ModelSpec(uri="hf://org/tiny"))
    assert same_weights(model, original)
    assert tokenizer.padding_side == "left"


def test_hf_home_locates_the_cache_when_hf_hub_cache_is_unset(
    offline_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_tiny(tmp_path / "src")
    snapshot = write_hub_cache(tmp_path / "home" / "hub", "org/tiny", tmp_path / "src")
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert resolve_model_dir("hf://org/tiny") == snapshot


def test_uncached_hub_model_offline_is_a_one_line_runtime_error(offline_hub: Path) -> None:
    with pytest.raises(LayerpilotError) as caught:
        resolve_model_dir("hf://org/missing", "v2")
    error = caught.value
    assert not isinstance(error, SpecError)
    assert error.exit_code == 1
    message = str(error)
    assert "\n" not in message
    assert "hf://org/missing" in message and "not in the Hugging Face cache" in message
    assert str(offline_hub) in message
    assert "`hf download org/missing --revision v2`" in message
    assert "model.uri" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(LayerpilotError, match="not in the Hugging Face cache"):
        load_model_and_tokenizer(ModelSpec(uri="hf://org/missing"))


def test_incomplete_cached_snapshot_is_reported(offline_hub: Path, tmp_path: Path) -> None:
    save_tiny(tmp_path / "src")
    write_hub_cache(offline_hub, "org/tiny", tmp_path / "src")
    listing = {
        "format_version": 1,
        "files": {
            name: {"size": 1, "blob_id": "0" * 40}
            for name in [
                "config.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
            ]
        },
    }
    trees = offline_hub / "models--org--tiny" / "trees"
    trees.mkdir()
    (trees / f"{COMMIT}.json").write_text(json.dumps(listing))
    with pytest.raises(LayerpilotError, match="incomplete"):
        resolve_model_dir("hf://org/tiny")


def test_hub_model_with_only_pickled_weights_is_refused(offline_hub: Path, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "src" / "pytorch_model.bin").write_bytes(b"not really")
    write_hub_cache(offline_hub, "org/pickled", tmp_path / "src")
    with pytest.raises(LayerpilotError, match="no safetensors weights"):
        resolve_model_dir("hf://org/pickled")


def test_snapshot_download_gets_env_cache_and_safe_patterns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    calls: list[dict[str, Any]] = []

    def fake_snapshot_download(**kwargs: Any) -> str:
        calls.append(kwargs)
        folder = tmp_path / "snap"
        folder.mkdir(exist_ok=True)
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"")
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))

    assert resolve_model_dir("hf://org/tiny", "abc") == tmp_path / "snap"
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "true")
    resolve_model_dir("hf://org/tiny", trust_remote_code=True)

    online, offline = calls
    assert online["repo_id"] == "org/tiny" and online["revision"] == "abc"
    assert Path(online["cache_dir"]) == tmp_path / "c"
    assert online["local_files_only"] is False and offline["local_files_only"] is True

    def allowed(name: str, patterns: list[str]) -> bool:
        return any(fnmatch.fnmatch(name, p) for p in patterns)

    for wanted in ["config.json", "model-00001-of-00002.safetensors", "tokenizer.json", "tokenizer.model"]:
        assert allowed(wanted, online["allow_patterns"])
    for pickle in ["pytorch_model.bin", "model.pt", "weights.pth", "modeling_x.py"]:
        assert not allowed(pickle, online["allow_patterns"])
    assert list(HUB_ALLOW_PATTERNS) == online["allow_patterns"]
    assert allowed("modeling_x.py", offline["allow_patterns"])  # only when the spec trusts remote code
