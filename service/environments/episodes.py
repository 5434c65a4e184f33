"""Episodes: the model acts, the environment answers, turn after turn, for a batch of episodes at once.

All episodes of a batch advance together, one token at a time, through one key-value cache: a turn
feeds only what is new (the environment's answer and the model's last token), never the transcript
again (`reuse_cache=False` re-encodes it at every turn instead, as calling `generate` per turn would;
the benchmark compares the two). Rows that wait (their action ended, or their episode did) are fed
nothing: each forward pass left-pads the new tokens of every row, and the attention mask keeps the
padding out of every later token's view.

Each episode records its tokens split as TRL's `rollout_func` wants them (prompt, completion and an
`env_mask` that is 1 on the model's tokens and 0 on the environment's), its transcript, and per
action the reward and the state it was taken from (GiGPO's anchor states).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from service.environments.protocol import as_step, state_key_of
from service.environments.transcript import TurnFormat
from service.models.loading import evaluating

Start = tuple[Any, int, dict[str, Any] | None]  # (environment, seed, dataset row or None)


@dataclass
class Episode:
    """One played episode: its tokens, transcript and outcome."""

    seed: int
    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)  # 1: the model's token, 0: the environment's
    transcript: list[tuple[str, str]] = field(default_factory=list)  # ("observation" | "action", text)
    rewards: list[float] = field(default_factory=list)  # per action
    state_keys: list[Hashable | None] = field(default_factory=list)  # the state each action was taken in
    action_spans: list[tuple[int, int]] = field(default_factory=list)  # each action in completion_ids
    invalid_actions: int = 0
    reached_success: bool | None = None  # what the environment said, if it did
    error: str | None = None
    done: bool = False

    @property
    def episode_return(self) -> float:
        """The sum of the rewards; 0 for an episode the environment broke off."""
        return 0.0 if self.error else float(sum(self.rewards))

    @property
    def success(self) -> bool:
        if self.error:
            return False
        return self.reached_success if self.reached_success is not None else self.episode_return > 0

    @property
    def turns(self) -> int:
        return len(self.action_spans)

    def summary(self) -> dict[str, Any]:
        """The episode as people read it: seed, outcome and transcript."""
        return {
            "seed": self.seed,
            "success": self.success,
            "return": self.episode_return,
            "turns": self.turns,
            "invalidActions": self.invalid_actions,
            "error": self.error,
            "transcript": [{"role": role, "text": text} for role, text in self.transcript],
        }


class EnvironmentFailed(Exception):
    """An environment raised, hung past its time limit, or answered in a shape we cannot read."""


def call_with_timeout(function: Callable[..., Any], *args: Any, timeout: float) -> Any:
    """`function(*args)` in a daemon thread; past `timeout` seconds the thread is abandoned.

    A thread that hangs forever keeps hanging, but the episode (and the run) goes on without it.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function(*args)
        except BaseException as err:  # reported per episode, whatever the environment raised
            outcome["error"] = err

    thread = threading.Thread(target=target, daemon=True, name="layerpilot-environment")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise EnvironmentFailed(f"took longer than {timeout:g} s (environment.stepTimeout)")
    if "error" in outcome:
        err = outcome["error"]
        raise EnvironmentFailed(f"{type(err).__name__}: {err}")
    return outcome["value"]


class _Context:
    """The batch's token sequences and the key-value cache that holds their first `fed` tokens."""

    def __init__(self, model: Any, pad_id: int, rows: int) -> None:
        self.model = model
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        self.sequences: list[list[int]] = [[] for _ in range(rows)]
        self.restart()

    def restart(self) -> None:
        """Forget the cache: the next forward pass encodes every sequence from its start."""
        self.cache: Any = None
        self.mask = torch.zeros((len(self.sequences), 0), dtype=torch.long, device=self.device)
        self.fed = [0] * len(self.sequences)

    def forward(self) -> torch.Tensor:
        """Feed every row's unfed tokens; the logits after each row's last token, (rows, vocab)."""
        chunks = [sequence[fed:] for sequence, fed in zip(self.sequences, self.fed, strict=True)]
        width = max(len(chunk) for chunk in chunks)
        ids = torch.full((len(chunks), width), self.pad_id, dtype=torch.long)
        new_mask = torch.zeros((len(chunks), width), dtype=torch.long)
        for row, chunk in enumerate(chunks):
            if chunk:
                ids[row, width - len(chunk) :] = torch.tensor(chunk)
                new_mask[row, width - len(chunk) :] = 1
        mask = torch.cat([self.mask, new_mask.to(self.device)], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -width:]
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask,
            position_ids=positions,
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.cache, self.mask = out.cache, mask
        self.fed = [len(sequence) for sequence in self.sequences]
        logits: torch.Tensor = out.logits[:, -1, :].float()
        return logits


