"""Writing result files so that a killed process never leaves half of one behind.

Every result the engine writes (probe partials and reports, patches, run records) goes through
`atomic_write`: the content lands in a temporary file beside the target, which is then renamed
over it. A reader sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.errors import InputError


def atomic_write(target: Path, write: Callable[[Path], Any]) -> None:
    """Call `write(tmp)` on a temporary path beside `target`, then rename it to `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as written:  # on disk before the rename makes it visible
            os.fsync(written.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(target: Path, data: Any) -> None:
    """`data` as indented JSON (with a final newline), written atomically."""
    text = json.dumps(data, indent=2, default=str) + "\n"
    atomic_write(target, lambda tmp: tmp.write_text(text))


def check_output_dir(path: Path, option: str) -> None:
    """Bad input, before any work starts: an output directory that is a file, or cannot be made."""
    if path.exists() and not path.is_dir():
        raise InputError(
            option, f"{path} is a file, not a directory", "choose a directory (created if missing)"
        )
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(
            option, f"{existing} is a file, so {path} cannot be a directory", "choose another path"
        )
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(option, f"cannot write into {existing}", "choose a directory you can write to")
