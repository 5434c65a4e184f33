"""Profile once per base model: a job takes a finished probe's report of the same weights (`probe.reuse`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from service.errors import InputError
from service.models.hub import DEMO_MODEL_DIR
from service.models.weights import model_fingerprint
from service.probe.chart import write_report
from service.probe.report import REPORT_JSON, LayerScore, ProbeReport, rank_layers
from service.probe.reuse import reuse_into, reused_profile
from service.probe.selection import layers_from_report
from service.spec.models import ModelSpec
from tests.conftest import small_spec

# A probe of the demo model on addition whose best layers are 3, then 1, then 4.
SCORES = {0: 0.1, 1: 0.5, 2: 0.2, 3: 0.9, 4: 0.4, 5: 0.0}


def probe_of(model: ModelSpec, out_dir: Path, *, fingerprint: str | None = "") -> Path:
    """A finished probe report of `model` (its real weights fingerprint unless one is given)."""
    ranks = rank_layers(SCORES, 6)
    report = ProbeReport(
        model=model.uri,
        num_layers=6,
        mode="gradient",
        layers_path="model.layers",
        layers=[LayerScore(i, f"model.layers.{i}", s, rank=ranks[i]) for i, s in SCORES.items()],
        selected=[3],
        task="builtin:arith",
        base_fingerprint=model_fingerprint(model) if fingerprint == "" else fingerprint,
    )
    write_report(report, out_dir)
    return out_dir / REPORT_JSON


def copy_of_demo(where: Path) -> ModelSpec:
    shutil.copytree(DEMO_MODEL_DIR, where)
    return ModelSpec(uri=str(where))


def retrain(model_dir: Path) -> None:
    """The same model path with other weights, as after a fine-tune saved over it."""
    tensors = load_file(model_dir / "model.safetensors")
    name = next(n for n in tensors if n.endswith("mlp.up_proj.weight"))
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, model_dir / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("given", ["file", "probe dir", "adapt workdir"])
def test_a_profile_of_the_same_base_is_reused_with_this_jobs_selection(tmp_path: Path, given: str) -> None:
    report_file = probe_of(ModelSpec(uri="builtin:demo"), tmp_path / "work" / "probe")
    source = {"file": report_file, "probe dir": report_file.parent, "adapt workdir": tmp_path / "work"}[given]
    spec = small_spec(
        dataset={"uri": "builtin:arith", "evalSize": 16},
        probe={"reuse": str(source)},
        selection={"strategy": "top-k", "k": 2},
    )
    out = tmp_path / "job" / "probe"

    report = reuse_into(spec, out)

    assert report.selected == [1, 3]  # this job's top-2, not the report's own top-1
    written = json.loads((out / REPORT_JSON).read_text())
    assert written["selected"] == [1, 3] and written["task"] == "builtin:arith"  # measured on, unchanged
    assert written["reusedFrom"] == {
        "source": str(source),
        "path": str(report_file.resolve()),
        "reusedFor": "builtin:arith",
    }
    assert [layer["score"] for layer in written["layers"]] == list(SCORES.values())
    assert (out / "probe_report.png").is_file()
    assert report.describe() == f"gradient probe on builtin:arith, reused from {source}"


def test_a_profile_of_other_weights_is_refused_even_under_the_same_model_uri(tmp_path: Path) -> None:
    model = copy_of_demo(tmp_path / "model")
    report_file = probe_of(model, tmp_path / "probe")
    spec = small_spec(model={"uri": model.uri}, probe={"reuse": str(report_file)})
    assert reused_profile(spec, tmp_path / "job").selected == [3]

    retrain(tmp_path / "model")  # same path, new weights: the old ranking is not theirs

    with pytest.raises(InputError, match=r"spec\.probe\.reuse.*probe of other weights") as caught:
        reused_profile(spec, tmp_path / "job2")
    assert caught.value.fix == "reuse a probe of this base model, or probe it"
    # `--from-probe` makes the same check when the report records the weights ...
    with pytest.raises(InputError, match=r"--from-probe.*probe of other weights"):
        layers_from_report(report_file, model)
    # ... and falls back to the model's URI for a report written before reports recorded them.
    old = probe_of(model, tmp_path / "old", fingerprint=None)
    assert layers_from_report(old, model) == [3]
    with pytest.raises(InputError, match="is a probe of"):
        layers_from_report(old, ModelSpec(uri="builtin:demo"))


def test_another_base_model_and_a_report_that_cannot_say_its_weights_are_refused(tmp_path: Path) -> None:
    demo = probe_of(ModelSpec(uri="builtin:demo"), tmp_path / "demo")
    other = small_spec(model={"uri": "builtin:demo-agent"}, probe={"reuse": str(demo)})
    with pytest.raises(InputError, match=r"other weights \(builtin:demo, sha256:.*than builtin:demo-agent"):
        reused_profile(other, tmp_path / "job")

    unknown = probe_of(ModelSpec(uri="builtin:demo"), tmp_path / "unknown", fingerprint=None)
    with pytest.raises(InputError, match="does not record which weights it probed"):
        reused_profile(small_spec(probe={"reuse": str(unknown)}), tmp_path / "job")
    with pytest.raises(InputError, match=r"spec\.probe\.reuse: no file at"):
        reused_profile(small_spec(probe={"reuse": str(tmp_path / "nowhere")}), tmp_path / "job")


def test_a_job_run_again_keeps_the_profile_it_took(tmp_path: Path) -> None:
    first = probe_of(ModelSpec(uri="builtin:demo"), tmp_path / "first")
    spec = small_spec(probe={"reuse": str(first)})
    reuse_into(spec, tmp_path / "job")
    first.write_text(json.dumps({**json.loads(first.read_text()), "layers": []}))  # the source changes

    again = reused_profile(spec, tmp_path / "job")

    assert again.selected == [3] and len(again.layers) == 6


def test_reuse_takes_no_empty_value_and_no_run_less_mlflow_source() -> None:
    with pytest.raises(InputError, match=r"probe\.reuse: is empty"):
        small_spec(probe={"reuse": "  "})
    with pytest.raises(InputError, match=r"probe\.reuse: names no run"):
        small_spec(probe={"reuse": "mlflow:"})


def test_the_fingerprint_is_hashed_again_only_when_the_weights_change(tmp_path: Path) -> None:
    model = copy_of_demo(tmp_path / "model")
    before = model_fingerprint(model)
    assert model_fingerprint(model) == before
    retrain(tmp_path / "model")
    assert model_fingerprint(model) != before