def _sample(logits: torch.Tensor, temperature: float | None) -> list[int]:
    if temperature is None:
        return [int(t) for t in logits.argmax(-1)]
    probabilities = torch.softmax(logits / temperature, dim=-1)
    return [int(t) for t in torch.multinomial(probabilities, 1).squeeze(-1)]


@torch.no_grad()
def play_episodes(
    model: Any,
    fmt: TurnFormat,
    starts: Sequence[Start],
    *,
    max_turns: int,
    max_action_tokens: int,
    temperature: float | None,
    step_timeout: float,
    reuse_cache: bool = True,
) -> list[Episode]:
    """Play one episode per start, all at once; `temperature=None` acts greedily.

    An environment that raises or hangs ends its episode (reward 0, `error` says why); the others
    go on. An episode whose context would outgrow the model's positions ends where it is.
    """
    with evaluating(model):
        tokenizer = fmt.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(fmt.stop_ids), 0)
        limit = getattr(model.config, "max_position_embeddings", None) or 1 << 30
        context = _Context(model, pad_id, len(starts))
        episodes = [Episode(seed=seed) for _, seed, _ in starts]
        for index, (env, seed, row) in enumerate(starts):
            episode = episodes[index]
            try:
                observation = str(call_with_timeout(env.reset, seed, row, timeout=step_timeout))
            except EnvironmentFailed as err:
                episode.error, episode.done = f"reset: {err}", True
                observation = ""
            episode.transcript.append(("observation", observation))
            episode.prompt_ids = fmt.opening(observation)
            context.sequences[index] = list(episode.prompt_ids)

        for turn in range(max_turns):
            live = [i for i, episode in enumerate(episodes) if not episode.done]
            if not live:
                break
            for i in live:
                try:
                    episodes[i].state_keys.append(state_key_of(starts[i][0]))
                except Exception:  # a broken state_key only costs GiGPO its anchor
                    episodes[i].state_keys.append(None)
            if not reuse_cache:
                context.restart()
            actions = _write_actions(context, fmt, live, max_action_tokens, temperature)
            for i in live:
                _act(episodes[i], starts[i][0], fmt, actions[i], step_timeout)
                episode = episodes[i]
                if episode.done or turn == max_turns - 1:
                    episode.done = True
                    continue
                feedback = fmt.feedback(episode.transcript[-1][1], actions[i])
                if len(context.sequences[i]) + len(feedback) + max_action_tokens > limit:
                    episode.done = True  # the model cannot read further
                    continue
                episode.completion_ids += feedback
                episode.env_mask += [0] * len(feedback)
                context.sequences[i] += feedback

        for episode in episodes:
            if not episode.completion_ids:  # TRL needs a token to hold the (zero) reward
                episode.completion_ids, episode.env_mask = [pad_id], [0]
        return episodes


def _write_actions(
    context: _Context, fmt: TurnFormat, rows: list[int], max_tokens: int, temperature: float | None
) -> dict[int, list[int]]:
    """One action per row, token by token, each row stopping at its turn's end or `max_tokens`."""
    actions: dict[int, list[int]] = {i: [] for i in rows}
    writing = set(rows)
    for _ in range(max_tokens):
        tokens = _sample(context.forward(), temperature)
        for i in sorted(writing):
            actions[i].append(tokens[i])
            context.sequences[i].append(tokens[i])
            if fmt.ends_turn(actions[i]):
                writing.discard(i)
        if not writing:
            break
    return actions


def _act(episode: Episode, env: Any, fmt: TurnFormat, action: list[int], step_timeout: float) -> None:
    """Record the model's action and the environment's answer to it."""
    start = len(episode.completion_ids)
    episode.completion_ids += action
    episode.env_mask += [1] * len(action)
    episode.action_spans.append((start, start + len(action)))
    text = fmt.action_text(action)
    episode.transcript.append(("action", text))
    try:
        step = as_step(call_with_timeout(env.step, text, timeout=step_timeout))
    except Exception as err:  # EnvironmentFailed, or as_step's complaint about the answer's shape
        episode.error, episode.done = f"step: {err}", True
        return
    episode.rewards.append(step.reward)
    episode.invalid_actions += int(step.invalid)
    episode.transcript.append(("observation", step.observation))
    if step.done:
        episode.done = True
        episode.reached_success = step.success
