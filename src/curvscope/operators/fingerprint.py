"""Fingerprints: what an operator measures, so resumed state is never stale.

A fingerprint is a small JSON-ready dict. For a curvature operator it names the kind of
operator, the parameter selection, ``mode``, the compute dtype, a hash of the parameter values
and buffers, and a fingerprint of the data (shapes, sample count and a hash of the batches'
contents, computed while the validation pass reads them anyway). Checkpoints, sketch block
stores and run directories store it and refuse to resume when it differs, naming what changed.

Linear algebra and run directories ask :func:`operator_fingerprint` and never look at models.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor


class StaleStateError(ValueError):
    """Saved state (checkpoint, block store, run directory) was made for something else."""


class Digest:
    """An incremental sha256 over tensors (bytes, dtype and shape), cheap beside a forward pass."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, t: Tensor, name: str = "") -> None:
        """Fold in one tensor (moved to the CPU; a view is made contiguous first)."""
        t = t.detach()
        self._h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            data = t.contiguous().cpu()
            if data.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the raw bits
                data = data.view(torch.int16)
            self._h.update(data.numpy().tobytes())

    def update_text(self, text: str) -> None:
        """Fold in a string."""
        self._h.update(text.encode())

    def hexdigest(self, length: int = 16) -> str:
        """The first ``length`` hex digits (64 bits by default: collisions are not a concern here)."""
        return self._h.hexdigest()[:length]


def tensors_digest(tensors: Mapping[str, Tensor] | Iterable[Tensor]) -> str:
    """Hash of named (or ordered) tensors."""
    d = Digest()
    items = tensors.items() if isinstance(tensors, Mapping) else enumerate(tensors)
    for name, t in items:
        d.update(t, str(name))
    return d.hexdigest()


def digest_of_text(text: str) -> str:
    """A short hash of a string."""
    d = Digest()
    d.update_text(text)
    return d.hexdigest()


def describe_callable(fn: Any) -> str:
    """What a model or loss computes, as text.

    A module's ``repr`` (its layers and settings: activations, ``label_smoothing``…) plus a digest of
    its buffers, or a function's qualified name and attributes.
    """
    if isinstance(fn, torch.nn.Module):
        settings = {k: v for k, v in describe_attributes(fn).items() if k != "training"}  # label_smoothing…
        return f"{fn!r}|{settings}|{tensors_digest(dict(fn.named_buffers()))}"
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{getattr(fn, '__module__', '')}.{name}|{describe_attributes(fn) if hasattr(fn, '__dict__') else ''}"


def operator_fingerprint(A: Any) -> dict:
    """The fingerprint of anything that speaks the operator protocol.

    Operators with a ``fingerprint()`` method (every curvature operator, the composites, the
    dense operator) describe themselves; an operator from another library is described by its
    type, shape and dtype and marked ``"opaque": True`` (its content cannot be checked).
    """
    method = getattr(A, "fingerprint", None)
    if callable(method):
        return method()
    if isinstance(A, Tensor):
        return {"kind": "Tensor", "shape": list(A.shape), "dtype": str(A.dtype), "values": tensors_digest([A])}
    return {
        "kind": type(A).__name__,
        "shape": [int(s) for s in A.shape],
        "dtype": str(A.dtype),
        "opaque": True,
    }


def describe_attributes(obj: Any) -> dict:
    """Fingerprints of the operators, digests of the tensors and the plain values an object holds.

    Private attributes (``_name``) are skipped: they hold caches and bookkeeping, not what is measured.
    """
    out: dict[str, Any] = {}
    for name, value in vars(obj).items():
        if name.startswith("_"):
            continue
        described = _describe(value)
        if described is not None:
            out[name] = described
    return out


def _describe(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, Tensor):
        return tensors_digest([value])
    if isinstance(value, (list, tuple)) and all(_describe(v) is not None or v is None for v in value):
        return [_describe(v) for v in value]
    if callable(getattr(value, "fingerprint", None)) and hasattr(value, "shape"):
        return operator_fingerprint(value)
    return None


def fingerprint_differences(saved: Mapping, current: Mapping, prefix: str = "") -> list[str]:
    """The keys (dotted paths) whose values differ between two fingerprints, with both values."""
    out = []
    for key in sorted(set(saved) | set(current), key=str):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        path = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(fingerprint_differences(a, b, prefix=path + "."))
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            out.extend(fingerprint_differences(dict(enumerate(a)), dict(enumerate(b)), prefix=path + "."))
        elif a != b:
            out.append(f"{path}: {_short(a)} -> {_short(b)}")
    return out


def check_fingerprint(saved: Mapping | None, current: Mapping, what: str) -> None:
    """Refuse to resume ``what`` when its saved fingerprint differs from the current one.

    Raises:
        StaleStateError: naming each changed field and what to do.
    """
    if saved is None:
        raise StaleStateError(
            f"{what} carries no fingerprint of what it measures (written by an older curvscope?): "
            f"it cannot be checked against the current operator. Remove it or pass another path."
        )
    diffs = fingerprint_differences(saved, current)
    if diffs:
        raise StaleStateError(
            f"{what} was made for a different computation; what changed: {'; '.join(diffs)}. "
            f"Resuming would mix results. Remove it, or pass another path to start afresh."
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
