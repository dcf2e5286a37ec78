"""Resumable state for long linear-algebra runs: one safetensors file, replaced atomically.

A checkpoint holds named tensors, a JSON ``config`` that must match on resume (so a file from
another problem is refused, not silently continued), the ``torch.Generator`` state (so the
resumed run draws exactly the random numbers the uninterrupted one would) and, when the caller
gives one, the operator's fingerprint (:func:`curvscope.operators.fingerprint.operator_fingerprint`):
a checkpoint made for another operator (other weights, other data, another dtype) is refused
with :class:`~curvscope.operators.fingerprint.StaleStateError` naming what changed, and so is a
file written before fingerprints were stored.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from curvscope.io import load_tensors, save_tensors
from curvscope.operators.fingerprint import check_fingerprint


def save_state(
    path: str | os.PathLike,
    config: dict,
    gen: torch.Generator,
    tensors: dict,
    values: dict,
    fingerprint: dict | None = None,
) -> None:
    """Write the state (atomic: a kill during the write leaves the previous checkpoint)."""
    meta: dict[str, Any] = {"config": config, "values": values}
    if fingerprint is not None:
        meta["fingerprint"] = fingerprint
    save_tensors(path, {**tensors, "_gen_state": gen.get_state()}, meta)


def load_state(
    path: str | os.PathLike | None, config: dict, gen: torch.Generator, fingerprint: dict | None = None
) -> tuple[dict, dict] | None:
    """``(tensors, values)`` of a matching checkpoint (restoring ``gen``), or ``None`` if there is none.

    Args:
        path: the checkpoint file (``None`` or a missing file: start afresh).
        config: the problem's settings; the file's must be equal.
        gen: restored to the saved random state.
        fingerprint: the current operator's fingerprint; when given, the file must carry an
            equal one. An opaque fingerprint (an operator from another library, whose content
            cannot be hashed) resumes with a warning.

    Raises:
        ValueError: the file belongs to a different computation (its config differs), or is corrupted.
        StaleStateError: the file was made for a different operator, or carries no fingerprint.
    """
    if path is None or not Path(path).exists():
        return None
    try:
        tensors, meta = load_tensors(path)
    except Exception as err:  # safetensors raises its own error type for truncated or foreign files
        raise ValueError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); it is corrupted, e.g. by a crash "
            f"during a copy (curvscope's own writes are atomic). Delete it: the run then restarts from scratch."
        ) from err
    if fingerprint is not None:  # first: what the operator measures, named field by field
        check_fingerprint(meta.get("fingerprint"), fingerprint, f"checkpoint {path}")
    if meta.get("config") != config:
        raise ValueError(
            f"checkpoint {path} was written for {meta.get('config')}, not {config}: remove it or pass another path"
        )
    if fingerprint is not None:
        if fingerprint.get("opaque"):
            warnings.warn(
                f"resuming checkpoint {path} for a {fingerprint.get('kind')} operator whose content cannot be "
                f"fingerprinted: only its type, shape and dtype were checked",
                stacklevel=4,
            )
    gen.set_state(tensors.pop("_gen_state"))
    return tensors, meta.get("values", {})


def jsonable(x: Any) -> Any:
    """Config values as JSON-comparable primitives."""
    return str(x) if isinstance(x, (torch.dtype, torch.device)) else x
