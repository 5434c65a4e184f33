"""Rewards that compare a completion's answer with the reference `answer` column.

`exact_answer` reads the answer the way graders of GSM8K-style data do; `math_equivalence` asks
math-verify whether two expressions are equal; `format` checks the shape of the whole completion.
"""

from __future__ import annotations

import logging
import re
import threading
from decimal import Decimal, InvalidOperation
from typing import Any

from service.rewards.base import ANSWER_FIX, ParamError, column, completion_text

logger = logging.getLogger(__name__)


# Thousands groups only where they are real (`1,234`), so that `1,2,3` is not read as 123.
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_GSM8K_MARK = "####"


def _last_boxed(text: str) -> str | None:
    r"""Contents of the last `\boxed{...}`, with nested braces (`\boxed{\frac{1}{2}}`)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None  # unbalanced: truncated completion


def _as_number(text: str) -> Decimal | None:
    """`text` as a number if it is exactly one (`82`, `82.0`, `1,234`, `$5`), else None."""
    cleaned = text.strip().strip("$").strip().rstrip(".")
    if not _NUMBER.fullmatch(cleaned):
        return None
    try:
        return Decimal(cleaned.replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the regex admits only valid literals
        return None


def _extract_answer(text: str) -> str | None:
    """The completion's answer: after `####`, else the last `\\boxed{}`, else the first number."""
    if _GSM8K_MARK in text:
        tail = text.rsplit(_GSM8K_MARK, 1)[1]
        match = _NUMBER.search(tail)
        return match.group(0) if match else tail.strip() or None
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    match = _NUMBER.search(text)
    return match.group(0) if match else None


def _reference_answer(ref: Any) -> str:
    """The reference, unwrapped from a GSM8K-style `... #### 72` or a `\\boxed{}` if it has one."""
    text = str(ref)
    if _GSM8K_MARK in text:
        return text.rsplit(_GSM8K_MARK, 1)[1].strip()
    boxed = _last_boxed(text)
    return (boxed if boxed is not None else text).strip()


def _answers_match(found: str | None, ref: Any) -> bool:
    if found is None or ref is None:
        return False
    reference = _reference_answer(ref)
    ref_number = _as_number(reference)
    if ref_number is not None:
        found_number = _as_number(found)
        return found_number is not None and found_number == ref_number
    return found.strip() == reference


def exact_answer(completions: list[Any], **kwargs: Any) -> list[float | None]:
    r"""1 if the answer (after ####, in the last \boxed{}, else the first number) equals `answer`.

    The completion's answer is the number after `####` (GSM8K), else the last `\boxed{...}`,
    else the first number in the text: a model answering `37+45=` with `82 and then 9` is
    scored on 82, not on whatever it rambles afterwards. Numbers compare as numbers (`82.0`
    equals `82`, `1,234` equals `1234`); other references compare as stripped strings.

    >>> exact_answer(["82", "82.0", "#### 82", "\\boxed{82}", "81", "8 2"], answer=["82"] * 6)
    [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    """
    answers = column(kwargs, "answer", len(completions), "exact_answer", "dataset.answerField", ANSWER_FIX)
    return [
        1.0 if _answers_match(_extract_answer(completion_text(c)), ref) else 0.0
        for c, ref in zip(completions, answers, strict=True)
    ]


class MathEquivalence:
    """1 if the completion is mathematically equivalent to `answer` (math-verify; 1/2 == 0.5).

    Scored with math-verify's `parse` and `verify`; a parse failure scores 0.0, never raises.
    math-verify enforces its timeouts with `signal.alarm`, which works only in the main thread;
    anywhere else it raises. So in other threads (an async trainer, an evaluation pool) the
    timeouts are switched off: the comparison then cannot be interrupted.
    """

    def __init__(self, timeout: int = 5) -> None:
        if timeout < 1:
            raise ParamError("timeout", "must be at least 1 second", "use e.g. timeout: 5")
        self.timeout = timeout
        self.__name__ = "math_equivalence"

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]:
        answers = column(kwargs, "answer", len(completions), self.__name__, "dataset.answerField", ANSWER_FIX)
        from math_verify import parse, verify  # deferred: importing it costs about half a second

        main = threading.current_thread() is threading.main_thread()
        seconds: int | None = self.timeout if main else None
        scores: list[float | None] = []
        for completion, ref in zip(completions, answers, strict=True):
            try:
                gold = parse(str(ref), parsing_timeout=seconds)
                pred = parse(completion_text(completion), parsing_timeout=seconds)
                ok = bool(gold) and bool(pred) and bool(verify(gold, pred, timeout_seconds=seconds))
            except Exception:  # math-verify raises on odd input despite raise_on_error=False
                logger.debug("math_equivalence: could not compare", exc_info=True)
                ok = False
            scores.append(1.0 if ok else 0.0)
        return scores


R1_FORMAT = r"<think>.*?</think>\s*<answer>.*?</answer>"


class Format:
    """1 if the whole completion matches `pattern` (default <think>…</think><answer>…</answer>).

    `re.fullmatch` with DOTALL on the stripped completion.
    """

    def __init__(self, pattern: str = R1_FORMAT) -> None:
        try:
            self.compiled = re.compile(pattern, re.DOTALL)
        except re.error as err:
            raise ParamError(
                "pattern", f"is not a valid regular expression ({err})", "fix the regex"
            ) from None
        self.__name__ = "format"

    def __call__(self, completions: list[Any], **_: Any) -> list[float | None]:
        return [1.0 if self.compiled.fullmatch(completion_text(c).strip()) else 0.0 for c in completions]
