"""Build the shipped agent demo model, `builtin:demo-agent`, reproducibly from a seed.

A tiny Qwen3 with a character-level tokenizer, pre-trained with plain supervised learning on expert
episodes of `builtin:gridworld` (shortest paths, in the `plain` transcript format, loss on the
actions only) until it solves a share of unseen grids: enough that RL has signal (sampled episodes
of one group differ), little enough that RL has room (about 30–50 % success before RL).

    make demo-model        # builds both demo models; this one is python tools/build_agent_model.py

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

import build_demo_model as demo_model  # beside this file: run as `python tools/build_agent_model.py`
import torch
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from service.environments.episodes import play_episodes
from service.environments.gridworld import GridWorld
from service.environments.transcript import TurnFormat
from service.models.hub import DEMO_AGENT_DIR
from service.spec.demo import demo_spec

ALPHABET = list("#.AGkD>\n abcdefghijklmnopqrstuvwxyz0123456789,.:;'!?-")
MAX_LENGTH = 512  # positions: a whole episode's transcript
PRETRAIN_SEED_BASE = 50_000_000  # expert episodes come from seeds no training or evaluation uses
VALIDATION_EPISODES = 200
TARGET_SUCCESS = 0.40
SEED = 1234


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The demo's character-level tokenizer over the gridworld's characters and lower-case words."""
    return demo_model.build_tokenizer(ALPHABET, MAX_LENGTH)


def build_config(vocab_size: int) -> Qwen3Config:
    """The demo's architecture (6 layers, hidden 128) with room for whole episodes."""
    return demo_model.build_config(vocab_size, MAX_LENGTH)


def expert_episode(env: GridWorld, fmt: TurnFormat, seed: int, max_turns: int) -> tuple[list[int], list[int]]:
    """(tokens, loss mask) of one shortest-path episode in the plain format."""
    observation = env.reset(seed)
    ids = fmt.opening(observation)
    mask = [0] * len(ids)
    for move in env.solution()[:max_turns]:
        action = fmt.tokenizer(move + "\n", add_special_tokens=False)["input_ids"]
        ids += action
        mask += [1] * len(action)
        observation, _, done, _ = env.step(move)
        if done:
            break
        feedback = fmt.feedback(observation, action)
        ids += feedback
        mask += [0] * len(feedback)
    return ids, mask


def success_rate(
    model: Qwen3ForCausalLM, fmt: TurnFormat, params: dict[str, Any], seeds: range, turns: int
) -> float:
    episodes = play_episodes(
        model,
        fmt,
        [(GridWorld(**params), seed, None) for seed in seeds],
        max_turns=turns,
        max_action_tokens=8,
        temperature=None,
        step_timeout=10,
    )
    return sum(e.success for e in episodes) / len(episodes)


def pretrain(
    model: Qwen3ForCausalLM,
    fmt: TurnFormat,
    params: dict[str, Any],
    max_turns: int,
    *,
    max_steps: int,
    target: float,
    check_every: int = 25,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = SEED,
) -> tuple[int, float]:
    """Supervised training on expert episodes until greedy success on validation grids reaches
    `target`; returns (steps, validation success)."""
    rng = random.Random(seed)
    env = GridWorld(**params)
    validation = range(PRETRAIN_SEED_BASE, PRETRAIN_SEED_BASE + VALIDATION_EPISODES)
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    pad = fmt.tokenizer.pad_token_id
    rate = 0.0
    for step in range(1, max_steps + 1):
        model.train()
        batch = [
            expert_episode(
                env, fmt, PRETRAIN_SEED_BASE + VALIDATION_EPISODES + rng.randrange(10**6), max_turns
            )
            for _ in range(batch_size)
        ]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((batch_size, width), pad, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        attention = torch.zeros((batch_size, width), dtype=torch.long)
        for row, (seq, mask) in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            attention[row, : len(seq)] = 1
            labels[row, : len(seq)] = torch.tensor([t if m else -100 for t, m in zip(seq, mask, strict=True)])
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        if step % check_every == 0:
            rate = success_rate(model, fmt, params, validation, max_turns)
            print(f"step {step}: loss {loss.item():.3f}, validation success {rate:.2f}", flush=True)
            if rate >= target:
                return step, rate
    return max_steps, rate


def build_agent_model(
    out: Path, *, target: float = TARGET_SUCCESS, max_steps: int = 3000, seed: int = SEED
) -> dict[str, Any]:
    """Build, pre-train and save the agent demo model; returns its build record."""
    torch.manual_seed(seed)
    started = time.perf_counter()
    environment = demo_spec("agent").environment
    assert environment is not None
    tokenizer = build_tokenizer()
    fmt = TurnFormat(tokenizer)
    model = Qwen3ForCausalLM(build_config(len(tokenizer)))
    steps, rate = pretrain(
        model, fmt, environment.params, environment.max_turns, max_steps=max_steps, target=target, seed=seed
    )
    evaluation = range(environment.eval_seed, environment.eval_seed + environment.eval_episodes)
    eval_success = success_rate(model, fmt, environment.params, evaluation, environment.max_turns)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    record = {
        "seed": seed,
        "pretrainSteps": steps,
        "targetSuccess": target,
        "validationSuccess": rate,
        "evalSuccess": eval_success,
        "evalEpisodes": len(evaluation),
        "environment": environment.model_dump(mode="json", by_alias=True),
        "seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
    }
    (out / "build_info.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEMO_AGENT_DIR)
    parser.add_argument("--target-success", type=float, default=TARGET_SUCCESS)
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    record = build_agent_model(args.out, target=args.target_success, max_steps=args.max_steps, seed=args.seed)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
