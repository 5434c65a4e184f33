"""Tiny real transformers models of many architectures, built from configs in milliseconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

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
