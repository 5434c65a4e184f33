"""docs/reference.md is the contract: generated from the code, and never stale."""

from __future__ import annotations

from pathlib import Path

from cli.reference import render

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_reference_is_what_the_code_generates() -> None:
    committed = (REPO / "docs" / "reference.md").read_text()
    assert committed == render(), "docs/reference.md is stale: run `make reference` and commit it"


def test_the_reference_covers_every_command_and_spec_section() -> None:
    text = render()
    for command in ("adapt", "demo", "probe [run]", "probe merge", "probe validate", "train", "eval"):
        assert f"### `layerpilot {command}`" in text
    for command in ("patch apply", "export", "registry list", "registry show", "registry promote"):
        assert f"### `layerpilot {command}`" in text
    for section in ("model", "dataset", "rewards", "algorithm", "probe", "selection", "training", "mlflow"):
        assert f"### `spec.{section}`" in text
    assert "../shared" not in text


def test_the_readme_stands_alone() -> None:
    readme = (REPO / "README.md").read_text()
    assert "../" not in readme and "docs/reference.md" in readme
