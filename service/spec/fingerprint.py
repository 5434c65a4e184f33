"""Short stable hashes of a spec, for tags, resume checks and reusing probe results.

Each scope hashes exactly what a result depends on, so that a change elsewhere in the spec does
not throw finished work away:

- `spec`: everything (tags the MLflow runs and registered versions),
- `training`: what a resumed training must share with the run it continues; its length and
  checkpointing (`maxSteps`, `saveSteps`, `saveTotalLimit`) may change between attempts, and so may
  probe, selection, tracking and resources, which do not touch the weights,
- `probe`: what a probe unit's score depends on (not the probe mode, rungs, seeds or reuse, selection or
  tracking: more seeds add units, the first seed's stay valid).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from service.spec.models import LayerAdaptationSpec

Scope = Literal["spec", "training", "probe"]

_WEIGHT_SECTIONS = ("model", "dataset", "rewards", "algorithm")
_RESUMABLE_TRAINING = ("maxSteps", "saveSteps", "saveTotalLimit")
_PROBE_TRAINING = ("batchSize", "seed", "precision")


def fingerprint(spec: LayerAdaptationSpec, scope: Scope = "spec") -> str:
    """16 hex digits of SHA-256 over the scope's part of the spec (camelCase JSON, sorted keys).

    >>> from service.spec.models import LayerAdaptationSpec
    >>> a, b = LayerAdaptationSpec(), LayerAdaptationSpec(training={"maxSteps": 5})
    >>> fingerprint(a) == fingerprint(b), fingerprint(a, "training") == fingerprint(b, "training")
    (False, True)
    """
    data = spec.model_dump(mode="json", by_alias=True)
    if scope == "training":
        training = {k: v for k, v in data["training"].items() if k not in _RESUMABLE_TRAINING}
        data = {**{k: data[k] for k in _WEIGHT_SECTIONS}, "training": training}
    elif scope == "probe":
        probe = {k: v for k, v in data["probe"].items() if k not in ("mode", "rungs", "seeds", "reuse")}
        training = {k: data["training"][k] for k in _PROBE_TRAINING}
        data = {**{k: data[k] for k in _WEIGHT_SECTIONS}, "probe": probe, "training": training}
    return _digest(data)


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
