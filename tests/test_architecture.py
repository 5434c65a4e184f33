"""The shape of the code: imports point one way, no circles, modules a newcomer can read.

Imports point one way (cli, k8s, mlflow_plugins -> service); service is layered; only
service.tracking imports mlflow and only k8s imports kopf/kubernetes; no package imports a sibling
that imports it back (import-linter, configured in pyproject.toml).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("service", "cli", "k8s", "mlflow_plugins")
MAX_LINES = 400


def test_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 6 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_is_at_most_400_lines(package: str) -> None:
    too_long = {
        str(path.relative_to(REPO)): count
        for path in sorted((REPO / package).rglob("*.py"))
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not too_long, f"split these modules by concern: {too_long}"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_says_what_it_owns(package: str) -> None:
    undocumented = [
        str(init.relative_to(REPO))
        for init in sorted((REPO / package).rglob("__init__.py"))
        if not init.read_text().lstrip().startswith('"""')
    ]
    assert not undocumented, f"give these packages a docstring stating their boundary: {undocumented}"
