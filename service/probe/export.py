"""A probe's selected layers as another training tool's configuration.

Each export is written against the tool's own matching rule, so it selects exactly the parameters
of the chosen layers (layer 1 never matches layer 10 or 11):
- `peft`: `layers_to_transform` + `layers_pattern` of a PEFT `LoraConfig` (LoRA on those layers only).
- `axolotl`: `unfrozen_parameters`; axolotl escapes dots and applies `re.match` to parameter names.
- `llamafactory`: freeze tuning trains the last N (`freeze_trainable_layers: N`) or first N (`-N`)
  layers only; other selections cannot be expressed and are refused with the alternatives.
- `regex`: one Python regex that `re.fullmatch`es exactly the chosen layers' parameter names.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from service.errors import InputError
from service.probe.report import ProbeReport


class ExportFormat(StrEnum):
    peft = "peft"
    axolotl = "axolotl"
    llamafactory = "llamafactory"
    regex = "regex"


def layers_regex(layers_path: str, layers: list[int]) -> str:
    """A regex fully matching every parameter name inside the given layers, and nothing else.

    >>> pattern = layers_regex("model.layers", [1, 3])
    >>> [bool(re.fullmatch(pattern, n)) for n in ("model.layers.1.mlp.up_proj.weight",
    ...  "model.layers.10.mlp.up_proj.weight", "model.layers.3.input_layernorm.weight")]
    [True, False, True]
    """
    alternatives = "|".join(str(i) for i in sorted(layers))
    return rf"{re.escape(layers_path)}\.({alternatives})\..+"


def export_layers(report: ProbeReport, fmt: str) -> dict[str, Any]:
    """The selected layers of `report` in format `fmt`, as a mapping ready to dump as YAML or JSON."""
    layers = sorted(report.selected)
    if not layers:
        raise InputError(
            "REPORT", "the report selects no layers", "re-run `layerpilot probe` with a selection"
        )
    path = report.layers_path
    if fmt == ExportFormat.peft.value:
        # PEFT matches `layers_pattern` as the name of the module list right before the index.
        return {"layers_to_transform": layers, "layers_pattern": path.rsplit(".", 1)[-1]}
    if fmt == ExportFormat.axolotl.value:
        # Axolotl turns every "." into a literal dot, so "[.]" is the only portable way to end the
        # index; `re.match` then anchors the pattern at the start of the name.
        return {"unfrozen_parameters": [f"^{path}.{i}[.]" for i in layers]}
    if fmt == ExportFormat.llamafactory.value:
        count = len(layers)
        if layers == list(range(report.num_layers - count, report.num_layers)):
            trainable = count
        elif layers == list(range(count)):
            trainable = -count
        else:
            raise InputError(
                "--format",
                f"LLaMA-Factory freeze tuning trains only the first or last N layers, and layers {layers} "
                "are neither",
                "use --format peft, axolotl or regex, or select with strategy only-top/only-bottom",
            )
        return {
            "finetuning_type": "freeze",
            "freeze_trainable_layers": trainable,
            "freeze_trainable_modules": "all",
        }
    if fmt == ExportFormat.regex.value:
        return {"regex": layers_regex(path, layers)}
    raise InputError("--format", f"'{fmt}' is not an export format", f"use one of {', '.join(ExportFormat)}")
