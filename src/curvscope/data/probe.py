"""A fixed list of probe batches from any loader, so curvature products are deterministic."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any

import torch


def _detached(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, Mapping):  # dict, HF BatchEncoding / UserDict
        return {k: _detached(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_detached(v) for v in obj)
    if isinstance(obj, list):
        return [_detached(v) for v in obj]
    return obj


def probe_batches(loader: Iterable[Any], n: int) -> list[Any]:
    """The first ``n`` batches of ``loader`` (any iterable, including iterable datasets), copied.

    A loader may shuffle, augment or stream new samples on every pass; curvature products need the
    same batches every time. The copies are detached and independent of the loader's buffers, and
    HF ``BatchEncoding``/``UserDict`` batches become plain dicts. The result is a list, so operators
    may also retain gradient graphs for it.

    Raises:
        ValueError: ``n < 1``, or the loader yields no batch.

    Example:
        >>> batches = probe_batches(({"x": torch.full((2,), float(i))} for i in range(10)), 3)
        >>> [b["x"][0].item() for b in batches]
        [0.0, 1.0, 2.0]
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    out = [_detached(b) for b in islice(iter(loader), n)]
    if not out:
        raise ValueError("the loader yielded no batch")
    return out
