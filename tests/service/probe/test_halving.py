"""The halving probe: rungs of real TRL runs, continued from their checkpoints, equal to exact runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from cli.tables import layer_table
from service.errors import InputError
from service.probe.exact import run_exact
from service.probe.halving import merge_halving
from service.probe.report import REPORT_PNG, ProbeReport, read_report
from service.probe.run import run_probe
from service.probe.units import PARTIALS, Unit, partial_path, run_unit
from service.training.rungs import rung_schedule
from tests.conftest import RecordingProgress
from tests.service.probe.helpers import NUM_LAYERS, probe_spec

STEPS = 4  # rungs of 1, 2 and 4 steps: 6 layers, then 3, then 2 finalists


def halving_spec(**overrides: Any) -> Any:
    return probe_spec(probe={"mode": "halving", "steps": STEPS, **overrides.pop("probe", {})}, **overrides)


@pytest.fixture(scope="module")
def halving_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One halving probe in a process pool of two workers."""
    out = tmp_path_factory.mktemp("halving")
    run_probe(halving_spec(), out, parallel=2)
    return out


def _comparable(report: ProbeReport) -> dict[str, Any]:
    data = report.to_json()
    for key in ("elapsedSeconds", "unitSeconds"):
        data.pop(key, None)
    data["halving"].pop("costSeconds")
    return data


def test_the_plan_halves_layers_while_steps_double() -> None:
    assert [(r.steps, r.layers) for r in rung_schedule(6, STEPS, 2)] == [(1, 6), (2, 3), (4, 2)]
    # a short probe caps the rungs so the first still trains a step
    assert [(r.steps, r.layers) for r in rung_schedule(30, 4, 2)] == [(1, 30), (2, 15), (4, 8)]
    assert [(r.steps, r.layers) for r in rung_schedule(6, STEPS, 3)] == [(2, 6), (4, 3)]


def test_only_the_finalists_train_the_whole_length(halving_dir: Path) -> None:
    data = json.loads((halving_dir / "probe_report.json").read_text())
    assert data["mode"] == "halving" and [layer["index"] for layer in data["layers"]] == list(
        range(NUM_LAYERS)
    )
    steps = {layer["index"]: layer["details"]["steps"] for layer in data["layers"]}
    assert sorted(steps.values()) == [1, 1, 1, 2, 4, 4]
    finalists = sorted(i for i, s in steps.items() if s == STEPS)
    rungs = data["halving"]["rungs"]
    assert [r["steps"] for r in rungs] == [1, 2, 4] and rungs[0]["layers"] == list(range(NUM_LAYERS))
    assert rungs[2]["layers"] == finalists and set(finalists) < set(rungs[1]["layers"])
    # the layer-steps trained: 6 × 1 + 3 × 1 + 2 × 2 against the exact probe's 6 × 4
    assert (data["halving"]["layerSteps"], data["halving"]["exactLayerSteps"]) == (13, 24)
    # finalists rank first (and are selected); then the layer cut at rung 2, then those cut at rung 1
    by_rank = sorted(data["layers"], key=lambda layer: layer["rank"])
    assert [layer["details"]["steps"] for layer in by_rank] == [4, 4, 2, 1, 1, 1]
    assert data["selected"] == finalists
    for rung in (by_rank[:2], by_rank[3:]):  # within a rung, by score
        assert [layer["score"] for layer in rung] == sorted((layer["score"] for layer in rung), reverse=True)
    # a layer cut early has no C(k), and no checkpoints left behind
    assert all(layer["contribution"] is None for layer in by_rank[2:])
    cut = by_rank[-1]["index"]
    assert not (halving_dir / "runs" / f"layer-{cut}" / "checkpoints").exists()
    assert partial_path(halving_dir, Unit.parse(f"{cut}@1")).is_file()
    assert any("halving: layers" in note for note in data["notes"])
    assert (halving_dir / REPORT_PNG).stat().st_size > 10_000
    shown = Console(width=120, record=True)
    shown.print(layer_table(read_report(halving_dir)))
    assert "steps" in shown.export_text().splitlines()[0]


def test_a_finalist_scores_what_its_exact_unit_scores(halving_dir: Path, tmp_path: Path) -> None:
    """Rungs continue one schedule of `probe.steps`: a finalist's run is the exact probe's, step for step."""
    report = read_report(halving_dir)
    spec = halving_spec()
    for index in report.selected:
        record = run_unit(spec, Unit.of(index), tmp_path)  # fresh, uninterrupted
        assert record["score"] == report.layers[index].score
        assert (
            record["itemScores"]
            == json.loads(partial_path(halving_dir, Unit.parse(str(index))).read_text())["itemScores"]
        )


def test_exact_in_the_same_directory_reuses_the_halving_units(halving_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(halving_dir / PARTIALS, tmp_path / PARTIALS)
    shown = RecordingProgress()
    exact = run_exact(probe_spec(probe={"steps": STEPS}), tmp_path, parallel=1, progress=shown)
    assert shown.notes()[0].startswith("probe: reusing 4 finished units")  # base, full, two finalists
    halving = read_report(halving_dir)
    for index in halving.selected:
        assert exact.layers[index].score == halving.layers[index].score


def test_an_interrupted_halving_probe_continues_where_it_stopped(halving_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(halving_dir / PARTIALS, tmp_path / PARTIALS)
    finalist = read_report(halving_dir).selected[0]
    partial_path(tmp_path, Unit.parse(str(finalist))).unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in (tmp_path / PARTIALS).iterdir()}
    with pytest.raises(InputError, match=rf"units {finalist} have no result.*continues where it stopped"):
        merge_halving(tmp_path, halving_spec())
    shown = RecordingProgress()
    report = run_probe(halving_spec(), tmp_path, parallel=1, progress=shown)
    finished = [note for note in shown.notes() if note.startswith("probe [")]
    assert len(finished) == 1 and f"layer {finalist}: score" in finished[0]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / PARTIALS).iterdir() if p.name in kept} == kept
    assert _comparable(report) == _comparable(read_report(halving_dir))


def test_with_seeds_every_rung_runs_each_seed_and_cuts_on_their_mean(tmp_path: Path) -> None:
    spec = halving_spec(probe={"steps": 2, "layers": [1, 2, 3], "seeds": 2})
    report = run_probe(spec, tmp_path, parallel=1)
    rungs = report.extra["halving"]["rungs"]
    assert [(r["steps"], len(r["layers"])) for r in rungs] == [(1, 3), (2, 2)]
    assert report.extra["seeds"] == 2
    for layer in report.layers:
        unit = str(layer.index) if layer.index in rungs[1]["layers"] else f"{layer.index}@1"
        scores = [
            json.loads(partial_path(tmp_path, Unit.parse(u)).read_text())["score"]
            for u in (unit, f"{unit}#1")
        ]
        assert layer.score == sum(scores) / 2
    cut = next(i for i in rungs[0]["layers"] if i not in rungs[1]["layers"])
    first = {
        i: sum(
            json.loads(partial_path(tmp_path, Unit.parse(f"{i}@1{s}")).read_text())["score"]
            for s in ("", "#1")
        )
        for i in rungs[0]["layers"]
    }
    assert first[cut] <= min(first[i] for i in rungs[1]["layers"])
