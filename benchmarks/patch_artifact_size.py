"""What a registered layer patch moves, next to logging the full fine-tuned model, in one run.

Trains one layer of the demo model for a few steps, then logs (a) the layer patch with the
`layer_patch` flavor and (b) the patched full model with `mlflow.transformers.log_model`, both into
one local store, and compares the bytes each put into the artifact store.

Run: `.venv/bin/python benchmarks/patch_artifact_size.py [--out DIR]` (about 30 s); writes its
section of benchmarks/RESULTS.md (one row per trained layer set).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mlflow
from common import environment, write_section
from transformers import AutoModelForCausalLM, AutoTokenizer

from mlflow_plugins import layer_patch_flavor
from service.patch import apply_patch
from service.spec.loading import load_spec
from service.training.trainer import train


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(out: Path, layers: list[int]) -> tuple[int, int]:
    """Bytes the patch of `layers` and the full patched model each put into one artifact store."""
    spec = load_spec({"training": {"maxSteps": 2, "batchSize": 8, "saveSteps": 2}})
    train(spec, layers, out / "patch")
    apply_patch(spec.model.uri, out / "patch", out / "full")
    mlflow.set_tracking_uri(f"sqlite:///{out.resolve()}/mlflow.db")
    experiment = mlflow.set_experiment("artifact-size")
    with mlflow.start_run():
        patch_info = layer_patch_flavor.log_model(out / "patch", name="patch")
        full = AutoModelForCausalLM.from_pretrained(out / "full")
        tokenizer = AutoTokenizer.from_pretrained(out / "full")
        full_info = mlflow.transformers.log_model(
            {"model": full, "tokenizer": tokenizer},
            name="full",
            task="text-generation",
            pip_requirements=["transformers", "torch"],  # skip inference: it imports torchvision
        )
    root = Path(experiment.artifact_location.removeprefix("file://"))
    patch_dir, full_dir = (
        next(p for p in root.rglob(i.model_id) if p.is_dir()) for i in (patch_info, full_info)
    )
    return _bytes(patch_dir), _bytes(full_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="layerpilot-size-")))
    args = parser.parse_args()
    body = [
        environment(),
        "",
        "One local MLflow store; the demo model after 2 RL steps of the listed layers; bytes written to "
        "the artifact store by each `log_model`.",
        "",
        "| trained layers | `layer_patch` flavor | full model (`mlflow.transformers.log_model`) "
        "| full / patch |",
        "|---|---|---|---|",
    ]
    for layers in ([1], [1, 2, 3]):
        patch, full = measure(args.out / "-".join(map(str, layers)), layers)
        body.append(f"| {layers} ({len(layers)} of 6) | {patch:,} B | {full:,} B | {full / patch:.2f}× |")
        print(body[-1], flush=True)
    title = "Registered layer patch vs full model (`benchmarks/patch_artifact_size.py`)"
    write_section("patch-size", title, "\n".join(body), Path(__file__).name)


if __name__ == "__main__":
    main()
