"""What a multi-turn rollout costs: episodes played with the key-value cache carried across turns vs
re-encoding the transcript at every turn (as calling `generate` once per turn does), and rollout
tokens per second of multi-turn episodes vs single-turn generation of the same number of tokens.

The same greedy episodes on the shipped agent model (`builtin:demo-agent`, the agent demo's
gridworld), the two ways alternating, several repeats; the episodes are identical both ways (the
tests check it token for token), so only the time differs. Single-turn is TRL's own path: one
`generate` call over the same batch of first observations, as many new tokens as the episodes'
sequences hold after their prompts on average, so both hold about the same number of tokens.

Run: `.venv/bin/python benchmarks/agent_rollout.py [--episodes 64] [--repeats 3]` (about a minute);
writes its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import environment, write_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from service.environments.episodes import play_episodes
    from service.environments.registry import environment_factory
    from service.environments.transcript import turn_format
    from service.models.hub import DEMO_AGENT_DIR
    from service.spec.demo import demo_spec

    torch.set_num_threads(torch.get_num_threads())
    spec = demo_spec("agent")
    env = spec.environment
    assert env is not None
    model = AutoModelForCausalLM.from_pretrained(DEMO_AGENT_DIR).eval()
    tokenizer = AutoTokenizer.from_pretrained(DEMO_AGENT_DIR)
    fmt = turn_format(tokenizer, env.transcript)
    factory = environment_factory(env)
    seeds = range(env.eval_seed, env.eval_seed + args.episodes)

    def episodes(*, reuse_cache: bool) -> tuple[float, list]:
        started = time.perf_counter()
        played = play_episodes(
            model,
            fmt,
            [(factory(), seed, None) for seed in seeds],
            max_turns=env.max_turns,
            max_action_tokens=spec.algorithm.max_completion_length,
            temperature=None,
            step_timeout=env.step_timeout,
            reuse_cache=reuse_cache,
        )
        return time.perf_counter() - started, played

    episodes(reuse_cache=True)  # warm-up
    timings: dict[str, list[float]] = {"cache": [], "re-encode": []}
    played: list = []
    for _ in range(args.repeats):
        seconds, played = episodes(reuse_cache=True)
        timings["cache"].append(seconds)
        timings["re-encode"].append(episodes(reuse_cache=False)[0])
    cached, fresh = statistics.median(timings["cache"]), statistics.median(timings["re-encode"])
    prompt_tokens = sum(len(e.prompt_ids) for e in played)
    completion_tokens = sum(len(e.completion_ids) for e in played)
    model_tokens = sum(sum(e.env_mask) for e in played)
    total = prompt_tokens + completion_tokens

    # single-turn: the same first observations, one generate call, as many new tokens per row as
    # the episodes hold after their prompts on average (so both roll out about the same total)
    new_tokens = round(completion_tokens / len(played))
    prompts = [tokenizer.decode(e.prompt_ids) for e in played]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    single: list[float] = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        with torch.no_grad():
            model.generate(
                **encoded,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        single.append(time.perf_counter() - started)
    single_seconds = statistics.median(single)
    single_total = encoded["input_ids"].numel() + new_tokens * len(prompts)
    turns = statistics.mean(e.turns for e in played)
    rows = [
        ("multi-turn, cache carried across turns", cached, total),
        ("multi-turn, transcript re-encoded each turn", fresh, total),
        (f"single-turn `generate`, {new_tokens} new tokens per row", single_seconds, single_total),
    ]
    table = "\n".join(
        f"| {name} | {seconds:.2f} | {tokens:,} | {tokens / seconds:,.0f} | {seconds / cached:.2f}× |"
        for name, seconds, tokens in rows
    )
    body = f"""{environment()}

{args.episodes} greedy episodes of the agent demo (`examples/agent.yaml`: gridworld sizes 4–5, at most
{env.max_turns} turns; {turns:.1f} turns per episode on average), medians of {args.repeats} runs. The
episodes are the same both ways (tested token for token); only where the transcript is encoded differs.

| rollout | seconds | tokens in the sequences | tokens / s | ratio |
|---|---:|---:|---:|---:|
{table}

Of the multi-turn sequences' tokens, {model_tokens:,} are the model's actions and
{completion_tokens - model_tokens:,} the environment's answers (masked out of the loss); single-turn
generation writes every one of its tokens with the model, which is why it is compared per token in
the sequence. Each turn of an episode costs a forward pass over the environment's answer (a prefill)
plus one pass per action token; with the cache carried, no turn re-reads the turns before it.
"""
    write_section("agent-rollout", "Multi-turn rollouts: the cache across turns", body, "agent_rollout.py")
    print(body)


if __name__ == "__main__":
    main()
