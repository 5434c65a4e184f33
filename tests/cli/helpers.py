"""What the CLI tests share: a runner and spec files written the way users write them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

runner = CliRunner()


def write_spec(tmp_path: Path, doc: Any, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def resource(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "layerpilot.dev/v1alpha1",
        "kind": "LayerAdaptation",
        "metadata": {"name": "t"},
        "spec": spec,
    }
