"""What a registered layer patch moves, next to logging the full fine-tuned model, in one run.

Trains one layer of the demo model for a few steps, then logs (a) the layer patch with the
`layer_patch` flavor and (b) the patched full model with `mlflow.transformers.log_model`, both into
one local store, and compares the bytes each put into the artifact store.

Run: `.venv/bin/python benchmarks/patch_artifact_size.py [--out DIR] [--layers 1]`
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import mlflow
from transformers import AutoModelForCausalLM, AutoTokenizer

from mlflow_plugins import layer_patch_flavor
from service.patch import apply_patch
from service.spec.loading import load_spec
from service.training.trainer import train


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="layerpilot-size-")))
    parser.add_argument("--layers", default="1", help="comma-separated layers to train")
    args = parser.parse_args()
    out: Path = args.out
    layers = [int(i) for i in args.layers.split(",")]
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
    sizes = {}
    for label, info in (("layer patch (flavor layer_patch)", patch_info), ("full model", full_info)):
        model_dir = next(p for p in root.rglob(info.model_id) if p.is_dir())
        sizes[label] = _bytes(model_dir)
    ratio = sizes["full model"] / sizes["layer patch (flavor layer_patch)"]
    print(json.dumps({"layers": layers, "bytes": sizes, "fullOverPatch": round(ratio, 2)}, indent=2))


if __name__ == "__main__":
    main()
