"""The demo's spec: `examples/demo.yaml`, shipped inside the package as `service/assets/demo.yaml` (a link
to that file in a checkout), so the demo, the Kubernetes example and the file users copy never drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from service.errors import LayerpilotError
from service.spec.loading import load_spec
from service.spec.models import LayerAdaptationSpec

DEMO_SPEC = Path(__file__).resolve().parent.parent / "assets" / "demo.yaml"


def demo_document() -> dict[str, Any]:
    """The demo's YAML as written (the whole resource), for those who show it to people."""
    if not DEMO_SPEC.is_file():
        raise LayerpilotError(f"the demo spec is missing from {DEMO_SPEC}; reinstall layerpilot")
    return dict(yaml.safe_load(DEMO_SPEC.read_text()))


def demo_spec() -> LayerAdaptationSpec:
    """The demo's spec, validated."""
    demo_document()  # the one-line error when the file is missing
    return load_spec(DEMO_SPEC)
