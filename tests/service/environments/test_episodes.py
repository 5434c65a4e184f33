"""Episodes on the shipped agent model: the cache continues each turn exactly as re-encoding would,
the environment's tokens are masked, and a broken environment costs one episode, not the batch."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from service.environments.episodes import play_episodes
from service.environments.gridworld import GridWorld
from service.environments.transcript import ACTION_PROMPT, turn_format
from service.models.hub import DEMO_AGENT_DIR
from tests.service.environments.envs import Corridor, Hangs


@pytest.fixture(scope="module")
def agent() -> tuple:
    return AutoModelForCausalLM.from_pretrained(DEMO_AGENT_DIR), AutoTokenizer.from_pretrained(DEMO_AGENT_DIR)


def _play(agent: tuple, starts: list, **options: object) -> list:
    model, tokenizer = agent
    kwargs = {"max_turns": 6, "max_action_tokens": 8, "temperature": None, "step_timeout": 5.0, **options}
    return play_episodes(model, turn_format(tokenizer, "plain"), starts, **kwargs)  # type: ignore[arg-type]


def test_a_turn_continues_the_cache_exactly_as_re_encoding_the_transcript_would(agent: tuple) -> None:
    starts = lambda: [(GridWorld(size=[4, 5]), seed, None) for seed in range(1_000_000, 1_000_012)]  # noqa: E731
    cached = _play(agent, starts())
    fresh = _play(agent, starts(), reuse_cache=False)
    assert [e.completion_ids for e in cached] == [e.completion_ids for e in fresh]
    assert [e.transcript for e in cached] == [e.transcript for e in fresh]
    assert len({len(e.completion_ids) for e in cached}) > 1, "episodes of different lengths share the batch"
    # one at a time, without batch neighbours, the same greedy episodes come out
    alone = [_play(agent, [start])[0] for start in starts()[:3]]
    assert [e.completion_ids for e in alone] == [e.completion_ids for e in cached[:3]]
    assert sum(e.success for e in cached) > 0


def test_the_environments_tokens_are_masked_and_the_models_are_not(agent: tuple) -> None:
    tokenizer = agent[1]
    episode = _play(agent, [(GridWorld(size=5), 1_000_003, None)], temperature=1.0)[0]
    assert len(episode.env_mask) == len(episode.completion_ids) and episode.turns >= 2
    env_text = tokenizer.decode(
        [t for t, m in zip(episode.completion_ids, episode.env_mask, strict=True) if not m]
    )
    actions = [text for role, text in episode.transcript if role == "action"]
    observations = [text for role, text in episode.transcript if role == "observation"]
    fmt = turn_format(tokenizer, "plain")
    assert [
        fmt.action_text(episode.completion_ids[start:end]) for start, end in episode.action_spans
    ] == actions
    in_actions = {i for start, end in episode.action_spans for i in range(start, end)}
    assert {i for i, m in enumerate(episode.env_mask) if m} == in_actions
    for observation in observations[1 : episode.turns]:
        assert observation + ACTION_PROMPT in env_text
    assert tokenizer.decode(episode.prompt_ids) == observations[0] + ACTION_PROMPT


def test_an_environment_that_hangs_ends_its_episode_and_the_others_go_on(agent: tuple) -> None:
    started = time.perf_counter()
    episodes = _play(agent, [(Hangs(), seed, None) for seed in range(4)], step_timeout=0.5)
    assert time.perf_counter() - started < 10
    hung = [e for e in episodes if e.seed % 2]
    assert all(e.error == "step: took longer than 0.5 s (environment.stepTimeout)" for e in hung)
    assert all(e.episode_return == 0.0 and not e.success and e.turns == 1 for e in hung)
    assert all(e.error is None and e.turns > 1 for e in episodes if not e.seed % 2)


def test_the_state_each_action_was_taken_in_is_recorded(agent: tuple) -> None:
    episode = _play(agent, [(Corridor(length=3), 0, None)], temperature=1.0)[0]
    assert len(episode.state_keys) == episode.turns and episode.state_keys[0] == "0"


CHAT = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def test_a_chat_model_gets_user_and_assistant_turns(agent: tuple) -> None:
    model, tokenizer = agent
    tokenizer = AutoTokenizer.from_pretrained(DEMO_AGENT_DIR)
    tokenizer.chat_template = CHAT
    torch.manual_seed(0)
    fmt = turn_format(tokenizer, "auto")
    assert fmt.chat
    episode = play_episodes(
        model,
        fmt,
        [(Corridor(), 0, None)],
        max_turns=2,
        max_action_tokens=4,
        temperature=1.0,
        step_timeout=5,
    )[0]
    assert tokenizer.decode(episode.prompt_ids) == "user: A...<eos>\nassistant: "
    env_text = tokenizer.decode(
        [t for t, m in zip(episode.completion_ids, episode.env_mask, strict=True) if not m]
    )
    assert env_text.endswith(f"\nuser: {episode.transcript[2][1]}<eos>\nassistant: ")
