"""Layer exports select exactly the chosen layers' real parameters, under each tool's own matching rule."""

from __future__ import annotations

import re

import pytest
import torch

from service.errors import InputError
from service.models.loading import load_model_and_tokenizer
from service.models.stack import find_decoder_layers
from service.probe.export import export_layers
from service.probe.report import LayerScore, ProbeReport
from service.spec.models import ModelSpec


@pytest.fixture(scope="module")
def demo_model() -> torch.nn.Module:
    model, _ = load_model_and_tokenizer(ModelSpec())
    return model


def _report(model: torch.nn.Module, selected: list[int]) -> ProbeReport:
    stack = find_decoder_layers(model)
    layers = [LayerScore(index=i, name=f"{stack.path}.{i}", score=0.0, rank=i + 1) for i in range(len(stack))]
    return ProbeReport(
        model="builtin:demo",
        num_layers=len(stack),
        mode="exact",
        layers_path=stack.path,
        layers=layers,
        selected=selected,
    )


def _names_in(model: torch.nn.Module, layers: list[int]) -> set[str]:
    return {n for n, _ in model.named_parameters() if any(n.startswith(f"model.layers.{i}.") for i in layers)}


@pytest.mark.parametrize("selected", [[1], [0, 5], [2, 3, 4]])
def test_regex_matches_exactly_the_selected_layers(demo_model: torch.nn.Module, selected: list[int]) -> None:
    pattern = export_layers(_report(demo_model, selected), "regex")["regex"]
    matched = {n for n, _ in demo_model.named_parameters() if re.fullmatch(pattern, n)}
    assert matched == _names_in(demo_model, selected) and matched


@pytest.mark.parametrize("selected", [[1], [0, 5]])
def test_axolotl_patterns_match_as_axolotl_applies_them(
    demo_model: torch.nn.Module, selected: list[int]
) -> None:
    patterns = export_layers(_report(demo_model, selected), "axolotl")["unfrozen_parameters"]
    # axolotl's freeze_layers_except: every "." becomes a literal dot, then re.match on the name
    compiled = [re.compile(p.replace(".", "\\.")) for p in patterns]
    matched = {n for n, _ in demo_model.named_parameters() if any(c.match(n) for c in compiled)}
    assert matched == _names_in(demo_model, selected)
    # and read as plain regexes they select the same parameters
    plain = {n for n, _ in demo_model.named_parameters() if any(re.match(p, n) for p in patterns)}
    assert plain == matched


def test_peft_lora_lands_only_in_the_selected_layers() -> None:
    from peft import LoraConfig, get_peft_model

    model, _ = load_model_and_tokenizer(ModelSpec())
    plan = export_layers(_report(model, [1, 4]), "peft")
    config = LoraConfig(r=2, target_modules=["q_proj", "down_proj"], **plan)
    peft_model = get_peft_model(model, config)
    lora = {n for n, _ in peft_model.named_parameters() if "lora_" in n}
    layers = {int(re.search(r"layers\.(\d+)\.", n).group(1)) for n in lora}  # type: ignore[union-attr]
    assert layers == {1, 4}


def test_llamafactory_expresses_first_or_last_layers_only(demo_model: torch.nn.Module) -> None:
    assert export_layers(_report(demo_model, [4, 5]), "llamafactory")["freeze_trainable_layers"] == 2
    assert export_layers(_report(demo_model, [0]), "llamafactory")["freeze_trainable_layers"] == -1
    with pytest.raises(InputError, match=r"--format: LLaMA-Factory .* \[2\] are neither; use --format peft"):
        export_layers(_report(demo_model, [2]), "llamafactory")


def test_unknown_format_and_empty_selection_are_refused(demo_model: torch.nn.Module) -> None:
    with pytest.raises(InputError, match="--format"):
        export_layers(_report(demo_model, [1]), "deepspeed")
    with pytest.raises(InputError, match="REPORT"):
        export_layers(_report(demo_model, []), "regex")
