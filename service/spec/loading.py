"""Reading a spec: a YAML file, a mapping, or the defaults, validated into `LayerAdaptationSpec`.

A document may be a whole `LayerAdaptation` resource or only its `spec`. Every validation problem
becomes one `InputError` that names the field (`spec.algorithm.learningRate`) and how to fix it.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from service.errors import InputError
from service.spec.models import LayerAdaptation, LayerAdaptationSpec


def load_spec(source: str | Path | dict[str, Any] | None) -> LayerAdaptationSpec:
    """Load a spec from a YAML file, a dict, or defaults (None).

    The document may be a whole `LayerAdaptation` resource or only its `spec`.
    """
    if source is None:
        return LayerAdaptationSpec()
    if isinstance(source, dict):
        return parse_spec(source)
    path = Path(source)
    if not path.is_file():
        raise InputError("SPEC", f"no file at {path}", "pass the path of a LayerAdaptation YAML file")
    raw = path.read_bytes()
    if not raw.strip():
        raise InputError(
            "SPEC", f"{path} is empty", "write a LayerAdaptation document (examples/demo.yaml is one to copy)"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if not text or "\x00" in text:
        raise InputError("SPEC", f"{path} is not a text file", "pass a LayerAdaptation YAML file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "cannot be parsed"
        raise InputError(
            "SPEC", f"{path} is not valid YAML{where} ({problem})", "fix the YAML syntax"
        ) from None
    if data is None:
        raise InputError("SPEC", f"{path} holds only comments", "write a LayerAdaptation document")
    if not isinstance(data, dict):
        raise InputError(
            "SPEC", f"{path} holds a {type(data).__name__}, not a mapping", "write a LayerAdaptation document"
        )
    return parse_spec(data)


def parse_spec(data: dict[str, Any]) -> LayerAdaptationSpec:
    """Validate a mapping that is a whole resource (has `kind`/`apiVersion`/`spec`) or only a spec."""
    is_resource = any(key in data for key in ("apiVersion", "kind", "metadata", "spec"))
    try:
        if is_resource:
            return LayerAdaptation.model_validate(data).spec
        return LayerAdaptationSpec.model_validate(data)
    except ValidationError as err:
        raise spec_error_from(err, root="" if is_resource else "spec") from None


def spec_error_from(err: ValidationError, root: str = "spec") -> InputError:
    """The first validation problem as a one-line `InputError` naming the field and the fix."""
    first = err.errors()[0]
    loc = [str(part) for part in first["loc"]]
    field = _dotted([root, *loc] if root else loc)
    kind, msg = first["type"], first["msg"]
    more = len(err.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    if kind == "extra_forbidden":
        parent_model = _model_at(loc[:-1], LayerAdaptation if not root else LayerAdaptationSpec)
        known = sorted(_aliases(parent_model)) if parent_model else []
        close = difflib.get_close_matches(loc[-1], known, n=1)
        fix = (
            f"did you mean `{close[0]}`?"
            if close
            else f"known fields: {', '.join(known)}"
            if known
            else "remove it"
        )
        return InputError(field, "unknown field", fix + suffix)
    if kind == "missing":
        return InputError(field, "is required", "add it" + suffix)
    if kind in ("literal_error", "enum"):
        expected = first.get("ctx", {}).get("expected", "")
        return InputError(field, f"'{first.get('input')}' is not allowed", f"use one of {expected}{suffix}")
    if kind == "value_error":
        text = msg.removeprefix("Value error, ")
        if text.startswith("@"):
            sub, _, text = text[1:].partition(": ")
            field = _dotted([field, *sub.split(".")])
        problem, _, fix = text.partition("; ")
        return InputError(field, problem, (fix or "") + suffix or None)
    return InputError(field, msg[0].lower() + msg[1:], f"got {first.get('input')!r}{suffix}")


def _dotted(parts: list[str]) -> str:
    out = ""
    for part in parts:
        if part.isdigit():
            out += f"[{part}]"
        elif part:
            out += ("." if out else "") + part
    return out or "spec"


def _aliases(model: type[BaseModel]) -> set[str]:
    return {to_camel(name) if name != "api_version" else "apiVersion" for name in model.model_fields}


def _model_at(loc: list[str], model: type[BaseModel]) -> type[BaseModel] | None:
    current: type[BaseModel] = model
    for part in loc:
        if part.isdigit():
            continue
        by_alias = {to_camel(name): info for name, info in current.model_fields.items()}
        info = current.model_fields.get(part) or by_alias.get(part)
        if info is None:
            return None
        annotation = info.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nested is None:
            return None
        current = nested
    return current
