"""Resumable state for long linear-algebra runs: one safetensors file, replaced atomically.

A checkpoint holds named tensors plus a JSON ``config`` that must match on resume (so a
file from another problem is refused, not silently continued) and the ``torch.Generator``
state, so that the resumed run draws exactly the random numbers the uninterrupted one would.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from curvscope.io import load_tensors, save_tensors


def save_state(path: str | os.PathLike, config: dict, gen: torch.Generator, tensors: dict, values: dict) -> None:
    """Write the state (atomic: a kill during the write leaves the previous checkpoint)."""
    save_tensors(path, {**tensors, "_gen_state": gen.get_state()}, {"config": config, "values": values})


def load_state(path: str | os.PathLike | None, config: dict, gen: torch.Generator) -> tuple[dict, dict] | None:
    """``(tensors, values)`` of a matching checkpoint (restoring ``gen``), or ``None`` if there is none.

    Raises:
        ValueError: the file belongs to a different computation (its config differs).
    """
    if path is None or not Path(path).exists():
        return None
    tensors, meta = load_tensors(path)
    if meta.get("config") != config:
        raise ValueError(
            f"checkpoint {path} was written for {meta.get('config')}, not {config}: remove it or pass another path"
        )
    gen.set_state(tensors.pop("_gen_state"))
    return tensors, meta.get("values", {})


def jsonable(x: Any) -> Any:
    """Config values as JSON-comparable primitives."""
    return str(x) if isinstance(x, (torch.dtype, torch.device)) else x
