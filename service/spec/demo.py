"""The demos' specs: `examples/demo.yaml` and `examples/agent.yaml`, shipped inside the package as
`service/assets/*.yaml` (links to those files in a checkout), so the demo, the Kubernetes example and
the file users copy never drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from service.errors import LayerpilotError
from service.spec.loading import load_spec
from service.spec.models import LayerAdaptationSpec

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEMO_SPEC = ASSETS / "demo.yaml"
DEMOS: dict[str, Path] = {"arith": DEMO_SPEC, "agent": ASSETS / "agent.yaml"}
"""The demos by name: `arith` (examples/demo.yaml) and `agent` (examples/agent.yaml)."""


def demo_document(name: str = "arith") -> dict[str, Any]:
    """The demo's YAML as written (the whole resource), for those who show it to people."""
    path = DEMOS[name]
    if not path.is_file():
        raise LayerpilotError(f"the demo spec is missing from {path}; reinstall layerpilot")
    return dict(yaml.safe_load(path.read_text()))


def demo_spec(name: str = "arith") -> LayerAdaptationSpec:
    """The demo's spec, validated."""
    demo_document(name)  # the one-line error when the file is missing
    return load_spec(DEMOS[name])
