"""`layerpilot train` → `patch apply` → `eval --patch`, as a user chains them."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cli.main import app
from service.patch import PATCH_TENSORS
from tests.cli.helpers import resource, runner, write_spec


def test_train_then_patch_apply_then_eval(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        resource(
            dataset={"evalSize": 24},
            algorithm={"numGenerations": 4, "maxCompletionLength": 4, "learningRate": 1e-3},
            training={"maxSteps": 2, "batchSize": 8, "saveSteps": 2},
        ),
    )
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(spec), "--layers", "3", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output

    summary = json.loads(result.stdout)
    assert summary["layers"] == [3] and summary["globalStep"] == 2
    assert (out / PATCH_TENSORS).exists()

    again = runner.invoke(app, ["train", str(spec), "--layers", "3", "--out", str(out)])
    assert again.exit_code == 2 and "--resume" in again.output

    applied = tmp_path / "model"
    result = runner.invoke(app, ["patch", "apply", "builtin:demo", str(out), str(applied), "--json"])
    assert result.exit_code == 0, result.output
    from transformers import AutoModelForCausalLM

    from service.models.loading import load_model_and_tokenizer
    from service.patch import apply_to_model, read_patch
    from service.spec.models import ModelSpec

    full = AutoModelForCausalLM.from_pretrained(applied, dtype=torch.float32).eval()
    base, tokenizer = load_model_and_tokenizer(ModelSpec())
    apply_to_model(base, read_patch(out))
    batch = tokenizer(["41+17="], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(full(**batch).logits, base.eval()(**batch).logits)

    refused = runner.invoke(app, ["patch", "apply", str(applied), str(out), str(tmp_path / "m2")])
    assert refused.exit_code == 2 and "BASE" in refused.output

    scored = runner.invoke(app, ["eval", str(spec), "--patch", str(out), "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["numItems"] == 24
