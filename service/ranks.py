"""Which process of a distributed launch this is (`torchrun`, `accelerate launch`, a Kubeflow TrainJob).

Every rank runs the whole command and trains; only the main process (global rank 0) writes results,
records to MLflow and prints. Launchers say who is who in the environment (`RANK`, `WORLD_SIZE`);
a process started any other way is the main one of a world of one.

>>> is_main({"RANK": "1", "WORLD_SIZE": "2"}), is_main({})
(False, True)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


def rank(env: Mapping[str, str] | None = None) -> int:
    return int((env if env is not None else os.environ).get("RANK", "0") or 0)


def world_size(env: Mapping[str, str] | None = None) -> int:
    return int((env if env is not None else os.environ).get("WORLD_SIZE", "1") or 1)


def is_main(env: Mapping[str, str] | None = None) -> bool:
    return rank(env) == 0


@contextmanager
def main_first() -> Iterator[None]:
    """Under a launcher, the main process runs the block first and the others wait for it (e.g. to
    prepare a directory they all read); a process alone just runs it."""
    if world_size() == 1:
        yield
        return
    from accelerate import PartialState  # joins the launcher's process group, as the trainer will

    with PartialState().main_process_first():
        yield
