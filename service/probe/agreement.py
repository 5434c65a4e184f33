"""Can a fast proxy be trusted on this model family? Run exact and the proxies, compare the rankings.

Reported per proxy: Spearman and Kendall (tau-b) correlation of its layer scores with the exact
contributions, top-k overlap, and its wall time as a share of the exact probe's; and beside them,
what a random ranking of the same layers scores (`chance`), so that agreement is read against it.
`compare_reports` puts the same measures on probe reports of one model measured on different tasks.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from service.errors import InputError
from service.files import write_json
from service.probe.report import ProbeReport
from service.probe.run import run_probe
from service.progress import SILENT, Progress
from service.spec.models import LayerAdaptationSpec

VALIDATION_JSON = "probe_validation.json"


def rank_agreement(exact: dict[int, float], proxy: dict[int, float], ks: list[int]) -> dict[str, Any]:
    """Spearman, Kendall tau-b and top-k overlap between two score maps over the same layers.

    >>> out = rank_agreement({0: 0.1, 1: 0.5, 2: 0.9}, {0: 1.0, 1: 2.0, 2: 3.0}, [1])
    >>> out["spearman"], out["kendall"], out["topK"]
    (1.0, 1.0, {'1': 1.0})
    """
    from scipy.stats import kendalltau, spearmanr  # deferred: scipy.stats takes a second to import

    layers = sorted(exact)
    a = [exact[i] for i in layers]
    b = [proxy[i] for i in layers]
    spearman = float(spearmanr(a, b).statistic) if len(layers) > 2 else math.nan
    kendall = float(kendalltau(a, b).statistic) if len(layers) > 2 else math.nan
    by_exact = sorted(layers, key=lambda i: -exact[i])
    by_proxy = sorted(layers, key=lambda i: -proxy[i])
    top = {str(k): len(set(by_exact[:k]) & set(by_proxy[:k])) / k for k in ks if k <= len(layers)}
    return {
        "spearman": _clean(spearman),
        "kendall": _clean(kendall),
        "topK": top,
    }


CHANCE_DRAWS = 2000


def chance_agreement(layers: list[int], ks: list[int], draws: int = CHANCE_DRAWS) -> dict[str, Any]:
    """What random rankings of `layers` score against any fixed one: mean and 95th percentile of
    Spearman and Kendall, and mean top-k overlap (k / L), over `draws` seeded permutations.

    >>> chance = chance_agreement(list(range(30)), [1, 3])
    >>> chance["topK"], abs(chance["spearman"]) < 0.05, 0.2 < chance["spearman95"] < 0.4
    ({'1': 0.0333, '3': 0.1}, True, True)
    """
    import numpy as np

    n = len(layers)
    rng = np.random.default_rng(0)
    ranks = np.argsort(rng.random((draws, n)), axis=1).astype(float)  # random permutations of 0…n−1
    # Spearman and Kendall of each permutation against 0…n−1 (no ties): closed forms, all draws at once
    spearman = 1 - 6 * ((ranks - np.arange(n)) ** 2).sum(axis=1) / (n * (n * n - 1))
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    signs = np.sign(ranks[:, None, :] - ranks[:, :, None])[:, upper]
    kendall = signs.sum(axis=1) / upper.sum()
    return {
        "spearman": _clean(float(np.mean(spearman))),
        "spearman95": _clean(float(np.percentile(spearman, 95))),
        "kendall": _clean(float(np.mean(kendall))),
        "kendall95": _clean(float(np.percentile(kendall, 95))),
        "topK": {str(k): round(k / len(layers), 4) for k in ks if k <= len(layers)},
    }


def compare_reports(reports: dict[str, ProbeReport], ks: tuple[int, ...] = (1, 3)) -> dict[str, Any]:
    """Rank agreement between every pair of probe reports of one model (C(k) where computed, else
    S_k or the proxy's score), over the layers both probed, with what chance would score."""
    models = {report.model for report in reports.values()}
    # One base: the same weights where every report records them, else the same model.uri.
    fingerprints = {report.base_fingerprint for report in reports.values()}
    if None not in fingerprints and len(fingerprints) > 1:
        raise InputError(
            "REPORT",
            f"the reports probe {len(fingerprints)} different sets of weights ({', '.join(sorted(models))})",
            "compare reports of one base model: a profile is reused on the weights it was measured on",
        )
    if None in fingerprints and len(models) > 1:
        raise InputError(
            "REPORT",
            f"the reports probe different models ({', '.join(sorted(models))})",
            "compare reports of one base model: a profile is reused on the model it was measured on",
        )
    names = list(reports)
    pairs = []
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = _exact_scores(reports[first]), _exact_scores(reports[second])
            common = sorted(set(a) & set(b))
            if len(common) < 2:
                raise InputError(
                    "REPORT", f"{first} and {second} share fewer than 2 layers", "probe the same layers"
                )
            entry = rank_agreement({k: a[k] for k in common}, {k: b[k] for k in common}, list(ks))
            entry.update(first=first, second=second, layers=len(common))
            entry["chance"] = chance_agreement(common, list(ks))
            pairs.append(entry)
    return {
        "model": ", ".join(sorted(models)),
        "reports": {
            name: {"mode": r.mode, "ranking": r.ranking, "task": r.task} for name, r in reports.items()
        },
        "pairs": pairs,
    }


def _clean(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def validate_proxies(
    spec: LayerAdaptationSpec,
    out_dir: Path,
    *,
    modes: tuple[str, ...] = ("gradient", "spectrum", "knockout"),
    parallel: int | None = 1,
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Exact and each proxy on the same spec; writes `probe_validation.json` and every report."""
    import trl.trainer.grpo_trainer  # noqa: F401 - pay the import here, not inside the first mode's time

    started = time.perf_counter()
    exact = run_probe(spec, out_dir / "exact", mode="exact", parallel=parallel, progress=progress)
    exact_wall = time.perf_counter() - started
    truth = _exact_scores(exact)
    ks = sorted({1, 2, 3, spec.selection.k})
    result: dict[str, Any] = {
        "model": spec.model.uri,
        "numLayers": exact.num_layers,
        "exact": {
            "wallSeconds": round(exact_wall, 2),
            "computeSeconds": exact.extra.get("exactCostSeconds"),
            "ranking": exact.ranking,
            "fullGain": exact.extra.get("fullGain"),
            "contributionsComputed": all(layer.contribution is not None for layer in exact.layers),
        },
        "proxies": {},
        "chance": chance_agreement(sorted(truth), ks),
    }
    for mode in modes:
        started = time.perf_counter()
        report = run_probe(spec, out_dir / mode, mode=mode, progress=progress)
        wall = time.perf_counter() - started
        scores = {layer.index: layer.score for layer in report.layers}
        entry = rank_agreement(truth, scores, ks)
        entry.update(
            wallSeconds=round(wall, 3),
            shareOfExactWallTime=round(wall / exact_wall, 4) if exact_wall > 0 else None,
            ranking=report.ranking,
        )
        result["proxies"][mode] = entry
        if mode == "gradient":
            # The SGD-style first-order gain ‖g‖₂², reported beside the Adam-style ‖g‖₁ it lost to.
            sgd = {layer.index: layer.details.get("l2sqPerParam", math.nan) for layer in report.layers}
            result["proxies"]["gradient-l2"] = rank_agreement(truth, sgd, ks)
    write_json(out_dir / VALIDATION_JSON, result)
    return result


def _exact_scores(report: ProbeReport) -> dict[int, float]:
    """C(k) where computed, else S_k: both order layers the same way when the full gain is positive."""
    return {
        layer.index: layer.contribution if layer.contribution is not None else layer.score
        for layer in report.layers
    }
