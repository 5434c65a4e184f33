"""Build the shipped demo model and the `builtin:arith` data, reproducibly from a seed.

The demo is a tiny Qwen3 causal LM with a character-level tokenizer, pre-trained with plain
supervised learning on `a+b=` problems until it answers a fraction of them correctly: enough that
RL has signal (some sampled answers are right), little enough that RL has room to improve.

    make demo-model        # = python tools/build_demo_model.py

The committed weights were produced by exactly this command (see `build_info.json` beside them).
It lives outside the engine: layerpilot only reads the assets it writes.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from service.data import ARITH_DIR
from service.models.hub import DEMO_MODEL_DIR

ALPHABET = list("0123456789+=-* ")
PAD, EOS = "<pad>", "<eos>"
MAX_OPERAND = 100  # a, b in [0, 100)
EVAL_ITEMS = 500
VALIDATION_ITEMS = 300  # carved from the training items to decide when pre-training stops
TARGET_ACCURACY = 0.40
SEED = 1234


def arith_items(seed: int = SEED) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """All 10,000 `a+b=` problems, shuffled by `seed` and split into (train, eval).

    The eval items never appear in pre-training or RL training, so eval scores measure generalisation.
    """
    items = [
        {"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(MAX_OPERAND) for b in range(MAX_OPERAND)
    ]
    random.Random(seed).shuffle(items)
    return items[EVAL_ITEMS:], items[:EVAL_ITEMS]


def build_tokenizer(alphabet: list[str] = ALPHABET, max_length: int = 64) -> PreTrainedTokenizerFast:
    """A character-level tokenizer: every character of the alphabet is one token."""
    vocab = {PAD: 0, EOS: 1}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, padding_side="left", model_max_length=max_length
    )


def build_config(vocab_size: int, max_positions: int = 64) -> Qwen3Config:
    return Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )


def pretrain(
    model: Qwen3ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    train: list[dict[str, str]],
    *,
    max_steps: int,
    target_accuracy: float | None = None,
    check_every: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = SEED,
) -> int:
    """Supervised next-token training on `prompt + answer + <eos>`, loss on the answer only.

    Stops once greedy accuracy on a validation slice of the *training* items reaches
    `target_accuracy` (the learning curve is steep, so a fixed step count lands anywhere from
    10% to 70%). Returns the number of steps taken.
    """
    rng = random.Random(seed)
    validation, train = train[:VALIDATION_ITEMS], train[VALIDATION_ITEMS:]
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for step in range(1, max_steps + 1):
        model.train()
        batch = rng.sample(train, batch_size)
        prompts = [tokenizer(item["prompt"])["input_ids"] for item in batch]
        answers = [tokenizer(item["answer"])["input_ids"] + [tokenizer.eos_token_id] for item in batch]
        width = max(len(p) + len(a) for p, a in zip(prompts, answers, strict=True))
        ids = torch.full((batch_size, width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for row, (p, a) in enumerate(zip(prompts, answers, strict=True)):
            seq = p + a
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, len(p) : len(seq)] = torch.tensor(a)
            mask[row, : len(seq)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        if target_accuracy is not None and step % check_every == 0:
            model.eval()
            if greedy_accuracy(model, tokenizer, validation) >= target_accuracy:
                return step
    model.eval()
    return max_steps


def greedy_accuracy(
    model: Qwen3ForCausalLM, tokenizer: PreTrainedTokenizerFast, items: list[dict[str, str]]
) -> float:
    correct = 0
    for start in range(0, len(items), 128):
        chunk = items[start : start + 128]
        enc = tokenizer([i["prompt"] for i in chunk], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(
                **enc, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += sum(t.strip() == i["answer"] for t, i in zip(texts, chunk, strict=True))
    return correct / len(items)


def write_arith(out: Path = ARITH_DIR, seed: int = SEED) -> None:
    train, evaluation = arith_items(seed)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("eval", evaluation)):
        with (out / f"{name}.jsonl").open("w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")


def build_demo_model(
    out: Path, *, target_accuracy: float = TARGET_ACCURACY, max_steps: int = 1000, seed: int = SEED
) -> dict[str, Any]:
    """Build, pre-train and save the demo model; returns its build record."""
    torch.manual_seed(seed)
    started = time.perf_counter()
    tokenizer = build_tokenizer()
    model = Qwen3ForCausalLM(build_config(len(tokenizer)))
    train, evaluation = arith_items(seed)
    steps = pretrain(model, tokenizer, train, max_steps=max_steps, target_accuracy=target_accuracy, seed=seed)
    accuracy = greedy_accuracy(model, tokenizer, evaluation)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    record = {
        "seed": seed,
        "pretrainSteps": steps,
        "targetAccuracy": target_accuracy,
        "evalAccuracy": accuracy,
        "evalItems": len(evaluation),
        "seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
    }
    (out / "build_info.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEMO_MODEL_DIR)
    parser.add_argument("--target-accuracy", type=float, default=TARGET_ACCURACY)
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    write_arith(seed=args.seed)
    record = build_demo_model(
        args.out, target_accuracy=args.target_accuracy, max_steps=args.max_steps, seed=args.seed
    )
    print(json.dumps(record))


if __name__ == "__main__":
    main()
