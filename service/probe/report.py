"""`probe_report.json` and its chart: the per-layer answer to "which layers should we RL-train?".

The JSON shape is part of the user-facing contract (docs/reference.md); fields may be added, never
renamed.
`contribution` is C(k) = (S_k - S_base) / (S_full - S_base) in exact mode (and for the layers that
trained the whole `probe.steps` in halving mode), null otherwise; `rank` 1 is best.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.errors import InputError
from service.files import atomic_write, write_json
from service.spec.models import ProbeMode

REPORT_JSON = "probe_report.json"
REPORT_PNG = "probe_report.png"
SCHEMA_VERSION = 1
RL_MODES = frozenset({ProbeMode.exact.value, ProbeMode.halving.value})
"""Modes whose scores are S_k, eval scores after RL runs, beside S_base and S_full."""

REPORT_FIELDS: dict[str, str] = {
    "schemaVersion": "format version of this file (1)",
    "model": "the probed model's `model.uri`",
    "numLayers": "decoder layers in the model",
    "mode": "`exact`, `halving`, `gradient` or `spectrum`",
    "baselineScore": "S_base, eval score of the base model (exact and halving; else null)",
    "fullScore": "S_full, eval score after RL of every layer (exact and halving; else null)",
    "layers": "one entry per probed layer (below)",
    "selected": "the layers the spec's selection rule picks, sorted",
    "strategy": "the selection rule that picked them",
    "elapsedSeconds": "wall time of the probe",
    "layersPath": "where the decoder layers are in the model (`model.layers`)",
    "notes": "what a reader must know, e.g. a full-model gain too small to compute C(k)",
    "probeSteps": "exact, halving: RL steps of every probe run",
    "seeds": "exact, halving: RL runs per unit (`probe.seeds`); S_full, S_k and C(k) are their means",
    "learningRate": "exact, halving: learning rate of every probe run",
    "evalItems": "exact, halving: evaluation items behind every score",
    "fullGain": "exact, halving: S_full − S_base",
    "minDetectableGain": "exact, halving: two standard errors of a score on `evalItems` items",
    "unitSeconds": "exact, halving: wall time of each unit (`base`, `full`, layer index, `K@S` rung)",
    "exactCostSeconds": "exact: the units' wall times summed (the probe's compute)",
    "candidates": "proxy modes: the layers scored",
    "exactCostEstimateSeconds": "gradient: estimated RL time of an exact probe of the same layers",
    "rolloutStepSeconds": "gradient: measured time of one rollout-and-gradient batch",
    "intervals": "exact, halving: how the 95 % intervals were computed (paired bootstrap over eval items)",
    "baselineInterval": "exact, halving: 95 % interval of S_base",
    "fullInterval": "exact, halving: 95 % interval of S_full",
    "rankingResolved": "exact, halving: whether the top two layers' intervals are apart (a note if not)",
    "halving": "halving: `rungs` (steps, layers trained), `layerSteps` trained against "
    "`exactLayerSteps` of an exact probe, `costSeconds` (every unit's wall time summed)",
}
"""Every field `probe_report.json` may hold (the reference is generated from this)."""

LAYER_FIELDS: dict[str, str] = {
    "index": "decoder layer index, from 0",
    "name": "the layer's module name (`model.layers.3`)",
    "score": "S_k in exact mode (eval score after RL of this layer alone); the proxy score otherwise",
    "contribution": "C(k) = (S_k − S_base) / (S_full − S_base) in exact mode and for halving's "
    "finalists; null otherwise",
    "rank": "1 = the layer most worth training",
    "details": "mode-specific numbers (exact: `deltaRelative`; halving: also `steps`, how far the layer "
    "trained; gradient: `l1PerParam`, `l2sqPerParam`)",
    "scoreInterval": "exact, halving: 95 % interval of S_k, [low, high] (null without per-item scores)",
    "contributionInterval": "exact, halving: 95 % interval of C(k), [low, high] (null without C(k))",
}
"""Every field of an entry of `layers`."""


_CORE_FIELDS = (
    "schemaVersion",
    "model",
    "numLayers",
    "mode",
    "baselineScore",
    "fullScore",
    "layers",
    "selected",
    "strategy",
    "elapsedSeconds",
    "layersPath",
    "notes",
)  # what `ProbeReport.to_json` writes itself; the mode's own fields come from `extra`


@dataclass
class LayerScore:
    index: int
    name: str
    score: float
    contribution: float | None = None
    rank: int = 0
    details: dict[str, float] = field(default_factory=dict)
    score_interval: tuple[float, float] | None = None
    contribution_interval: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "index": self.index,
            "name": self.name,
            "score": _finite(self.score),
            "contribution": _finite(self.contribution),
            "rank": self.rank,
        }
        if self.score_interval is not None or self.contribution_interval is not None:
            data["scoreInterval"] = _pair(self.score_interval)
            data["contributionInterval"] = _pair(self.contribution_interval)
        if self.details:
            data["details"] = {k: _finite(v) for k, v in self.details.items()}
        return data


@dataclass
class ProbeReport:
    model: str
    num_layers: int
    mode: str
    layers_path: str
    layers: list[LayerScore]
    selected: list[int] = field(default_factory=list)
    strategy: str = "top-k"
    baseline_score: float | None = None
    full_score: float | None = None
    elapsed_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ranking(self) -> list[int]:
        """Layer indices, best first."""
        return [layer.index for layer in sorted(self.layers, key=lambda item: item.rank)]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schemaVersion": SCHEMA_VERSION,
            "model": self.model,
            "numLayers": self.num_layers,
            "mode": self.mode,
            "baselineScore": _finite(self.baseline_score),
            "fullScore": _finite(self.full_score),
            "layers": [layer.to_json() for layer in sorted(self.layers, key=lambda item: item.index)],
            "selected": list(self.selected),
            "strategy": self.strategy,
            "elapsedSeconds": round(self.elapsed_seconds, 2),
            "layersPath": self.layers_path,
            "notes": list(self.notes),
        }
        data.update(self.extra)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProbeReport:
        # What to_json writes itself; the rest is `extra`. Reports written before the work directory
        # was the record named their MLflow run: MLflow's side is in published.json now.
        known = set(_CORE_FIELDS) | {"mlflowRunId", "unitRunsLogged"}
        layers = [
            LayerScore(
                index=int(item["index"]),
                name=str(item["name"]),
                score=_number(item.get("score")),
                contribution=item.get("contribution"),
                rank=int(item.get("rank", 0)),
                details=dict(item.get("details") or {}),
                score_interval=_interval(item.get("scoreInterval")),
                contribution_interval=_interval(item.get("contributionInterval")),
            )
            for item in data["layers"]
        ]
        return cls(
            model=str(data["model"]),
            num_layers=int(data["numLayers"]),
            mode=str(data["mode"]),
            layers_path=str(data.get("layersPath") or "model.layers"),
            layers=layers,
            selected=[int(i) for i in data.get("selected") or []],
            strategy=str(data.get("strategy") or "top-k"),
            baseline_score=data.get("baselineScore"),
            full_score=data.get("fullScore"),
            elapsed_seconds=float(data.get("elapsedSeconds") or 0.0),
            notes=list(data.get("notes") or []),
            extra={k: v for k, v in data.items() if k not in known},
        )

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        """Write the JSON and the chart; returns both paths."""
        json_path = out_dir / REPORT_JSON
        write_json(json_path, self.to_json())
        png_path = out_dir / REPORT_PNG
        atomic_write(png_path, lambda tmp: draw_chart(self, tmp))
        return json_path, png_path


def read_report(path: Path, field_name: str = "REPORT") -> ProbeReport:
    """Load a probe_report.json (or the directory holding one) with a one-line error if it is not one."""
    if path.is_dir():
        path = path / REPORT_JSON
    try:
        data = json.loads(path.read_text())
        return ProbeReport.from_json(data)
    except FileNotFoundError:
        raise InputError(
            field_name, f"no file at {path}", f"pass a {REPORT_JSON} from `layerpilot probe`"
        ) from None
    except json.JSONDecodeError as error:
        raise InputError(field_name, f"{path} is not JSON ({error.msg})", f"pass a {REPORT_JSON}") from None
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(
            field_name, f"{path} is not a probe report (missing {error})", "re-run `layerpilot probe`"
        ) from None


def _pair(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [float(interval[0]), float(interval[1])]


def _interval(value: Any) -> tuple[float, float] | None:
    return None if not value else (float(value[0]), float(value[1]))


def rank_layers(scores: dict[int, float], num_layers: int) -> dict[int, int]:
    """Rank 1 = highest score. Ties go to the layer nearer the middle of the stack, then the lower index.

    The middle-first tie-break follows the research finding that contribution concentrates in middle
    layers; it only matters when scores are exactly equal (common with a small discrete eval set).

    >>> rank_layers({0: 0.5, 1: 0.7, 2: 0.7, 3: 0.1}, 4)
    {1: 1, 2: 2, 0: 3, 3: 4}
    """
    middle = (num_layers - 1) / 2
    order = sorted(scores, key=lambda i: (-_sortable(scores[i]), abs(i - middle), i))
    return {index: rank for rank, index in enumerate(order, start=1)}


def _sortable(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 6)


def _number(value: Any) -> float:
    return float(value) if value is not None else math.nan


def draw_chart(report: ProbeReport, path: Path) -> None:
    """Bar chart of per-layer contribution (exact), S_k (halving, or exact without C(k)) or score
    (proxies); selected layers highlighted, layers that halving cut early hatched."""
    # Deferred: matplotlib takes a second to import and only the chart needs it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    layers = sorted(report.layers, key=lambda item: item.index)
    use_contribution = report.mode in RL_MODES and all(item.contribution is not None for item in layers)
    values = [(item.contribution if use_contribution else item.score) for item in layers]
    heights = [float(v) if v is not None and math.isfinite(float(v)) else 0.0 for v in values]
    selected = set(report.selected)
    colors = ["#d95f02" if item.index in selected else "#7570b3" for item in layers]

    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(layers) + 3), 4.2), dpi=120)
    bars = ax.bar([item.index for item in layers], heights, color=colors, edgecolor="black", linewidth=0.5)
    spans = [item.contribution_interval if use_contribution else item.score_interval for item in layers]
    if all(span is not None for span in spans):
        below = [max(h - span[0], 0.0) for h, span in zip(heights, spans, strict=True) if span]
        above = [max(span[1] - h, 0.0) for h, span in zip(heights, spans, strict=True) if span]
        x = [item.index for item in layers]
        ax.errorbar(
            x, heights, yerr=[below, above], fmt="none", ecolor="black", capsize=3, label="95 % interval"
        )
    if use_contribution:
        ax.axhline(1.0, color="#1b9e77", linestyle="--", linewidth=1.5, label="full-model RL (C = 1)")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_ylabel("contribution C(k) = (S_k − S_base) / (S_full − S_base)")
    elif report.mode in RL_MODES and report.baseline_score is not None and report.full_score is not None:
        ax.axhline(report.full_score, color="#1b9e77", linestyle="--", linewidth=1.5, label="S_full")
        ax.axhline(report.baseline_score, color="black", linestyle=":", linewidth=1.2, label="S_base")
        ax.set_ylabel("S_k, eval score after RL of layer k alone")
    else:
        ax.set_ylabel(f"{report.mode} score (higher = train first)")
    steps = report.extra.get("probeSteps")
    early = [bar for bar, item in zip(bars, layers, strict=True) if item.details.get("steps", steps) != steps]
    for bar in early:  # halving: a layer cut at an earlier rung trained fewer steps
        bar.set_hatch("//")
        bar.set_alpha(0.55)
    ax.set_xlabel(f"decoder layer index ({report.layers_path}.k)")
    ax.set_xticks([item.index for item in layers])
    if len(layers) > 24:
        ax.tick_params(axis="x", labelsize=7, labelrotation=90)
    title = (
        f"{report.model}: per-layer {'contribution' if use_contribution else 'score'} ({report.mode} probe)"
    )
    if report.mode in RL_MODES and report.baseline_score is not None and report.full_score is not None:
        title += f"\nS_base = {report.baseline_score:.3f}, S_full = {report.full_score:.3f}"
    ax.set_title(title, fontsize=10)
    for bar, item in zip(bars, layers, strict=True):
        if item.index in selected:
            ax.annotate(
                "selected",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom" if bar.get_height() >= 0 else "top",
                fontsize=7,
            )
    handles: list[Any] = [
        Patch(color="#d95f02", label="selected"),
        Patch(color="#7570b3", label="not selected"),
    ]
    if early:
        handles.append(
            Patch(facecolor="white", edgecolor="black", hatch="//", label="cut early (fewer steps)")
        )
    handles.extend(ax.get_legend_handles_labels()[0])
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
