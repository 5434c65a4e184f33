"""Layer indices as users write them (`3,4`, `2-5`) and as a loaded model can accept them."""

from __future__ import annotations

from service.errors import InputError


def check_layer_indices(layers: list[int], num_layers: int, field: str) -> list[int]:
    """Layer indices must exist in the loaded model: returns them sorted, or raises `InputError`."""
    if not layers:
        raise InputError(field, "no layers given", f"name at least one index in 0..{num_layers - 1}")
    for index in layers:
        if not 0 <= index < num_layers:
            raise InputError(
                field,
                f"layer {index} does not exist; the model has {num_layers} decoder layers",
                f"use indices 0..{num_layers - 1}",
            )
    if len(set(layers)) != len(layers):
        raise InputError(field, f"layer indices repeat in {layers}", "list each once")
    return sorted(layers)


def parse_layer_list(text: str, field: str = "--layers") -> list[int]:
    """Parse `3,4` or `3-5` into indices.

    >>> parse_layer_list("1,3-5")
    [1, 3, 4, 5]
    """
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                if int(hi) < int(lo):
                    raise InputError(field, f"'{part}' is a reversed range", f"write {hi}-{lo}")
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise InputError(
                field, f"'{part}' is not a layer index", "write indices like 3,4 or 2-5"
            ) from None
    if not out:
        raise InputError(field, "no layers given", "write indices like 3,4 or 2-5")
    return out
