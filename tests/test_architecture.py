"""The shape of the code: imports point one way, no circles, code as the formatter writes it.

Imports point one way (cli, k8s, mlflow_plugins -> service); service is layered; only
service.tracking imports mlflow and only k8s imports kopf/kubernetes; no package imports a sibling
that imports it back (import-linter, configured in pyproject.toml).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("service", "cli", "k8s", "mlflow_plugins")


def test_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 6 kept, 0 broken" in result.stdout


def test_code_is_as_the_formatter_writes_it() -> None:
    """A module's length is a symptom to read, never a number to fit: the formatter writes the code."""
    ruff = str(Path(sys.executable).parent / "ruff")
    for args in (["format", "--check", "."], ["check", "."]):
        result = subprocess.run([ruff, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_formatter_is_never_switched_off() -> None:
    switched_off = [
        f"{path.relative_to(REPO)}:{number}"
        for root in (*PACKAGES, "tests", "benchmarks", "tools")
        for path in sorted((REPO / root).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"#\s*fmt:\s*(skip|off)", line)
    ]
    assert not switched_off, f"let the formatter write these: {switched_off}"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_says_what_it_owns(package: str) -> None:
    undocumented = [
        str(init.relative_to(REPO))
        for init in sorted((REPO / package).rglob("__init__.py"))
        if not init.read_text().lstrip().startswith('"""')
    ]
    assert not undocumented, f"give these packages a docstring stating their boundary: {undocumented}"
