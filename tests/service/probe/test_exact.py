"""The layer probe: exact units and their merge, fast proxies, selection, report and chart."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from service.errors import InputError
from service.probe.chart import write_report
from service.probe.exact import merge_partials, run_exact
from service.probe.report import REPORT_JSON, REPORT_PNG, ProbeReport, read_report
from service.probe.run import run_probe
from service.probe.units import Unit, partial_path, run_unit, units_for
from tests.conftest import RecordingProgress, small_spec
from tests.service.probe.helpers import NUM_LAYERS, probe_spec


@pytest.fixture(scope="module")
def exact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One exact probe run in a process pool of two workers."""
    out = tmp_path_factory.mktemp("exact")
    run_probe(probe_spec(), out, mode="exact", parallel=2)
    return out


def _comparable(report: ProbeReport) -> dict[str, Any]:
    data = report.to_json()
    for key in ("elapsedSeconds", "unitSeconds", "exactCostSeconds"):
        data.pop(key, None)
    return data


def test_exact_report_has_one_ranked_entry_per_layer(exact_dir: Path) -> None:
    report = read_report(exact_dir)
    data = json.loads((exact_dir / REPORT_JSON).read_text())
    assert data["schemaVersion"] == 1 and data["mode"] == "exact" and data["numLayers"] == NUM_LAYERS
    assert [layer["index"] for layer in data["layers"]] == list(range(NUM_LAYERS))
    assert sorted(layer["rank"] for layer in data["layers"]) == list(range(1, NUM_LAYERS + 1))
    assert all(math.isfinite(layer["score"]) for layer in data["layers"])
    assert data["layers"][3]["name"] == "model.layers.3"
    assert 0.0 <= data["baselineScore"] <= 1.0 and 0.0 <= data["fullScore"] <= 1.0
    # top-2 by rank; ranks follow S_k
    assert data["selected"] == sorted(report.ranking[:2])
    by_rank = sorted(report.layers, key=lambda layer: layer.rank)
    assert all(a.score >= b.score for a, b in itertools.pairwise(by_rank))
    assert (exact_dir / REPORT_PNG).stat().st_size > 10_000
    # each unit left its weight deltas but not its checkpoints or patch tensors
    assert (exact_dir / "runs" / "layer-3" / "deltas.json").exists()
    assert not (exact_dir / "runs" / "layer-3" / "checkpoints").exists()
    assert not (exact_dir / "runs" / "layer-3" / "layer_patch.safetensors").exists()


def test_two_steps_gain_is_reported_as_unresolvable_not_as_huge_contributions(exact_dir: Path) -> None:
    data = json.loads((exact_dir / REPORT_JSON).read_text())
    gain = data["fullScore"] - data["baselineScore"]
    if abs(gain) >= data["minDetectableGain"] and gain > 0:
        pytest.skip("this run's full gain is resolvable; covered by the demo test")
    assert all(layer["contribution"] is None for layer in data["layers"])
    assert data["notes"] and "contributions are not computed" in data["notes"][0]


def test_merged_partials_equal_the_single_process_report(exact_dir: Path, tmp_path: Path) -> None:
    """Units run one by one (as an Indexed Job's pods would), in another order, merge to the same report."""
    spec = probe_spec()
    units = units_for(list(range(NUM_LAYERS)))
    for unit in reversed(units):
        run_unit(spec, unit, tmp_path)
    merged = merge_partials(tmp_path, spec)
    single = read_report(exact_dir)
    assert _comparable(merged) == _comparable(single)


