"""Chat-formatted data: conversations rendered with the tokenizer's chat template in training and in
evaluation alike, rewards given the completion as text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from service.data import ARITH_DIR, load_rows
from service.errors import InputError
from service.evaluation import evaluate_model, generate_greedy, render_prompt
from service.models.hub import DEMO_MODEL_DIR
from service.models.loading import load_model_and_tokenizer
from service.rewards.registry import build_rewards
from service.spec.loading import load_spec
from service.spec.models import DatasetSpec, ModelSpec
from service.training.trainer import train

# Only characters the demo model's tokenizer knows: a user turn renders as its content, and the
# generation prompt adds " =" (the demo's data ends each prompt with "=").
TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %} ={% endif %}"
SEEN: list[dict[str, Any]] = []


def recording_reward(completions: list[Any], prompts: list[Any], **kwargs: Any) -> list[float]:
    """A `module:function` reward that records its input (1 for a completion starting with a digit)."""
    SEEN.append({"completions": completions, "prompts": prompts})
    return [1.0 if str(c)[:1].isdigit() else 0.0 for c in completions]


def _chat_model(tmp_path: Path) -> Path:
    """The demo model with a chat template on its tokenizer."""
    model_dir = tmp_path / "chat-model"
    shutil.copytree(DEMO_MODEL_DIR, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(model_dir)
    return model_dir


def _conversations(tmp_path: Path, rows: int = 40) -> Path:
    source = [json.loads(line) for line in (ARITH_DIR / "train.jsonl").open()]
    path = tmp_path / "chat.jsonl"
    with path.open("w") as out:
        for row in source[:rows]:
            messages = [{"role": "user", "content": row["prompt"].removesuffix("=")}]
            out.write(json.dumps({"messages": messages, "answer": row["answer"]}) + "\n")
    return path


def test_chat_template_true_makes_each_text_prompt_one_user_message() -> None:
    plain, _ = load_rows(DatasetSpec(evalSize=4))
    chat, evaluation = load_rows(DatasetSpec(evalSize=4, chatTemplate=True))
    assert chat[0]["prompt"] == [{"role": "user", "content": plain[0]["prompt"]}]
    assert all(isinstance(row["prompt"], list) for row in evaluation)


def test_a_conversation_column_is_kept_and_a_malformed_one_names_the_field(tmp_path: Path) -> None:
    train_rows, _ = load_rows(
        DatasetSpec(uri=str(_conversations(tmp_path)), promptField="messages", evalSize=4)
    )
    assert train_rows[0]["prompt"] == [{"role": "user", "content": "75+60"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps({"prompt": ["75+60"], "answer": "135"}) for _ in range(8)))
    with pytest.raises(InputError, match=r"^dataset.promptField: row 1 of .* not of chat messages"):
        load_rows(DatasetSpec(uri=str(bad), evalSize=2))


def test_evaluation_renders_a_conversation_with_the_template(tmp_path: Path) -> None:
    model, tokenizer = load_model_and_tokenizer(ModelSpec(uri=str(_chat_model(tmp_path))))
    conversation = [{"role": "user", "content": "12+7"}]
    assert render_prompt(tokenizer, conversation) == "12+7 ="
    assert generate_greedy(model, tokenizer, [conversation], max_new_tokens=3) == generate_greedy(
        model, tokenizer, ["12+7 ="], max_new_tokens=3
    )
    SEEN.clear()
    funcs, weights = build_rewards(load_spec({"rewards": [{"name": f"{__name__}:recording_reward"}]}).rewards)
    evaluate_model(
        model, tokenizer, [{"prompt": conversation, "answer": "19"}], funcs, weights, max_new_tokens=3
    )
    assert all(isinstance(c, str) for c in SEEN[-1]["completions"])


def test_training_on_conversations_renders_them_and_rewards_get_text(tmp_path: Path) -> None:
    spec = load_spec(
        {
            "model": {"uri": str(_chat_model(tmp_path))},
            "dataset": {"uri": str(_conversations(tmp_path)), "promptField": "messages", "evalSize": 8},
            "rewards": [{"name": f"{__name__}:recording_reward"}],
            "algorithm": {"numGenerations": 4, "maxCompletionLength": 3, "learningRate": 1e-3},
            "training": {"maxSteps": 2, "batchSize": 8, "saveSteps": 2},
        }
    )
    SEEN.clear()
    result = train(spec, [2], tmp_path / "run")
    assert result.global_step == 2 and SEEN
    assert all(isinstance(c, str) for call in SEEN for c in call["completions"])  # text, not messages
    assert all(isinstance(p, list) and p[0]["role"] == "user" for call in SEEN for p in call["prompts"])

    # The refusal names the cause: conversations in the prompt column, or `chatTemplate: true`.
    no_template = spec.model_copy(deep=True)
    no_template.model.uri = "builtin:demo"
    with pytest.raises(InputError, match=r"^dataset.promptField: column 'messages' holds chat messages"):
        train(no_template, [2], tmp_path / "run-2")
    asked = load_spec({"model": {"uri": "builtin:demo"}, "dataset": {"chatTemplate": True}})
    with pytest.raises(InputError, match=r"^dataset.chatTemplate: the prompts are conversations"):
        train(asked, [2], tmp_path / "run-3")
