"""Shared fixtures: small real specs on the shipped demo model, and one trained run reused by many tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from service.spec.loading import load_spec
from service.spec.models import LayerAdaptationSpec
from tests.mlflow_server import clean_mlflow_env, mlflow_server  # noqa: F401 - session MLflow server fixtures

REPO = Path(__file__).resolve().parent.parent
TRAINED_LAYER = 2

torch.set_num_threads(2)


class RecordingProgress:
    """A `service.progress.Progress` that keeps every call, for asserting what a display would show."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def start(self, phase: str, total: int | None = None) -> None:
        self.events.append(("start", phase, total))

    def update(self, phase: str, done: int, info: str = "") -> None:
        self.events.append(("update", phase, done, info))

    def note(self, message: str) -> None:
        self.events.append(("note", message))

    def finish(self, phase: str, info: str = "") -> None:
        self.events.append(("finish", phase, info))

    def notes(self) -> list[str]:
        return [event[1] for event in self.events if event[0] == "note"]


def small_spec_data(**overrides: Any) -> dict[str, Any]:
    """The demo spec shrunk for tests, as the dict a spec file holds: a few fast steps with a learning
    rate that visibly moves weights. Each override is merged into its section."""
    data: dict[str, Any] = {
        "model": {"uri": "builtin:demo"},
        "dataset": {"uri": "builtin:arith", "evalSize": 32},
        "algorithm": {"numGenerations": 4, "maxCompletionLength": 4, "learningRate": 1e-3},
        "training": {"maxSteps": 3, "batchSize": 8, "saveSteps": 3, "seed": 0},
    }
    for section, values in overrides.items():
        data[section] = {**data.get(section, {}), **values}
    return data


def small_spec(**overrides: Any) -> LayerAdaptationSpec:
    """`small_spec_data`, loaded."""
    return load_spec(small_spec_data(**overrides))


@pytest.fixture
def spec() -> LayerAdaptationSpec:
    return small_spec()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real GRPO run training only layer 2 for 3 steps (checkpoint at the last step).

    `final_state` is the whole model's state dict in memory when training ended.
    """
    from transformers import TrainerCallback

    from service.training.trainer import train

    final: dict[str, Any] = {}

    class Snapshot(TrainerCallback):  # type: ignore[misc]
        def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            final.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    out = tmp_path_factory.mktemp("trained") / "run"
    result = train(small_spec(), [TRAINED_LAYER], out, callbacks=[Snapshot()])
    return {"out": out, "result": result, "layer": TRAINED_LAYER, "final_state": final}


@pytest.fixture(scope="session", autouse=True)
def _session_tracking_store(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Commands that track by default (`probe`, `train`) log into a throwaway store, not ./mlflow.db."""
    import os

    store = tmp_path_factory.mktemp("session-mlflow") / "mlflow.db"
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{store}")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket on 127.0.0.1 that sandboxed code must never reach."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield server
    server.close()
