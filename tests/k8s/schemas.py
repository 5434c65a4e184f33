"""Validation against the official schemas: Kubernetes 1.33 (kubernetes-validate, strict), the Trainer
2.3 TrainJob CRD (vendored in fixtures/), and our own CRD's schema for LayerAdaptation objects."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from jsonschema import Draft4Validator

K8S_VERSION = "1.33"
TRAINJOB_CRD = Path(__file__).parent / "fixtures" / "trainer.kubeflow.org_trainjobs.yaml"


def validate_builtin(obj: dict[str, Any]) -> None:
    """Raises for an unknown field or a wrong type, as `kubectl apply --validate=strict` would."""
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def _strict(schema: Any) -> Any:
    """Unknown fields refused (the API server's strict field validation), except where preserved."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if out.pop("nullable", False) and isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]  # OpenAPI's `nullable`, which draft 4 does not know
        open_ = "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in out and not open_:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@cache
def _crd_schema(path: str) -> dict[str, Any]:
    crd = yaml.safe_load(Path(path).read_text())
    return _strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def crd_errors(obj: dict[str, Any], crd: dict[str, Any] | Path) -> list[str]:
    """Errors of `obj` against a CRD's openAPIV3Schema (OpenAPI v3.0 ≈ JSON Schema draft 4)."""
    if isinstance(crd, Path):
        schema = _crd_schema(str(crd))
    else:
        schema = _strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in Draft4Validator(schema).iter_errors(obj)
    ]


def structural_problems(schema: dict[str, Any], where: str = "") -> list[str]:
    """What the API server would refuse in a CRD schema that is not structural (apiextensions rules)."""
    problems = []
    if "$ref" in schema:
        problems.append(f"{where}: $ref")
    for junctor in ("anyOf", "oneOf", "allOf", "not"):
        if junctor in schema:
            problems.append(f"{where}: {junctor}")
    if not schema.get("type") and not (
        schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("x-kubernetes-int-or-string")
    ):
        problems.append(f"{where}: no type")
    if "properties" in schema and schema.get("additionalProperties") not in (None,):
        problems.append(f"{where}: properties and additionalProperties")
    for name, prop in (schema.get("properties") or {}).items():
        problems += structural_problems(prop, f"{where}.{name}")
    if isinstance(schema.get("items"), dict):
        problems += structural_problems(schema["items"], f"{where}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        problems += structural_problems(schema["additionalProperties"], f"{where}{{}}")
    return problems
