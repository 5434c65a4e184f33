"""The `LayerAdaptation` spec: one pydantic model for the CLI file, the CRD and the operator.

YAML keys are camelCase (Kubernetes convention); Python attributes are snake_case. Every field
carries a description, which also becomes the CRD's documentation. Validation happens once, here,
and a failure becomes a `SpecError` naming the field and the fix.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import (
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from service.errors import SpecError

API_VERSION: Final = "layerpilot.dev/v1alpha1"
KIND: Final = "LayerAdaptation"


class _Model(BaseModel):
    """Base for spec sections: camelCase aliases, unknown keys rejected, snake_case accepted too."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
        use_enum_values=True,
    )


class LossType(StrEnum):
    grpo = "grpo"
    dr_grpo = "dr_grpo"
    dapo = "dapo"


class ProbeMode(StrEnum):
    exact = "exact"
    gradient = "gradient"
    spectrum = "spectrum"


class Strategy(StrEnum):
    top_k = "top-k"
    mid_k = "mid-k"
    only_top = "only-top"
    only_bottom = "only-bottom"
    manual = "manual"


class Precision(StrEnum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"


class ModelSpec(_Model):
    uri: str = Field(
        "builtin:demo",
        description="The base model: `builtin:demo`, a local directory in transformers format, "
        "or `hf://org/name` (resolved through the Hugging Face cache).",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for `hf://` models.")
    trust_remote_code: bool = Field(
        False,
        description="Allow the model's own Python code from the Hub to run. Off by default; "
        "turn on only for models you trust.",
    )
    layers_path: str | None = Field(
        None,
        description="Dotted path to the decoder layer list (e.g. `model.layers`) for architectures "
        "layerpilot does not know.",
    )

    @field_validator("uri")
    @classmethod
    def _uri_scheme(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("is empty; use builtin:demo, a local directory or hf://org/name")
        if value.startswith("hf://"):
            repo = value[len("hf://") :]
            if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", repo):
                raise ValueError(f"'{value}' is not a Hub id; write hf://org/name")
        elif ":" in value.split("/")[0] and not value.startswith("builtin:"):
            scheme = value.split(":")[0]
            raise ValueError(
                f"unknown scheme '{scheme}:'; use builtin:demo, a local directory or hf://org/name"
            )
        elif value.startswith("builtin:") and value != "builtin:demo":
            raise ValueError(f"unknown built-in model '{value}'; the shipped model is builtin:demo")
        return value


class DatasetSpec(_Model):
    uri: str = Field(
        "builtin:arith",
        description="Training data: `builtin:arith`, a local .jsonl/.json/.csv/.parquet file, a "
        "local dataset directory, or `hf://org/name`.",
    )
    prompt_field: str = Field("prompt", description="Column holding the prompt text.")
    answer_field: str = Field(
        "answer", description="Column holding the reference answer, passed to rewards as `answer`."
    )
    eval_size: int = Field(
        64, ge=1, description="Number of held-out items used for evaluation (greedy decoding)."
    )
    split: str = Field("train", description="Split used for training (hub and directory datasets).")
    eval_split: str | None = Field(
        None,
        description="Split used for evaluation; when absent, the last `evalSize` rows of the "
        "training split are held out.",
    )

    @field_validator("uri")
    @classmethod
    def _uri_scheme(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("builtin:") and value != "builtin:arith":
            raise ValueError(f"unknown built-in dataset '{value}'; the shipped one is builtin:arith")
        if not value:
            raise ValueError("is empty; use builtin:arith, a local file or hf://org/name")
        return value


class RewardSpec(_Model):
    name: str = Field(
        description="A registered reward (see `layerpilot rewards`) or `module:function` for your own."
    )
    weight: float = Field(1.0, description="Weight of this reward in the sum TRL optimises.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for the reward (e.g. `pattern` for `format`).",
    )


class AlgorithmSpec(_Model):
    loss_type: LossType = Field(
        LossType.grpo,
        description="`grpo`, `dr_grpo` (Dr. GRPO: no std scaling, constant normaliser) or `dapo` "
        "(token-level normalisation, clip-higher).",
    )
    num_generations: int = Field(4, ge=2, description="Completions sampled per prompt (the GRPO group size).")
    max_completion_length: int = Field(16, ge=1, description="Maximum new tokens per completion.")
    learning_rate: float = Field(1.0e-5, gt=0, lt=1, description="Learning rate of the trained layers.")
    beta: float = Field(0.0, ge=0, description="KL coefficient; 0 loads no reference model.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for rollouts.")
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="Further TRL `GRPOConfig` options passed through as-is (snake_case names), "
        "checked against TRL's fields before training.",
    )


class ProbeSpec(_Model):
    mode: ProbeMode = Field(
        ProbeMode.exact,
        description="`exact` (one RL run per layer, the research protocol), `gradient` or "
        "`spectrum` (fast proxies).",
    )
    steps: int = Field(20, ge=1, description="RL steps of each probe run.")
    layers: Literal["all"] | list[int] = Field(
        "all", description="Candidate layers: `all` or a list of indices."
    )

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: Literal["all"] | list[int]) -> Literal["all"] | list[int]:
        if isinstance(value, list):
            _check_indices(value)
        return value


class SelectionSpec(_Model):
    strategy: Strategy = Field(
        Strategy.top_k,
        description="`top-k` by probe score, `mid-k` (middle layers), `only-top` (last k), "
        "`only-bottom` (first k) or `manual` (the listed `layers`).",
    )
    k: int = Field(1, ge=1, description="How many layers to train.")
    layers: list[int] | None = Field(None, description="Layer indices for `manual`.")

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            _check_indices(value)
        return value

    @model_validator(mode="after")
    def _manual_needs_layers(self) -> SelectionSpec:
        if self.strategy == Strategy.manual.value and not self.layers:
            raise ValueError("@layers: strategy `manual` needs layers; add e.g. layers: [3]")
        if self.strategy != Strategy.manual.value and self.layers:
            raise ValueError(
                f"@layers: only strategy `manual` reads layers, not `{self.strategy}`; "
                "remove layers or set strategy: manual"
            )
        return self


class TrainingSpec(_Model):
    max_steps: int = Field(200, ge=1, description="Optimizer steps of the training run.")
    batch_size: int = Field(
        8, ge=1, description="Completions per optimizer step (prompts per step = batchSize / numGenerations)."
    )
    seed: int = Field(0, ge=0, description="Seed for data order, sampling and initialisation.")
    save_steps: int = Field(50, ge=1, description="Write a resumable checkpoint every this many steps.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept on disk (oldest deleted first).")
    precision: Precision = Field(
        Precision.auto,
        description="`auto` (bfloat16 compute on a CUDA GPU that supports it, float32 elsewhere), "
        "`float32`, or `bfloat16` (CUDA only). Trained layers always keep float32 weights.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass to save memory; gradients never "
        "flow through frozen layers below the lowest trained one.",
    )


class MlflowSpec(_Model):
    tracking_uri: str | None = Field(None, description="MLflow tracking server; null uses a local store.")
    experiment: str = Field("layerpilot", min_length=1, description="MLflow experiment name.")
    registered_model: str | None = Field(None, description="Registered model name for the result.")


class ResourcesSpec(_Model):
    image: str | None = Field(None, description="Container image for the operator's Jobs.")
    gpus: int = Field(0, ge=0, description="GPUs per Job (operator only).")
    probe_parallelism: int = Field(4, ge=1, description="Probe Jobs running at once (operator only).")


class LayerAdaptationSpec(_Model):
    """The whole spec of a `LayerAdaptation`: what to adapt, how to probe, select and train."""

    model: ModelSpec = Field(default_factory=ModelSpec, description="Base model.")
    dataset: DatasetSpec = Field(default_factory=DatasetSpec, description="Prompts and answers.")
    rewards: list[RewardSpec] = Field(
        default_factory=lambda: [RewardSpec(name="exact_answer")],
        min_length=1,
        description="Reward functions and their weights.",
    )
    algorithm: AlgorithmSpec = Field(default_factory=AlgorithmSpec, description="GRPO settings.")
    probe: ProbeSpec = Field(default_factory=ProbeSpec, description="Layer probe settings.")
    selection: SelectionSpec = Field(default_factory=SelectionSpec, description="Which layers to train.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Training run settings.")
    mlflow: MlflowSpec = Field(default_factory=MlflowSpec, description="Tracking and registry.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Kubernetes resources.")

    @model_validator(mode="after")
    def _cross_field(self) -> LayerAdaptationSpec:
        gens, batch = self.algorithm.num_generations, self.training.batch_size
        if batch % gens:
            ok = [g for g in range(2, batch + 1) if batch % g == 0]
            hint = (
                f"try numGenerations {min(ok, key=lambda g: (abs(g - gens), g))}"
                if ok
                else "use a batchSize of at least 2"
            )
            raise ValueError(
                f"@algorithm.numGenerations: ({gens}) must divide `training.batchSize` ({batch}); {hint}"
            )
        return self

    def fingerprint(self) -> str:
        """A short stable hash of the spec, for tags and resume checks."""
        blob = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Metadata(_Model):
    model_config = ConfigDict(extra="allow")
    name: str = Field("layerpilot", description="Resource name.")
    namespace: str | None = Field(None, description="Resource namespace.")


class LayerAdaptation(_Model):
    """The full custom resource document."""

    api_version: Literal["layerpilot.dev/v1alpha1"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["LayerAdaptation"] = Field(KIND)
    metadata: Metadata = Field(default_factory=Metadata)
    spec: LayerAdaptationSpec = Field(default_factory=LayerAdaptationSpec)
    status: dict[str, Any] | None = Field(None, description="Written by the operator.")


def _check_indices(layers: list[int]) -> None:
    negative = [i for i in layers if i < 0]
    if negative:
        raise ValueError(f"{negative[0]} is negative; layer indices count from 0")
    if len(set(layers)) != len(layers):
        raise ValueError(f"indices repeat in {layers}; list each layer once")


# --- loading -------------------------------------------------------------------------------------


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
        raise SpecError("SPEC", f"no file at {path}", "pass the path of a LayerAdaptation YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "cannot be parsed"
        raise SpecError(
            "SPEC", f"{path} is not valid YAML{where} ({problem})", "fix the YAML syntax"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(
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


def spec_error_from(err: ValidationError, root: str = "spec") -> SpecError:
    """The first validation problem as a one-line `SpecError` naming the field and the fix."""
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
        return SpecError(field, "unknown field", fix + suffix)
    if kind == "missing":
        return SpecError(field, "is required", "add it" + suffix)
    if kind in ("literal_error", "enum"):
        expected = first.get("ctx", {}).get("expected", "")
        return SpecError(field, f"'{first.get('input')}' is not allowed", f"use one of {expected}{suffix}")
    if kind == "value_error":
        text = msg.removeprefix("Value error, ")
        if text.startswith("@"):
            sub, _, text = text[1:].partition(": ")
            field = _dotted([field, *sub.split(".")])
        problem, _, fix = text.partition("; ")
        return SpecError(field, problem, (fix or "") + suffix or None)
    return SpecError(field, msg[0].lower() + msg[1:], f"got {first.get('input')!r}{suffix}")


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


def check_layer_indices(layers: list[int], num_layers: int, field: str) -> list[int]:
    """Layer indices must exist in the loaded model: returns them sorted, or raises `SpecError`."""
    if not layers:
        raise SpecError(field, "no layers given", f"name at least one index in 0..{num_layers - 1}")
    for index in layers:
        if not 0 <= index < num_layers:
            raise SpecError(
                field,
                f"layer {index} does not exist; the model has {num_layers} decoder layers",
                f"use indices 0..{num_layers - 1}",
            )
    if len(set(layers)) != len(layers):
        raise SpecError(field, f"layer indices repeat in {layers}", "list each once")
    return sorted(layers)


def parse_layer_list(text: str, field: str = "--layers") -> list[int]:
    """Parse `3,4` or `3-5` into indices.

    >>> parse_layer_list("1,3-5")
    [1, 3, 4, 5]
    """
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise SpecError(
                field, f"'{part}' is not a layer index", "write indices like 3,4 or 2-5"
            ) from None
    if not out:
        raise SpecError(field, "no layers given", "write indices like 3,4 or 2-5")
    return out
