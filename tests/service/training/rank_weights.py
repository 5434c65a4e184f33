"""Run under `torchrun`: train layer 2 of the demo model, and let every rank save what it trained.

`python -m torch.distributed.run --nproc_per_node 2 tests/service/training/rank_weights.py OUT`
leaves `OUT/rank0.safetensors` and `OUT/rank1.safetensors` (the trained layer after the last step,
as each rank holds it) beside the run's own files (written by the main process only).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from transformers import TrainerCallback

from service.ranks import rank
from service.training.trainer import train
from tests.conftest import small_spec

SPEC = small_spec(dataset={"evalSize": 16}, training={"maxSteps": 2, "saveSteps": 2})


class SaveTrained(TrainerCallback):  # type: ignore[misc]
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
        module = getattr(model, "module", model)  # DDP wraps the model
        trained = {n: p.detach().cpu().contiguous() for n, p in module.named_parameters() if p.requires_grad}
        save_file(trained, str(self.out / f"rank{rank()}.safetensors"))


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    train(SPEC, [2], out / "run", callbacks=[SaveTrained(out)])
