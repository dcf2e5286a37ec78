"""Precision of the Krylov arithmetic and the default tolerance: one rule for every algorithm.

**Work dtype** (``work_dtype="auto"``, the default of :func:`~curvscope.linalg.eigsh`,
:func:`~curvscope.linalg.lanczos` and :func:`~curvscope.linalg.power_iteration`): products
always run in the operator's dtype; the basis, the orthogonalisation and the Ritz values run
in float64 when the operator is below float64 and the float64 vectors fit the memory guard
(:mod:`curvscope.memory`; disk storage always fits). Otherwise they run in the operator's dtype
(at least float32: Gram–Schmidt in bfloat16/float16 loses orthogonality within a few steps),
with a warning that the certificate is then limited by that arithmetic. ``None`` means the
operator's dtype (the behaviour before ``"auto"``); an explicit float dtype is used as given.

**Default tolerance** (relative residual ``‖Av − λv‖ / ‖A‖``)::

    tol = max(sqrt(eps(work_dtype)), NOISE_FACTOR · noise_floor)

``noise_floor`` is ``A.noise_floor``: the operator's measured relative rounding noise of one
product (relative to ‖A‖; curvature operators measure it). A residual cannot be certified below
the noise of the product that measures it, and the floor is itself an estimate from a few
probes, so the tolerance keeps a factor :data:`NOISE_FACTOR` = 10 of margin: a certificate then
fails only when the noise is ten times what was measured, and the eigenvalue error (at most
the residual, about residual²/gap) stays one digit above the noise. An operator that does not
measure its noise is assumed as noisy as its dtype's ``sqrt(eps)`` (float32: 3.5e-4, the default
before ``"auto"``), since float32 products of deep networks are routinely 1e-6 to 1e-4 noisy.

A given ``tol`` below what the products can resolve (``NOISE_FACTOR · noise_floor``, or one
rounding unit ``eps`` of the operator's dtype when unmeasured) is raised to it with a warning:
a run that cannot converge would otherwise spend its whole budget.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

import curvscope.memory as memory

#: The default tolerance is this many times the operator's measured noise floor (see module doc).
NOISE_FACTOR = 10.0

WorkDtype = torch.dtype | str | None


class Promoted:
    """``A`` seen in a wider ``work_dtype``: products run in ``A``'s dtype, the Krylov arithmetic in ``work_dtype``.

    With a float32 operator and ``work_dtype=torch.float64`` the basis, the
    orthogonalisation and the Ritz values carry float64 round-off, so the accuracy is
    limited by the operator's own rounding, not by float32 Gram–Schmidt (what ARPACK
    through SciPy does). Memory of the basis doubles.

    Example:
        >>> import torch
        >>> P = Promoted(torch.eye(2), torch.float64)
        >>> (P @ torch.ones(2, dtype=torch.float64)).dtype
        torch.float64
    """

    def __init__(self, A: Any, work_dtype: torch.dtype) -> None:
        self.A, self.op_dtype = A, A.dtype
        self.shape, self.dtype, self.device = tuple(A.shape), work_dtype, torch.device(A.device)
        self.space = getattr(A, "space", None)  # a sharded operator's vectors stay sharded

    def __matmul__(self, X: Tensor) -> Tensor:
        return (self.A @ X.to(self.op_dtype)).to(self.dtype)


def promote(A: Any, work_dtype: torch.dtype | None) -> Any:
    """``A`` itself, or :class:`Promoted` when ``work_dtype`` differs from its dtype."""
    if work_dtype is None or work_dtype == A.dtype:
        return A
    if not torch.empty((), dtype=work_dtype).is_floating_point():
        raise TypeError(f"work_dtype must be a floating dtype, got {work_dtype}")
    return Promoted(A, work_dtype)


def _fits(nbytes: int, storage: Any, device: torch.device) -> bool:
    if storage not in ("device", "host"):  # disk or a custom factory: not held in memory here
        return True
    where = device if storage == "device" else torch.device("cpu")
    return nbytes <= 0.9 * memory.available_bytes(where)


def resolve_work_dtype(
    work_dtype: WorkDtype,
    op_dtype: torch.dtype,
    dim: int,
    count: int,
    storage: Any,
    device: Any,
    what: str,
    stacklevel: int = 3,
    space: Any = None,
) -> torch.dtype:
    """The dtype of the Krylov arithmetic under the one rule of this module.

    Args:
        work_dtype: ``"auto"``, ``None`` (the operator's dtype) or a float dtype.
        op_dtype: the operator's dtype.
        dim, count: the basis holds ``count`` vectors of length ``dim``.
        storage: where the basis lives (``"device"``, ``"host"``, ``"disk"`` or a factory).
        device: the operator's device.
        what: the algorithm, for the warning.
        stacklevel: of the warning (3: the caller of the function that calls this one).
        space: the operator's vector space (:mod:`curvscope.linalg.space`): on sharded vectors
            ``dim`` is this rank's length, and float64 is chosen only where every rank can hold it
            (ranks differ in length and free memory; one computing in another dtype would
            desynchronise the collectives).

    Example:
        >>> import torch
        >>> resolve_work_dtype("auto", torch.float32, 10, 3, "device", "cpu", "eigsh")
        torch.float64
        >>> resolve_work_dtype(None, torch.float32, 10, 3, "device", "cpu", "eigsh")
        torch.float32
    """
    floor = torch.float32 if torch.finfo(op_dtype).bits < 32 else op_dtype
    if work_dtype is None:
        return floor
    if isinstance(work_dtype, str):
        if work_dtype != "auto":
            raise ValueError(f"work_dtype must be 'auto', None or a torch float dtype, got {work_dtype!r}")
        fits = op_dtype == torch.float64 or _fits(memory.vectors_bytes(dim, count, torch.float64), storage, device)
        if space is not None and space.sharded:
            fits = not space.any(not fits)
        if fits:
            return torch.float64
        warnings.warn(
            f"{what}: a float64 basis ({count} vectors of D={dim}) does not fit in memory, so the Krylov "
            f"arithmetic runs in {floor}: certification is limited by {floor} round-off. Pass "
            f"storage='disk' (or 'host') to keep float64.",
            stacklevel=stacklevel,
        )
        return floor
    if not isinstance(work_dtype, torch.dtype) or not work_dtype.is_floating_point:
        raise TypeError(f"work_dtype must be 'auto', None or a torch float dtype, got {work_dtype!r}")
    if torch.finfo(work_dtype).bits < 32:
        raise ValueError(
            f"work_dtype={work_dtype} cannot keep a Krylov basis orthogonal: use 'auto' (float64), "
            f"torch.float32 or torch.float64; products still run in the operator's {op_dtype}"
        )
    return work_dtype


def measured_noise_floor(A: Any) -> float | None:
    """``A.noise_floor`` as a positive float, or ``None`` when the operator does not measure it."""
    value = getattr(A, "noise_floor", None)
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"the operator's noise_floor must be a finite number >= 0, got {value}")
    return value


def resolve_tol(
    tol: float | None, A: Any, op_dtype: torch.dtype, work_dtype: torch.dtype, what: str, stacklevel: int = 3
) -> tuple[float, str]:
    """``(tol, reason)``: the default tolerance, or the given one raised to the noise floor with a warning.

    Example:
        >>> import torch
        >>> tol, why = resolve_tol(None, torch.eye(2, dtype=torch.float64), torch.float64, torch.float64, "eigsh")
        >>> f"{tol:.1e}", why
        ('1.5e-08', 'default: sqrt(eps) of the float64 arithmetic')
    """
    noise = measured_noise_floor(A)
    arith = math.sqrt(torch.finfo(work_dtype).eps)
    if noise is not None:
        floor, floor_why = NOISE_FACTOR * noise, f"{NOISE_FACTOR:g} x the operator's measured noise floor {noise:.1e}"
    else:
        floor, floor_why = torch.finfo(op_dtype).eps, f"one rounding unit of the operator's {op_dtype} products"
    if tol is None:
        if noise is not None and floor > arith:
            return floor, f"default: {floor_why}"
        dtype_sqrt = math.sqrt(torch.finfo(op_dtype).eps)
        if noise is None and dtype_sqrt > arith:
            return dtype_sqrt, (
                f"default: sqrt(eps) of the operator's {op_dtype} products (it does not measure its noise; "
                f"an operator with a noise_floor gets a tighter default)"
            )
        return arith, f"default: sqrt(eps) of the {str(work_dtype).removeprefix('torch.')} arithmetic"
    tol = float(tol)
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    if tol < floor:
        warnings.warn(
            f"{what}: tol={tol:.1e} is below what the products can resolve ({floor_why}); using tol={floor:.1e}",
            stacklevel=stacklevel,
        )
        return floor, f"given {tol:.1e}, raised to {floor:.1e} = {floor_why}"
    return tol, "given"