def test_missing_units_are_named_and_finished_ones_reused(exact_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(exact_dir / "partials", tmp_path / "partials")
    partial_path(tmp_path, Unit.parse("4")).unlink()
    with pytest.raises(InputError, match=r"units 4 have no result.*--layer-index"):
        merge_partials(tmp_path, probe_spec())
    shown = RecordingProgress()
    report = run_exact(probe_spec(), tmp_path, parallel=1, progress=shown)
    finished = [note for note in shown.notes() if note.startswith("probe [")]
    assert len(finished) == 1 and "layer 4: score" in finished[0]  # only the missing unit ran again
    assert shown.events[0] == ("start", "probe", 8) and shown.events[-1][:2] == ("finish", "probe")
    assert _comparable(report) == _comparable(read_report(exact_dir))


def test_changed_probe_settings_do_not_reuse_old_units(exact_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(exact_dir / "partials", tmp_path / "partials")
    changed = probe_spec(algorithm={"learningRate": 2e-3}, probe={"layers": [2, 3]})
    with pytest.raises(InputError, match="no probe partial results"):
        merge_partials(tmp_path, changed)
    # selection and training length do not change a unit's result, so they reuse it
    same = probe_spec(selection={"k": 1}, training={"maxSteps": 99})
    assert merge_partials(tmp_path, same).selected == [read_report(exact_dir).ranking[0]]
    # the changed probe runs its unit afresh instead of resuming the other settings' run
    shutil.copytree(exact_dir / "runs" / "layer-2", tmp_path / "runs" / "layer-2")
    record = run_unit(changed, Unit.parse("2"), tmp_path)
    assert record["trainedSteps"] == 2 and record["learningRate"] == 2e-3


def test_indexed_job_pods_map_their_completion_index_to_a_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.probe.units import parse_unit

    candidates = [0, 2, 4]
    assert [str(u) for u in units_for(candidates)] == ["full", "0", "2", "4", "base"]
    seen = []
    for index in range(5):
        monkeypatch.setenv("JOB_COMPLETION_INDEX", str(index))
        seen.append(parse_unit("job", candidates))
    assert seen == units_for(candidates)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "5")
    with pytest.raises(InputError, match=r"JOB_COMPLETION_INDEX in 0\.\.4"):
        parse_unit("job", candidates)
    with pytest.raises(InputError, match="candidate layer"):
        parse_unit("1", candidates)


def _write_partial(
    out: Path, unit: str, score: float, items: int = 300, item_scores: list[float] | None = None
) -> None:
    record = {
        "unit": unit,
        "probeFingerprint": "f" * 16,
        "model": "builtin:demo",
        "numLayers": 3,
        "layersPath": "model.layers",
        "candidates": [0, 1, 2],
        "steps": 30,
        "learningRate": 5e-5,
        "score": score,
        "numItems": items,
        "seconds": 1.0,
        **({"itemScores": item_scores} if item_scores is not None else {}),
    }
    path = partial_path(out, Unit.parse(unit))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_contribution_is_the_share_of_the_full_gain(tmp_path: Path) -> None:
    for unit, score in {"base": 0.40, "full": 0.60, "0": 0.45, "1": 0.70, "2": 0.40}.items():
        _write_partial(tmp_path, unit, score)
    report = merge_partials(tmp_path)
    contributions = {layer.index: layer.contribution for layer in report.layers}
    assert contributions == pytest.approx({0: 0.25, 1: 1.5, 2: 0.0})
    assert report.ranking == [1, 0, 2]
    assert report.extra["fullGain"] == pytest.approx(0.2)


def test_a_gain_within_eval_noise_gives_no_contributions(tmp_path: Path) -> None:
    for unit, score in {"base": 0.40, "full": 0.41, "0": 0.45, "1": 0.30, "2": 0.40}.items():
        _write_partial(tmp_path, unit, score)
    report = merge_partials(tmp_path)
    assert all(layer.contribution is None for layer in report.layers)
    assert report.ranking == [0, 2, 1]
    assert "below what 300 eval items can resolve" in report.notes[0]
    data = report.to_json()
    assert all(math.isfinite(layer["score"]) for layer in data["layers"])


def _items(right: int, total: int = 300) -> list[float]:
    """Per-item 0/1 scores: the first `right` items answered right."""
    return [1.0] * right + [0.0] * (total - right)


def test_intervals_are_paired_over_the_same_items(tmp_path: Path) -> None:
    """Layer 0 gives the base's answers item for item: its C(k) interval has zero width. Layer 1 is
    clearly better (it keeps every item the base got right and adds 60): its interval excludes the
    base. Layer 2 is one item better than layer 1, so their ranking is not resolved."""
    units = {"base": _items(120), "full": _items(180), "0": _items(120), "1": _items(180), "2": _items(181)}
    for unit, scores in units.items():
        _write_partial(tmp_path, unit, sum(scores) / len(scores), item_scores=scores)
    report = merge_partials(tmp_path)
    layers = {layer.index: layer for layer in report.layers}
    assert layers[0].contribution_interval == (0.0, 0.0)
    assert list(layers[0].score_interval or ()) == report.extra["baselineInterval"]
    low, high = layers[1].contribution_interval or (0.0, 0.0)
    assert 0.0 < low <= 1.0 <= high and layers[1].score_interval[0] > report.baseline_score  # type: ignore[index]
    assert report.extra["intervals"]["method"] == "paired bootstrap over eval items"
    assert report.extra["rankingResolved"] is False
    assert any(
        "layers 2 and 1 is not resolved" in note and "dataset.evalSize" in note for note in report.notes
    )
    data = report.to_json()
    assert data["layers"][1]["contributionInterval"] == [low, high]
    assert ProbeReport.from_json(data).layers[1].contribution_interval == (low, high)
    assert (
        tmp_path / REPORT_PNG
    ).exists() is False  # merge alone writes nothing; the chart is drawn on write
    write_report(report, tmp_path)
    assert (tmp_path / REPORT_PNG).stat().st_size > 10_000


def test_seeds_are_averaged_and_their_spread_widens_the_intervals(tmp_path: Path) -> None:
    """Merged without a spec, the seeds present are used: layer 0 agrees across its two seeds, layer 1
    scores 180 and 150 — its S_k is the mean and its interval covers both seeds, wider than either."""
    units = {
        "base": _items(120),
        "full": _items(180),
        "full#1": _items(180),
        "0": _items(160),
        "0#1": _items(160),
        "1": _items(180),
        "1#1": _items(150),
        "2": _items(120),
        "2#1": _items(120),
    }
    for unit, scores in units.items():
        _write_partial(tmp_path, unit, sum(scores) / len(scores), item_scores=scores)
    report = merge_partials(tmp_path)
    layers = {layer.index: layer for layer in report.layers}
    assert report.extra["seeds"] == 2 and layers[1].score == pytest.approx(165 / 300)
    assert layers[1].contribution == pytest.approx(0.75)
    low, high = layers[1].score_interval or (0.0, 0.0)
    one_seed = merge_partials_of(tmp_path / "one", {u: v for u, v in units.items() if "#" not in u})
    single = one_seed.layers[0].score_interval or (0.0, 0.0)  # layer 0 alone: no seed spread
    assert layers[0].score_interval == pytest.approx(single, abs=0.02)
    assert high - low > (single[1] - single[0]) and low < 150 / 300 + 0.02 and high > 180 / 300 - 0.02
    partial_path(tmp_path, Unit.parse("2#1")).unlink()
    with pytest.raises(InputError, match=r"units 2#1 have no result"):
        merge_partials(tmp_path)


def merge_partials_of(out: Path, units: dict[str, list[float]]) -> ProbeReport:
    for unit, scores in units.items():
        _write_partial(out, unit, sum(scores) / len(scores), item_scores=scores)
    return merge_partials(out)


def test_partials_without_item_scores_give_no_intervals(tmp_path: Path) -> None:
    for unit, score in {"base": 0.40, "full": 0.60, "0": 0.45, "1": 0.70, "2": 0.40}.items():
        _write_partial(tmp_path, unit, score)
    report = merge_partials(tmp_path)
    assert all(layer.score_interval is None for layer in report.layers)
    assert "intervals" not in report.extra and "scoreInterval" not in report.to_json()["layers"][0]


@pytest.mark.heavy
def test_demo_exact_probe_gives_finite_contributions(tmp_path: Path) -> None:
    """The shipped demo spec: full RL gains clearly, so every layer gets a finite C(k)."""
    from service.spec.demo import demo_spec

    report = run_probe(demo_spec(), tmp_path, mode="exact", parallel=1)
    assert report.full_score is not None and report.baseline_score is not None
    assert report.full_score - report.baseline_score > report.extra["minDetectableGain"]
    contributions = [layer.contribution for layer in report.layers]
    assert all(c is not None and math.isfinite(c) for c in contributions)
    assert report.selected == [report.ranking[0]]
    assert (tmp_path / REPORT_PNG).exists()
    for layer in report.layers:  # every layer has intervals around its own figures
        assert layer.score_interval and layer.score_interval[0] <= layer.score <= layer.score_interval[1]
        assert layer.contribution_interval is not None


def test_more_seeds_add_units_and_keep_the_first_seeds(exact_dir: Path, tmp_path: Path) -> None:
    """`probe.seeds: 2`: each training unit runs again with training.seed + 1; the seed-0 units of
    the one-seed probe in the same directory are reused, not run again."""
    shutil.copytree(exact_dir / "partials", tmp_path / "partials")
    spec = probe_spec(probe={"seeds": 2})
    assert [str(u) for u in units_for([2, 3], 2)] == ["full", "full#1", "2", "2#1", "3", "3#1", "base"]
    shown = RecordingProgress()
    report = run_exact(spec, tmp_path, parallel=1, progress=shown)
    ran = [note for note in shown.notes() if note.startswith("probe [")]
    assert len(ran) == NUM_LAYERS + 1 and all("(seed +1): score" in note for note in ran)
    assert report.extra["seeds"] == 2
    for layer in report.layers:
        first = json.loads(partial_path(tmp_path, Unit.parse(str(layer.index))).read_text())
        again = json.loads(partial_path(tmp_path, Unit.parse(f"{layer.index}#1")).read_text())
        assert layer.score == pytest.approx((first["score"] + again["score"]) / 2)
    # the other seed trained other weights (its data order and sampling differ)
    deltas = [
        json.loads(partial_path(tmp_path, Unit.parse(u)).read_text())["deltas"]["3"] for u in ("3", "3#1")
    ]
    assert deltas[0] != deltas[1]
    assert (tmp_path / "runs" / "layer-3-seed-1" / "deltas.json").exists()


def test_units_in_this_process_get_the_cores_a_worker_would(tmp_path: Path) -> None:
    """torch's default counts the machine's cores, not the ones this process may use: on a shared
    machine an in-process unit oversubscribed them (115 s instead of 3 s). Every unit gets its share."""
    import torch

    from service.probe.pool import ProbeBoard, UnitRunner, available_cores
    from service.progress import SILENT

    original = torch.get_num_threads()
    torch.set_num_threads(available_cores() + 1)  # what torch's default does where cores are shared
    try:
        board = ProbeBoard(SILENT, 0, 0)
        with UnitRunner(small_spec(), tmp_path, workers=1, keep_runs=False, board=board):
            assert torch.get_num_threads() == available_cores()
        assert torch.get_num_threads() == available_cores() + 1  # the caller's setting, back
    finally:
        torch.set_num_threads(original)
