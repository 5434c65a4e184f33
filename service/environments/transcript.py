"""How an episode becomes tokens: observations and actions in the model's context.

`chat`: observations are user turns and actions assistant turns, rendered with the tokenizer's chat
template; an action ends at the model's end-of-turn token.

`plain` (models without a chat template), one documented format:

    [instructions]
    OBSERVATION
    > ACTION
    OBSERVATION
    > ACTION

The environment's text (`OBSERVATION\\n> `) is fed as it is; the action is what the model writes
after `> `, ending at its newline (or its end-of-sequence token). Actions stop after
`algorithm.maxCompletionLength` tokens either way.

Both render each piece once, as token ids appended to the context: what the model read when it
acted is exactly what the loss sees later, with no re-tokenisation at the seams.
"""

from __future__ import annotations

from typing import Any

ACTION_PROMPT = "\n> "
_USER, _ACTION = "\u2063USER\u2063", "\u2063ACTION\u2063"  # markers no observation contains


class TurnFormat:
    """Tokens for the opening context, the environment's answer after an action, and turn ends."""

    chat: bool = False

    def __init__(self, tokenizer: Any, instructions: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.instructions = instructions
        eos = tokenizer.eos_token_id
        self.stop_ids: set[int] = {eos} if isinstance(eos, int) else set(eos or [])

    def opening(self, observation: str) -> list[int]:
        text = f"{self.instructions}\n{observation}" if self.instructions else observation
        return list(self.tokenizer(text + ACTION_PROMPT, add_special_tokens=True)["input_ids"])

    def feedback(self, observation: str, action_ids: list[int]) -> list[int]:
        """The environment's tokens after an action (whose own end may be missing: cut at the limit)."""
        ended = self.ends_turn(action_ids)
        text = ("" if ended else "\n") + observation + ACTION_PROMPT
        return self._encode(text)

    def ends_turn(self, action_ids: list[int]) -> bool:
        if action_ids and action_ids[-1] in self.stop_ids:
            return True
        return bool(action_ids) and "\n" in self.tokenizer.decode(action_ids[-1:], skip_special_tokens=True)

    def action_text(self, action_ids: list[int]) -> str:
        return str(self.tokenizer.decode(action_ids, skip_special_tokens=True)).split("\n")[0].strip()

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


class ChatFormat(TurnFormat):
    """User turns for observations, assistant turns for actions, through the chat template."""

    chat = True

    def __init__(self, tokenizer: Any, instructions: str | None = None) -> None:
        super().__init__(tokenizer, instructions)
        # What the template writes between an assistant's action and the next assistant turn, with
        # the user's text in between; rendered once with markers and cut around them.
        rendered = self._render(
            [
                {"role": "user", "content": _USER},
                {"role": "assistant", "content": _ACTION},
                {"role": "user", "content": _USER},
            ]
        )
        between = rendered.split(_ACTION, 1)[1]
        self.before_user, self.after_user = between.split(_USER, 1)
        eos = tokenizer.eos_token or ""
        # the end-of-turn the model writes itself, as the template would
        self.end_of_turn = eos if eos and self.before_user.startswith(eos) else ""

    def opening(self, observation: str) -> list[int]:
        text = f"{self.instructions}\n\n{observation}" if self.instructions else observation
        return self._encode(self._render([{"role": "user", "content": text}]))

    def feedback(self, observation: str, action_ids: list[int]) -> list[int]:
        before = self.before_user
        if self.end_of_turn and self.ends_turn(action_ids):
            before = before[len(self.end_of_turn) :]
        return self._encode(before + observation + self.after_user)

    def ends_turn(self, action_ids: list[int]) -> bool:
        return bool(action_ids) and action_ids[-1] in self.stop_ids

    def action_text(self, action_ids: list[int]) -> str:
        return str(self.tokenizer.decode(action_ids, skip_special_tokens=True)).strip()

    def _render(self, messages: list[dict[str, str]]) -> str:
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def turn_format(tokenizer: Any, transcript: str, instructions: str | None = None) -> TurnFormat:
    """The format `environment.transcript` asks for (`auto`: chat when the tokenizer has a template)."""
    chat = transcript == "chat" or (transcript == "auto" and getattr(tokenizer, "chat_template", None))
    return ChatFormat(tokenizer, instructions) if chat else TurnFormat(tokenizer, instructions)
