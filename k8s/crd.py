"""The `LayerAdaptation` CRD, generated from the pydantic spec models (never written by hand).

Pydantic's JSON schema becomes a *structural* OpenAPI v3 schema as Kubernetes requires: `$ref`s
inlined, `X | None` as `nullable`, JSON-Schema-2020 exclusive bounds as OpenAPI booleans, free-form
mappings as `x-kubernetes-preserve-unknown-fields`, section defaults as `{}` so the API server fills
in every nested default. The spec is immutable once created (a CEL rule): a changed spec means a
new run, so apply it under a new name.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel

from k8s.naming import GROUP, PLURAL, SHORT_NAME, SINGULAR, VERSION
from service.spec.models import KIND, LayerAdaptationSpec

PHASES: Final = ("Pending", "Probing", "Training", "Registering", "Succeeded", "Failed")
IMMUTABLE_MESSAGE: Final = (
    "spec is immutable: apply the changed spec as a new LayerAdaptation (another metadata.name), "
    "or delete this one first"
)
_DROP: Final = {"title", "$defs"}


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        node = {**defs[ref.rsplit("/", 1)[-1]], **node}
    if "anyOf" in node:
        branches = node.pop("anyOf")
        solid = [b for b in branches if b.get("type") != "null"]
        if len(solid) == 1:
            node = {**_convert(solid[0], defs), **node}
            if len(branches) > 1:
                node["nullable"] = True
        else:  # e.g. `all` or a list of layer indices: checked by the operator, kept as written here
            node["x-kubernetes-preserve-unknown-fields"] = True
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (key == "default" and value is None):
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "properties":
            out[key] = {name: _convert(prop, defs) for name, prop in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs)
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = _convert(value, defs)
            # `false`: unknown keys are pruned by the API server (and refused by `kubectl apply`)
        else:
            out[key] = value
    return out


def _section_defaults(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Defaults pydantic computes with a factory: `{}` for a section (its fields default themselves)."""
    instance = model()
    for name, field in model.model_fields.items():
        if field.default_factory is None:
            continue
        key = field.serialization_alias or name
        prop = schema["properties"][key]
        value = getattr(instance, name)
        if isinstance(value, BaseModel):
            prop["default"] = {}
            _section_defaults(prop, type(value))
        else:
            prop["default"] = (
                [item.model_dump(mode="json", by_alias=True) for item in value]
                if isinstance(value, list) and value and isinstance(value[0], BaseModel)
                else value
            )


def spec_schema() -> dict[str, Any]:
    raw = LayerAdaptationSpec.model_json_schema(by_alias=True, mode="serialization")
    schema = _convert(raw, raw.get("$defs", {}))
    _section_defaults(schema, LayerAdaptationSpec)
    schema["x-kubernetes-validations"] = [{"rule": "self == oldSelf", "message": IMMUTABLE_MESSAGE}]
    return schema


def status_schema() -> dict[str, Any]:
    def text(description: str) -> dict[str, Any]:
        return {"type": "string", "description": description}

    def layers(description: str) -> dict[str, Any]:
        return {"type": "array", "items": {"type": "integer"}, "description": description}

    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": text("Probed, Trained, Registered or Ready."),
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": text("CamelCase reason of the last transition."),
            "message": text("One line for a person."),
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer"},
        },
    }
    return {
        "type": "object",
        "description": "Written by the operator.",
        # kopf keeps its handler progress here too
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "phase": {"type": "string", "enum": list(PHASES), "description": "Where the run is."},
            "message": text("The latest transition, in one line."),
            "observedGeneration": {
                "type": "integer",
                "description": "The spec generation this status is about.",
            },
            "conditions": {
                "type": "array",
                "description": "Probed, Trained, Registered and Ready, in the standard shape.",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "stage": text("The stage running now: plan, probe, merge, train or register."),
            "completedStages": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Stages whose Job completed; never re-run.",
            },
            "jobs": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "The Job (or TrainJob) of each stage.",
            },
            "probeUnits": {"type": "integer", "description": "Exact-probe units (Indexed Job completions)."},
            "selectedLayers": layers("The layers trained."),
            "topLayers": layers("The probe's best three layers, best first."),
            "profile": text(
                "With `probe.reuse`: the probe report the layers were chosen from, and the task it measured."
            ),
            "learningRateMultiplier": text(
                "The multiplier of `algorithm.learningRate` the layers trained at (with `auto`, the "
                "calibration's choice)."
            ),
            "registeredModel": text("Registered model name."),
            "modelVersion": text("The registered version (alias `candidate`)."),
            "workdir": text("This resource's directory on the workspace volume."),
            "mlflow": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "description": "trackingUri, experimentId, runIds (adapt, probe, train), url.",
            },
            "startedAt": {
                "type": "string",
                "format": "date-time",
                "description": "When the operator took it.",
            },
            "finishedAt": {
                "type": "string",
                "format": "date-time",
                "description": "When it succeeded or failed.",
            },
        },
    }


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition manifest."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "layerpilot"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": [SHORT_NAME],
                "categories": ["layerpilot"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Layers", "type": "string", "jsonPath": ".status.selectedLayers"},
                        {"name": "Model", "type": "string", "jsonPath": ".status.registeredModel"},
                        {"name": "Version", "type": "string", "jsonPath": ".status.modelVersion"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "RL post-training of only the decoder layers that matter: "
                            "probe, train the selected layers, register the layer patch.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": {**spec_schema(), "default": {}},
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }
