"""`layerpilot patch apply`: a full model = base + layer patch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.base import App
from cli.console import emit, field, guarded
from cli.options import JsonOpt

app = App(name="patch", help="Layer patches: apply one to its base model.", no_args_is_help=True)


@app.command("apply")
@guarded
def apply(
    *,
    base: Annotated[str, typer.Argument(metavar="BASE", help="Base model URI the patch was trained on.")],
    patch_dir: Annotated[
        Path, typer.Argument(metavar="PATCH_DIR", help="Directory holding layer_patch.safetensors.")
    ],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Where to write the full patched model.")],
    as_json: JsonOpt = False,
) -> None:
    """Write a full model = base + layer patch (refuses a base whose weights differ)."""
    from service.patch import apply_patch  # deferred: loads torch and transformers (seconds)

    written = apply_patch(base, patch_dir, out_dir)
    emit(
        {"outDir": str(written["outDir"]), "layers": written["layers"], "tensors": written["tensors"]},
        as_json=as_json,
        render=lambda: field(f"layers {written['layers']} applied:", str(written["outDir"])),
    )
