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
from service.fields import OMIT, Fields
from service.spec.models import LayerAdaptationSpec, ProbeMode

REPORT_JSON = "probe_report.json"
REPORT_PNG = "probe_report.png"
SCHEMA_VERSION = 1
RL_MODES = frozenset({ProbeMode.exact.value, ProbeMode.halving.value})
"""Modes whose scores are S_k, eval scores after RL runs, beside S_base and S_full."""

MODE_FIELDS: dict[str, str] = {
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
"""The fields a probe mode adds to `probe_report.json` (its `extra`), after the report's own."""


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
        return LAYER_FIELDS.json(self)


def _intervals_of(layer: LayerScore) -> bool:
    return layer.score_interval is not None or layer.contribution_interval is not None


LAYER_FIELDS: Fields[LayerScore] = Fields(
    {
        "index": ("decoder layer index, from 0", lambda x: x.index),
        "name": ("the layer's module name (`model.layers.3`)", lambda x: x.name),
        "score": (
            "S_k in exact mode (eval score after RL of this layer alone); the proxy score otherwise",
            lambda x: _finite(x.score),
        ),
        "contribution": (
            "C(k) = (S_k − S_base) / (S_full − S_base) in exact mode and for halving's finalists; "
            "null otherwise",
            lambda x: _finite(x.contribution),
        ),
        "rank": ("1 = the layer most worth training", lambda x: x.rank),
        "scoreInterval": (
            "exact, halving: 95 % interval of S_k, [low, high] (null without per-item scores)",
            lambda x: _pair(x.score_interval) if _intervals_of(x) else OMIT,
        ),
        "contributionInterval": (
            "exact, halving: 95 % interval of C(k), [low, high] (null without C(k))",
            lambda x: _pair(x.contribution_interval) if _intervals_of(x) else OMIT,
        ),
        "details": (
            "mode-specific numbers (exact: `deltaRelative`; halving: also `steps`, how far the layer "
            "trained; gradient: `l1PerParam`, `l2sqPerParam`)",
            lambda x: {k: _finite(v) for k, v in x.details.items()} if x.details else OMIT,
        ),
    }
)
"""Every field of an entry of `layers`."""


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
    task: str | None = None
    base_fingerprint: str | None = None
    reused_from: dict[str, Any] | None = None

    @property
    def ranking(self) -> list[int]:
        """Layer indices, best first."""
        return [layer.index for layer in sorted(self.layers, key=lambda item: item.rank)]

    def to_json(self) -> dict[str, Any]:
        return {**REPORT_FIELDS.json(self), **self.extra}

    def describe(self) -> str:
        """What the ranking rests on, in a few words (the output, the result and the review show it).

        >>> report = ProbeReport("m", 2, "gradient", "l", [], task="builtin:arith")
        >>> report.describe()
        'gradient probe on builtin:arith'
        >>> report.reused_from = {"source": "mlflow", "runId": "ab12"}
        >>> report.describe()
        'gradient probe on builtin:arith, reused from MLflow run ab12'
        """
        text = f"{self.mode} probe on {self.task or 'an unrecorded task'}"
        if self.reused_from is None:
            return text
        run_id, source = self.reused_from.get("runId"), self.reused_from.get("source")
        return f"{text}, reused from " + (f"MLflow run {run_id}" if run_id else str(source))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProbeReport:
        # What to_json writes itself; the rest is `extra`. Reports written before the work directory
        # was the record named their MLflow run: MLflow's side is in published.json now.
        known = set(REPORT_FIELDS.help) | {"mlflowRunId", "unitRunsLogged"}
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
            task=data.get("task"),
            base_fingerprint=data.get("baseFingerprint"),
            reused_from=data.get("reusedFrom"),
        )


REPORT_FIELDS: Fields[ProbeReport] = Fields(
    {
        "schemaVersion": ("format version of this file (1)", lambda r: SCHEMA_VERSION),
        "model": ("the probed model's `model.uri`", lambda r: r.model),
        "numLayers": ("decoder layers in the model", lambda r: r.num_layers),
        "mode": ("`exact`, `halving`, `gradient`, `spectrum` or `knockout`", lambda r: r.mode),
        "task": (
            "what the probe measured on: the environment, or the dataset (and its task settings)",
            lambda r: r.task,
        ),
        "baseFingerprint": (
            "the probed weights' fingerprint (`sha256:…`, as a layer patch records its base): "
            "`probe.reuse` takes a report only for a base that hashes the same",
            lambda r: r.base_fingerprint,
        ),
        "reusedFrom": (
            "only in a report a job reused (`probe.reuse`): `source` (as the spec gave it), `path` or "
            "`runId` (where the report was read), `reusedFor` (the reusing job's task); the scores are "
            "the original probe's",
            lambda r: r.reused_from if r.reused_from is not None else OMIT,
        ),
        "baselineScore": (
            "S_base, eval score of the base model (exact and halving; else null)",
            lambda r: _finite(r.baseline_score),
        ),
        "fullScore": (
            "S_full, eval score after RL of every layer (exact and halving; else null)",
            lambda r: _finite(r.full_score),
        ),
        "layers": (
            "one entry per probed layer (below)",
            lambda r: [layer.to_json() for layer in sorted(r.layers, key=lambda item: item.index)],
        ),
        "selected": ("the layers the spec's selection rule picks, sorted", lambda r: list(r.selected)),
        "strategy": ("the selection rule that picked them", lambda r: r.strategy),
        "elapsedSeconds": ("wall time of the probe", lambda r: round(r.elapsed_seconds, 2)),
        "layersPath": ("where the decoder layers are in the model (`model.layers`)", lambda r: r.layers_path),
        "notes": (
            "what a reader must know, e.g. a full-model gain too small to compute C(k)",
            lambda r: list(r.notes),
        ),
    }
)
"""The fields of `probe_report.json` every mode writes (`MODE_FIELDS` follow; the reference lists both)."""


def measured_on(spec: LayerAdaptationSpec) -> str:
    """The task a probe measures contributions on, in a few words (its report's `task`).

    >>> measured_on(LayerAdaptationSpec())
    'builtin:arith'
    >>> chain = {"uri": "reasoning-gym:chain_sum", "params": {"max_terms": 3}}
    >>> measured_on(LayerAdaptationSpec(dataset=chain))
    'reasoning-gym:chain_sum {"max_terms": 3}'
    """
    if spec.environment is not None:
        params = spec.environment.params
        uri = spec.environment.uri
    else:
        params = spec.prompts.params or {t.name: t.params for t in spec.prompts.tasks}
        uri = spec.prompts.uri
    return f"{uri} {json.dumps(params, sort_keys=True)}" if params else uri


def check_same_base(report: ProbeReport, model_uri: str, fingerprint: str, *, field: str, where: str) -> None:
    """Refuse a report of other weights than the base `model_uri` hashing to `fingerprint` (or a report
    that cannot say which weights it probed)."""
    if report.base_fingerprint is None:
        raise InputError(
            field,
            f"{where} does not record which weights it probed (a report written before layerpilot "
            "recorded the base's fingerprint)",
            "probe the base model again to write a report that can be reused",
        )
    if report.base_fingerprint != fingerprint:
        raise InputError(
            field,
            f"{where} is a probe of other weights ({report.model}, {report.base_fingerprint[:19]}…) than "
            f"{model_uri} ({fingerprint[:19]}…)",
            "reuse a probe of this base model, or probe it",
        )


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
