"""Compiled products (``compile=True``): a batch's ``torch.func`` product through ``torch.compile``.

The ``"compiled"`` strategy compiles the operator's per-batch product — the batch setup (a
forward / ``grad`` / ``vjp`` closure) and one ``torch.func`` product per vector — with the inductor
backend, once per batch shape and block width (``dynamic=False``: shapes are guards, so a short last
batch costs one more compilation). It is exact to round-off against the eager path (float64 tests:
1e-12), and it is the strategy the rule tries first when asked for; if the compiler cannot handle
the model (a graph it cannot trace or lower) the strategy is dropped **with a warning** and the rule's
next strategy is used.

Inductor needs a C++ compiler on a CPU and Triton on a GPU. Where they are missing,
``compile=True`` raises at construction (:func:`compile_unavailable` says why) — never a silent
fallback to eager products.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from typing import Any

import torch

from curvscope.operators.strategies import is_out_of_memory


@functools.cache
def compile_unavailable(device_type: str) -> str | None:
    """Why ``torch.compile`` (inductor) cannot run on ``device_type`` here, or ``None`` when it can."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if device_type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "inductor needs Triton on a GPU and it is not installed (pip install triton)"
        return None
    if device_type == "cpu":
        candidates = [os.environ.get("CXX"), "g++", "c++", "clang++"]
        if not any(c and shutil.which(c) for c in candidates):
            return "inductor needs a C++ compiler on the CPU and none was found (install g++ or set CXX)"
        return None
    return f"curvscope compiles products on cpu and cuda only, not on {device_type!r}"


def check_compile(device: torch.device) -> None:
    """Raise, with the fix, when ``compile=True`` cannot work on ``device``."""
    reason = compile_unavailable(device.type)
    if reason is not None:
        raise RuntimeError(f"compile=True: {reason}. Pass compile=False for eager products.")


def _is_compiler_error(err: BaseException) -> bool:
    module = type(err).__module__
    return module.startswith(("torch._dynamo", "torch._inductor", "torch.fx")) or "backendcompilerfailed" in (
        type(err).__name__.lower()
    )


class CompiledProduct:
    """``(inputs, targets, n, V) -> product`` of one batch, compiled on first call per shape.

    Args:
        eager: the eager block product (one ``torch.func`` product per vector).
    """

    def __init__(self, eager: Callable[..., Any]) -> None:
        self.eager = eager
        self._fn = torch.compile(eager, dynamic=False)

    def __call__(self, inputs: Any, targets: Any, n: int, V: Any) -> Any:
        """The compiled product; a compiler failure becomes a benign ``NotImplementedError``."""
        try:
            return self._fn(inputs, targets, n, V)
        except Exception as err:
            if is_out_of_memory(err) or not _is_compiler_error(err):
                raise
            raise NotImplementedError(
                f"torch.compile cannot compile this product ({type(err).__name__}: {str(err)[:300]})"
            ) from err
