"""GRPOConfig arguments and precision from the spec, checked before any model loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from service.errors import InputError
from service.training.config import choose_precision, grpo_config_kwargs
from tests.conftest import small_spec


def test_dr_grpo_uses_the_unbiased_settings(tmp_path: Path) -> None:
    spec = small_spec(algorithm={"lossType": "dr_grpo"})
    kwargs = grpo_config_kwargs(spec, tmp_path, max_steps=1, precision=choose_precision("auto", "cpu"))
    assert kwargs["scale_rewards"] == "none"
    from trl import GRPOConfig

    config = GRPOConfig(**kwargs)
    assert config.loss_type == "dr_grpo"
    assert config.scale_rewards == "none"


def test_bfloat16_is_refused_without_cuda() -> None:
    with pytest.raises(InputError, match=r"training\.precision"):
        choose_precision("bfloat16", "cpu")
    cpu = choose_precision("auto", "cpu")
    assert cpu.load_dtype == torch.float32 and not cpu.bf16


def test_extra_options_are_validated_against_trl(tmp_path: Path) -> None:
    precision = choose_precision("auto", "cpu")
    ok = small_spec(algorithm={"extra": {"epsilon": 0.3, "mask_truncated_completions": True}})
    kwargs = grpo_config_kwargs(ok, tmp_path, max_steps=1, precision=precision)
    assert kwargs["epsilon"] == 0.3 and kwargs["mask_truncated_completions"] is True
    with pytest.raises(InputError, match=r"algorithm\.extra\.epsilonn: .*did you mean `epsilon`"):
        grpo_config_kwargs(
            small_spec(algorithm={"extra": {"epsilonn": 0.3}}), tmp_path, max_steps=1, precision=precision
        )
    with pytest.raises(InputError, match=r"set algorithm\.learningRate instead"):
        grpo_config_kwargs(
            small_spec(algorithm={"extra": {"learning_rate": 0.3}}),
            tmp_path,
            max_steps=1,
            precision=precision,
        )
