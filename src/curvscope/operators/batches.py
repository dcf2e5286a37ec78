"""Helpers around a loss problem: tensor trees in batches, the train/eval policy, parameter selection, dtype.

Split from :mod:`curvscope.operators.problem` so that the problem class reads as one unit.
"""

from __future__ import annotations

import contextlib
import fnmatch
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from curvscope.operators.fingerprint import Digest

Batch = Any
MODES = ("eval", "train", "as_is")


def _tensor_leaves(obj: Any) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in _tensor_leaves(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensor_leaves(v)]
    return []


def _map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, Mapping):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_map_tensors(v, fn) for v in obj)
    if isinstance(obj, list):
        return [_map_tensors(v, fn) for v in obj]
    return obj


_WARNED_LOW_PRECISION: set[torch.dtype] = set()


def compute_dtype_for(param_dtype: torch.dtype) -> torch.dtype:
    """The default compute dtype: the parameters' own, except float32 for bfloat16/float16 models."""
    if param_dtype in (torch.bfloat16, torch.float16):
        if param_dtype not in _WARNED_LOW_PRECISION:
            _WARNED_LOW_PRECISION.add(param_dtype)
            warnings.warn(
                f"the model's parameters are {param_dtype}: curvature products run in float32 on upcast "
                f"copies of the parameters, buffers and inputs (the model is not modified), because "
                f"{param_dtype} rounding (eps {torch.finfo(param_dtype).eps:.0e}) cannot certify an "
                f"eigenvalue. Pass dtype={param_dtype} to compute in it anyway, or dtype=torch.float64.",
                stacklevel=4,
            )
        return torch.float32
    return param_dtype


def tensors_digest_names(names: list[str]) -> str:
    """A short hash of the parameter names (their order is the flat vector's)."""
    d = Digest()
    d.update_text("\n".join(names))
    return d.hexdigest()


def slice_batch(batch: Batch, start: int, stop: int) -> Batch:
    """Rows ``start:stop`` of every tensor in a batch (tuple, list or dict)."""
    return _map_tensors(batch, lambda t: t[start:stop] if t.ndim > 0 else t)


@contextlib.contextmanager
def module_mode(model: Any, mode: str) -> Iterator[None]:
    """Put every submodule in train or eval mode for the duration, then restore each flag."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(model, nn.Module) or mode == "as_is":
        yield
        return
    flags = [(m, m.training) for m in model.modules()]
    model.train(mode == "train")
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _select_names(named: list[tuple[str, Tensor]], params: str | Sequence[str] | None) -> list[str]:
    trainable = [n for n, p in named if p.requires_grad]
    if params is None:
        if not trainable:
            raise ValueError(
                "the model has no trainable parameters (all have requires_grad=False): "
                "unfreeze some or pass params=[names] explicitly"
            )
        return trainable
    patterns = [params] if isinstance(params, str) else list(params)
    if not patterns:
        raise ValueError("params is an empty list: pass None for all trainable parameters")
    all_names = [n for n, _ in named]
    chosen: list[str] = []
    for pat in patterns:
        hits = [n for n in all_names if n == pat or fnmatch.fnmatchcase(n, pat)]
        if not hits:
            shown = ", ".join(all_names[:12]) + (" …" if len(all_names) > 12 else "")
            raise ValueError(f"parameter pattern {pat!r} matches no parameter; names are: {shown}")
        chosen.extend(h for h in hits if h not in chosen)
    # The flat vector always follows named_parameters order, whatever the pattern order.
    return [n for n in all_names if n in chosen]
