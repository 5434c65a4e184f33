"""`layerpilot probe` (run, --layer-index, merge, validate) and `export` as a user drives them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from service.probe.report import REPORT_JSON, REPORT_PNG

runner = CliRunner()


def _spec_file(tmp_path: Path, **overrides: Any) -> Path:
    spec: dict[str, Any] = {
        "dataset": {"evalSize": 32},
        "algorithm": {"numGenerations": 4, "maxCompletionLength": 4, "learningRate": 1e-4},
        "probe": {"mode": "exact", "steps": 2, "layers": [1, 2, 3]},
        "selection": {"strategy": "top-k", "k": 1},
        "training": {"maxSteps": 2, "batchSize": 8, "saveSteps": 2},
    }
    for key, value in overrides.items():
        spec[key] = {**spec.get(key, {}), **value}
    doc = {"apiVersion": "layerpilot.dev/v1alpha1", "kind": "LayerAdaptation", "metadata": {"name": "t"}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**doc, "spec": spec}))
    return path


def test_layer_index_units_then_merge_make_the_report(tmp_path: Path) -> None:
    spec, out = _spec_file(tmp_path), tmp_path / "probe"
    for unit in ("2", "base", "full", "1", "3"):
        result = runner.invoke(app, ["probe", str(spec), "--layer-index", unit, "--out", str(out), "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["unit"] == unit
    merged = runner.invoke(app, ["probe", "merge", str(out), "--spec", str(spec), "--json"])
    assert merged.exit_code == 0, merged.output
    report = json.loads(merged.stdout)
    assert [layer["index"] for layer in report["layers"]] == [1, 2, 3]
    assert len(report["selected"]) == 1 and (out / REPORT_PNG).exists()

    # running the whole probe now reuses every unit and reproduces the merged report
    again = runner.invoke(app, ["probe", str(spec), "--out", str(out), "--parallel", "1", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["layers"] == report["layers"]

    plan = runner.invoke(app, ["export", str(out / REPORT_JSON), "--format", "regex"])
    assert plan.exit_code == 0, plan.output
    assert f"model\\.layers\\.({report['selected'][0]})\\..+" in plan.output


def test_gradient_mode_from_a_model_uri_alone(tmp_path: Path) -> None:
    out = tmp_path / "g"
    result = runner.invoke(
        app, ["probe", "--model", "builtin:demo", "--mode", "gradient", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mode"] == "gradient" and report["numLayers"] == 6
    assert (out / REPORT_JSON).exists()


def test_validate_reports_rank_correlations(tmp_path: Path) -> None:
    spec = _spec_file(tmp_path, probe={"layers": "all"})
    result = runner.invoke(app, ["probe", "validate", str(spec), "--out", str(tmp_path / "v"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data["proxies"]) == {"gradient", "gradient-l2", "spectrum", "knockout"}
    for name in ("gradient", "spectrum", "knockout"):
        entry = data["proxies"][name]
        assert entry["spearman"] is None or -1.0 <= entry["spearman"] <= 1.0
        assert 0.0 <= entry["topK"]["1"] <= 1.0 and entry["shareOfExactWallTime"] > 0
    assert json.loads((tmp_path / "v" / "probe_validation.json").read_text()) == data
    # chance, for six layers: a random ranking's Spearman exceeds 0.71 one time in twenty
    assert data["chance"]["topK"] == {"1": 0.1667, "2": 0.3333, "3": 0.5}
    assert 0.6 < data["chance"]["spearman95"] < 0.8 and abs(data["chance"]["spearman"]) < 0.05
    assert data["exact"]["ranking"] and "task" not in data


def _report(
    path: Path, model: str, contributions: list[float], task: str, fingerprint: str | None = None
) -> Path:
    from service.probe.report import LayerScore, ProbeReport

    layers = [
        LayerScore(index=i, name=f"model.layers.{i}", score=0.5 + c / 10, contribution=c, rank=0)
        for i, c in enumerate(contributions)
    ]
    report = ProbeReport(
        model, len(layers), "exact", "model.layers", layers, task=task, base_fingerprint=fingerprint
    )
    path.mkdir(parents=True)
    (path / REPORT_JSON).write_text(json.dumps(report.to_json()))
    return path


def test_compare_prints_rank_agreement_between_tasks_and_what_chance_scores(tmp_path: Path) -> None:
    arith = _report(tmp_path / "arith", "m", [0.1, 0.9, 0.5, 0.3, 0.2, 0.0], "builtin:arith")
    chain = _report(tmp_path / "chain", "m", [0.0, 0.8, 0.6, 0.4, 0.1, 0.2], "reasoning-gym:chain_sum")
    upside = _report(tmp_path / "upside", "m", [0.9, 0.0, 0.2, 0.3, 0.5, 0.6], "reasoning-gym:leg_counting")
    result = runner.invoke(app, ["probe", "compare", str(arith), str(chain), str(upside)])
    assert result.exit_code == 0, result.output
    printed = " ".join(result.stdout.split())  # the console wraps long lines
    assert f"1: {arith} (exact, measured on builtin:arith)" in printed
    assert "chance (random rankings of these layers): Spearman 95th percentile 0.71" in printed
    data = json.loads(
        runner.invoke(app, ["probe", "compare", str(arith), str(chain), str(upside), "--json"]).stdout
    )
    pairs = {(p["first"], p["second"]): p for p in data["pairs"]}
    close = pairs[(str(arith), str(chain))]
    assert close["spearman"] == pytest.approx(0.8286, abs=1e-3) and close["topK"] == {"1": 1.0, "3": 1.0}
    assert pairs[(str(arith), str(upside))]["spearman"] < 0 and data["reports"][str(chain)]["task"].endswith(
        "chain_sum"
    )


def test_compare_refuses_reports_of_different_models(tmp_path: Path) -> None:
    first = _report(tmp_path / "a", "builtin:demo", [0.1, 0.2, 0.3], "builtin:arith")
    other = _report(tmp_path / "b", "builtin:demo-agent", [0.1, 0.2, 0.3], "builtin:gridworld")
    result = runner.invoke(app, ["probe", "compare", str(first), str(other)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "REPORT: the reports probe different models (builtin:demo, builtin:demo-agent)" in result.output
    alone = runner.invoke(app, ["probe", "compare", str(first)])
    assert alone.exit_code == 2 and "compare needs two reports or more" in alone.output
    # Reports that record their weights are one base when the weights are, whatever the URI says.
    here = _report(tmp_path / "c", "./smollm2", [0.1, 0.2, 0.3], "builtin:arith", "sha256:aa")
    there = _report(tmp_path / "d", "hf://x/smollm2", [0.3, 0.2, 0.1], "builtin:code", "sha256:aa")
    assert runner.invoke(app, ["probe", "compare", str(here), str(there)]).exit_code == 0
    retrained = _report(tmp_path / "e", "./smollm2", [0.1, 0.2, 0.3], "builtin:code", "sha256:bb")
    result = runner.invoke(app, ["probe", "compare", str(here), str(retrained)])
    assert result.exit_code == 2 and "REPORT: the reports probe 2 different sets of weights" in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["probe", "--model", "builtin:demo", "--layer-index", "9"], "--layer-index: '9' is not a probe"),
        (["probe", "--model", "builtin:demo", "--mode", "gradient", "--layer-index", "1"], "--layer-index"),
        (["probe", "merge", "/nonexistent"], "PROBE_DIR: no probe partial results"),
        (["export", "/nonexistent/probe_report.json", "--format", "peft"], "REPORT: no file"),
        (["probe", "--model", "builtin:demo", "--mode", "psychic"], "--mode"),
    ],
)
def test_bad_probe_input_exits_2_with_one_line(args: list[str], needle: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_llamafactory_export_of_a_middle_layer_says_what_to_use(tmp_path: Path) -> None:
    report = {
        "schemaVersion": 1,
        "model": "builtin:demo",
        "numLayers": 6,
        "mode": "exact",
        "layersPath": "model.layers",
        "layers": [{"index": i, "name": f"model.layers.{i}", "score": 0.1, "rank": i + 1} for i in range(6)],
        "selected": [2],
    }
    path = tmp_path / REPORT_JSON
    path.write_text(json.dumps(report))
    result = runner.invoke(app, ["export", str(path), "--format", "llamafactory"])
    assert result.exit_code == 2 and "use --format peft, axolotl or regex" in result.output
    ok = runner.invoke(app, ["export", str(tmp_path), "--format", "peft", "--json"])
    assert ok.exit_code == 0
    assert json.loads(ok.stdout) == {"layers_to_transform": [2], "layers_pattern": "layers"}
