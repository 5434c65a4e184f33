"""Peak memory and step time of layer-selective GRPO against full-model GRPO, side by side in one run.

A randomly initialised Qwen3 of about 150M parameters with a 32k vocabulary (a realistic output
layer: the logits dominate generation) is saved once; then each configuration trains it for a few
GRPO steps in a fresh process of its own (so peak RSS is that configuration's alone): full model,
top-1 (a middle layer), top-3 (three middle layers), last-1, and LoRA (PEFT, r=16 on
every linear layer of every decoder layer: the cheap RL users pick today). Step time is split into generation
(TRL's `_generate_and_score_completions`, timed by a wrapper here) and the rest (loss, backward,
optimizer). Beside each peak, its floor: the same process
holding the model for generation (measured after loading it, libraries included) plus, for the
trained parameters only, gradients and two Adam states. "full" trains every decoder layer (what
the exact probe's `full` unit does), not the embeddings and output layer.

Run: `.venv/bin/python benchmarks/memory_step_time.py [--steps 4]` (about 5 minutes on 2 cores).
Not yet here: the real SmolLM2 model, peak CUDA memory on a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VOCAB, HIDDEN, INTERMEDIATE, LAYERS = 32_000, 768, 2048, 16
CONFIGS = {
    "full": list(range(LAYERS)),
    "top-1 (layer 8)": [8],
    "top-3 (layers 7-9)": [7, 8, 9],
    "last-1 (layer 15)": [LAYERS - 1],
    "LoRA r=16, all linear": [-1],
}
LORA = [-1]


def build(model_dir: Path) -> int:
    """Save the benchmark model (random weights, a 32k word-level tokenizer); returns its parameter count."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
        num_attention_heads=12, num_key_value_heads=4, head_dim=64, max_position_embeddings=256,
        tie_word_embeddings=False,
    )  # fmt: skip
    model = Qwen3ForCausalLM(config)
    chars = [chr(c) for c in range(32, 127)]
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<eos>", *chars])}
    vocab.update({f"<w{i}>": len(vocab) for i in range(VOCAB - len(vocab))})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>")
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 1
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return sum(p.numel() for p in model.parameters())


def child(model_dir: str, layers: list[int], steps: int, out: str) -> dict[str, Any]:
    """One configuration in this process: train, then report peak RSS and step times."""
    from trl import GRPOTrainer

    from service.models.loading import load_model_and_tokenizer
    from service.spec.loading import load_spec
    from service.spec.models import ModelSpec
    from service.training.trainer import train

    # The floor's base: this process holding the model for generation (libraries included).
    loaded = load_model_and_tokenizer(ModelSpec(uri=model_dir))
    held_gb = _rss_gb()
    del loaded
    generation: list[float] = []
    original = GRPOTrainer._generate_and_score_completions

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            generation.append(time.perf_counter() - started)

    GRPOTrainer._generate_and_score_completions = timed  # type: ignore[method-assign]
    marks: list[float] = []  # when each step's hook ran: consecutive differences are step times
    spec = load_spec({
        "model": {"uri": model_dir}, "dataset": {"uri": "builtin:arith", "evalSize": 16},
        "algorithm": {"numGenerations": 4, "maxCompletionLength": 8, "learningRate": 1e-5},
        "training": {"maxSteps": steps, "batchSize": 8, "saveSteps": 10_000, "precision": "float32"},
    })  # fmt: skip
    started = time.perf_counter()
    if layers == LORA:
        trainable, total = _train_lora(spec, Path(out), lambda: marks.append(time.perf_counter()))
    else:
        hook = [lambda step, total, logs: marks.append(time.perf_counter())]
        result = train(spec, layers, Path(out), on_step=hook)
        trainable, total = result.trainable_parameters, result.total_parameters
    steps_logged = [b - a for a, b in zip([started, *marks], marks, strict=False)]
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # the first step pays one-time costs (allocator warm-up, lazy inits): report the rest
    step = statistics.median(steps_logged[1:] or steps_logged)
    gen = statistics.median(generation[1:] or generation)
    return {
        "layers": layers,
        "trainable": trainable,
        "total": total,
        "peakRssGB": peak_kb / 1024**2,
        "heldGB": held_gb,
        "stepS": step,
        "generationS": gen,
        "restS": max(step - gen, 0.0),
    }


def _train_lora(spec: Any, out: Path, mark: Any) -> tuple[int, int]:
    """LoRA r=16 on every linear layer of every decoder layer: the cheap RL users pick today.

    The same GRPO configuration as layer-selective training (`service.training`), with PEFT's
    adapters as the only trainable parameters.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import TrainerCallback

    from service.data import load_rows
    from service.models.loading import load_model_and_tokenizer
    from service.models.stack import count_parameters
    from service.rewards.registry import build_rewards
    from service.training.config import choose_precision, grpo_config_kwargs
    from service.training.trainer import build_trainer

    class Mark(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            mark()

    model, tokenizer = load_model_and_tokenizer(spec.model)
    linear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=linear, lora_dropout=0.0))
    precision = choose_precision("float32")
    kwargs = grpo_config_kwargs(spec, out, max_steps=spec.training.max_steps, precision=precision)
    rows = load_rows(spec.dataset)[0]
    trainer = build_trainer(model, tokenizer, build_rewards(spec.rewards), rows, kwargs, [Mark()])
    trainer.train()
    return count_parameters(model)


def _rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024**2
    return 0.0


def floor_gb(row: dict[str, Any]) -> float:
    """The process holding the model (libraries included), plus a gradient and two Adam moments
    (float32) for each trained parameter: what training those layers cannot do without."""
    return float(row["heldGB"]) + row["trainable"] * 4 * 3 / 1024**3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--child", nargs=3, metavar=("MODEL_DIR", "LAYERS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model_dir, layers, out = args.child
        print(json.dumps(child(model_dir, json.loads(layers), args.steps, out)))
        return
    import torch
    import transformers
    import trl

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        params = build(model_dir)
        rows = {}
        for name, layers in CONFIGS.items():
            done = subprocess.run(
                [sys.executable, __file__, "--steps", str(args.steps), "--child", str(model_dir),
                 json.dumps(layers), str(Path(tmp) / name.split()[0])],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(name, rows[name], flush=True)
    full = rows["full"]
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}"
    setup = f"vocab {VOCAB}, batch 8 x 4 generations, 8 new tokens, {args.steps} steps (medians of steps 2..)"
    print(
        f"\n{time.strftime('%Y-%m-%d')} {platform.machine()}, {versions}; {params / 1e6:.0f}M params, {setup}"
    )
    header = (
        "training | trained params | peak RSS | floor | peak / full | step | generation | rest | rest / full"
    )
    print(f"| {header} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['trainable'] / 1e6:.1f}M | {row['peakRssGB']:.2f} GB | "
            f"{floor_gb(row):.2f} GB (x{row['peakRssGB'] / floor_gb(row):.2f}) | "
            f"{row['peakRssGB'] / full['peakRssGB']:.2f} | "
            f"{row['stepS']:.2f} s | {row['generationS']:.2f} s | {row['restS']:.2f} s | "
            f"{row['restS'] / full['restS']:.2f} |"
        )


if __name__ == "__main__":
    main()
