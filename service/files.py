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
