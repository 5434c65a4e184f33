"""Training and evaluation rows from the spec's dataset.

Every source becomes two lists of dicts with the prompt under `prompt` and the reference under
`answer` (the names TRL and our rewards expect); other columns pass through to the rewards. A
prompt is text, or a conversation: a list of `{role, content}` messages (TRL's conversational
format), which training and evaluation render with the tokenizer's chat template. With
`dataset.chatTemplate: true` every text prompt becomes a conversation of one user message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service import procedural
from service.errors import InputError, LayerpilotError, first_line
from service.spec.models import DatasetSpec

ARITH_DIR = Path(__file__).parent / "assets" / "arith"
CODE_DIR = Path(__file__).parent / "assets" / "code"
BUILTIN_DATA = {"builtin:arith": ARITH_DIR, "builtin:code": CODE_DIR}
FILE_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}

Row = dict[str, Any]
DEFAULT_EVAL_SIZE = 64
SMALL_SHARE = 5  # a dataset of fewer than 5 × 64 rows holds out a fifth of them


def eval_size(dataset: DatasetSpec, rows: int) -> int:
    """How many rows evaluation holds out: `evalSize`, else 64, or a fifth of a small dataset.

    >>> from service.spec.models import DatasetSpec
    >>> eval_size(DatasetSpec(), 1000), eval_size(DatasetSpec(), 50), eval_size(DatasetSpec(evalSize=8), 50)
    (64, 10, 8)
    """
    if dataset.eval_size is not None:
        return dataset.eval_size
    return max(1, min(DEFAULT_EVAL_SIZE, rows // SMALL_SHARE))


def load_rows(dataset: DatasetSpec) -> tuple[list[Row], list[Row]]:
    """(train rows, eval rows) for a dataset spec.

    Without an `evalSplit`, the last `eval_size` rows are held out from training, so a score on the
    eval rows is never a score on training prompts.
    """
    train, evaluation = split_rows(dataset)
    train = _normalise(train, dataset)
    evaluation = _normalise(evaluation, dataset)
    if dataset.chat_template:
        train = _as_conversations(train, dataset.system_prompt)
        evaluation = _as_conversations(evaluation, dataset.system_prompt)
    return train, evaluation


def split_rows(dataset: DatasetSpec) -> tuple[list[Row], list[Row]]:
    """(train rows, eval rows) as the dataset holds them: no column is required or renamed (an
    environment's rows parameterise episodes; they need no prompt or answer)."""
    if dataset.uri in BUILTIN_DATA:
        directory = BUILTIN_DATA[dataset.uri]
        train = _read_jsonl(directory / "train.jsonl")
        evaluation = _read_jsonl(directory / "eval.jsonl")
        size = dataset.eval_size or DEFAULT_EVAL_SIZE
    elif procedural.is_procedural(dataset):
        size = dataset.eval_size or DEFAULT_EVAL_SIZE
        train = procedural.rows(dataset, "train", dataset.size)
        evaluation = procedural.rows(dataset, "eval", size)
    else:
        train = _load_split(dataset, dataset.split)
        size = eval_size(dataset, len(train))
        if dataset.eval_split:
            evaluation = _load_split(dataset, dataset.eval_split)
        else:
            if len(train) <= size:
                raise InputError(
                    "dataset.evalSize",
                    f"{size} eval rows leave none of the {len(train)} rows for training",
                    "lower it (--eval-size N, or evalSize in the spec; by default a fifth of a small "
                    "dataset is held out), or set dataset.evalSplit",
                )
            train, evaluation = train[:-size], train[-size:]
    if not train:
        raise InputError("dataset.uri", "the training split is empty", "point it at data with rows")
    return train, evaluation[:size]


def _read_jsonl(path: Path) -> list[Row]:
    with path.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def check_source(dataset: DatasetSpec) -> str | None:
    """Bad input before anything loads: a local dataset that is missing, empty or of a format no
    reader takes. Returns the file's reader (`json`, `csv`, `parquet`), or None for a directory or
    the Hub (checked when they load)."""
    uri = dataset.uri
    if procedural.is_procedural(dataset):
        procedural.check(dataset)
        return None
    if uri.startswith(("hf://", "builtin:")):
        return None
    path = Path(uri)
    if path.is_dir():
        return None
    if not path.is_file():
        raise InputError(
            "dataset.uri",
            f"no file or directory at {uri}",
            "use builtin:arith, a path, hf://org/name or reasoning-gym:<task>",
        )
    if not path.read_bytes()[:4096].strip():
        raise InputError("dataset.uri", f"{path} is empty", "point it at a file with rows")
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            "dataset.uri", f"cannot read '{path.suffix}' files", f"use one of {', '.join(FILE_FORMATS)}"
        )
    return fmt


def _load_split(dataset: DatasetSpec, split: str) -> list[Row]:
    fmt = check_source(dataset)
    import datasets  # deferred: importing datasets costs about a second; builtin:arith needs none

    uri = dataset.uri
    try:
        if uri.startswith("hf://"):
            loaded = datasets.load_dataset(uri[len("hf://") :], split=split)
        elif fmt is not None:
            loaded = datasets.load_dataset(fmt, data_files=uri, split="train")
        elif (Path(uri) / "dataset_dict.json").exists() or (Path(uri) / "state.json").exists():
            on_disk = datasets.load_from_disk(uri)
            loaded = on_disk[split] if isinstance(on_disk, datasets.DatasetDict) else on_disk
        else:
            loaded = datasets.load_dataset(uri, split=split)
    except (InputError, LayerpilotError):
        raise
    except KeyError:
        raise InputError("dataset.split", f"no split '{split}' in {uri}", "name an existing split") from None
    except Exception as err:  # datasets raises many types; the user needs the one line
        if Path(uri).is_file():  # a local file datasets cannot parse is the user's input to fix
            raise InputError(
                "dataset.uri",
                f"cannot read {uri} ({first_line(err)})",
                "check that it holds rows in its format",
            ) from None
        raise LayerpilotError(f"could not load dataset {uri}: {first_line(err)}") from err
    rows = [dict(row) for row in loaded]
    if not rows:
        raise InputError("dataset.uri", f"{uri} has no rows (split '{split}')", "point it at data with rows")
    return rows


def _normalise(rows: list[Row], dataset: DatasetSpec) -> list[Row]:
    if not rows:
        return rows
    columns = list(rows[0])
    for field, alias in ((dataset.prompt_field, "promptField"), (dataset.answer_field, "answerField")):
        if field not in columns:
            raise InputError(
                f"dataset.{alias}",
                f"no column '{field}' in {dataset.uri} (columns: {', '.join(columns)})",
                f"set dataset.{alias} to one of them",
            )
    out = []
    for number, row in enumerate(rows, start=1):
        new = {k: v for k, v in row.items() if k not in (dataset.prompt_field, dataset.answer_field)}
        new["prompt"] = _checked_prompt(row[dataset.prompt_field], number, dataset)
        new["answer"] = row[dataset.answer_field]
        out.append(new)
    return out


def is_conversation(prompt: Any) -> bool:
    """Whether a prompt is a list of chat messages rather than text."""
    return isinstance(prompt, list)


def _checked_prompt(prompt: Any, number: int, dataset: DatasetSpec) -> Any:
    """Text as it is; a conversation only if every message has a string `role` and `content`."""
    if not is_conversation(prompt):
        return prompt
    for message in prompt:
        if not (isinstance(message, dict) and isinstance(message.get("role"), str) and "content" in message):
            raise InputError(
                "dataset.promptField",
                f"row {number} of {dataset.uri}: column '{dataset.prompt_field}' is a list, but not of "
                f"chat messages ({str(message)[:60]})",
                'give each message as {"role": "user", "content": "..."}',
            )
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def _as_conversations(rows: list[Row], system: str | None = None) -> list[Row]:
    head = [{"role": "system", "content": system}] if system else []
    return [
        {**row, "prompt": [*head, {"role": "user", "content": row["prompt"]}]}
        if isinstance(row["prompt"], str)
        else row
        for row in rows
    ]


def check_chat_template(
    rows: list[Row], tokenizer: Any, uri: str, dataset: DatasetSpec | None = None
) -> None:
    """Refuse conversations for a tokenizer that cannot render them, naming what made them
    conversations: `dataset.chatTemplate`, or the prompt column itself."""
    if not any(is_conversation(row["prompt"]) for row in rows) or getattr(tokenizer, "chat_template", None):
        return
    problem = f"the prompts are conversations, but the tokenizer of {uri} has no chat template"
    if dataset is not None and not dataset.chat_template:
        raise InputError(
            "dataset.promptField",
            f"column '{dataset.prompt_field}' holds chat messages, but the tokenizer of {uri} has no "
            "chat template",
            "give text prompts in that column, or use a model whose tokenizer has a chat template",
        )
    raise InputError(
        "dataset.chatTemplate",
        problem,
        "use text prompts (chatTemplate: false) or a model whose tokenizer has a chat template",
    )


def unreadable_characters(rows: list[Row], tokenizer: Any, uri: str, sample: int = 200) -> str | None:
    """A warning when the tokenizer maps characters of the prompts to its unknown or padding token:
    the model cannot read them, and a reward on its answers stays at 0."""
    lost = {tokenizer.unk_token_id, tokenizer.pad_token_id} - {None}
    if not lost:
        return None
    texts = [_prompt_text(row["prompt"]) for row in rows[:sample]]
    unread: dict[str, None] = {}
    for char in sorted(set("".join(texts))):
        ids = tokenizer(char, add_special_tokens=False)["input_ids"]
        if not char.isspace() and ids and set(ids) <= lost:
            unread[char] = None
    if not unread:
        return None
    shown = ", ".join(repr(char) for char in list(unread)[:8])
    token = tokenizer.unk_token or tokenizer.pad_token
    return (
        f"the tokenizer of {uri} maps {len(unread)} characters of the prompts to {token} ({shown}): the "
        "model cannot read them; use data it covers, or another model"
    )


def _prompt_text(prompt: Any) -> str:
    if is_conversation(prompt):
        return "".join(str(message.get("content", "")) for message in prompt)
    return str(prompt)
