"""The determinism probe and the measured noise floor of a curvature operator.

Before an operator's numbers are trusted, two things are measured once, on seeded random unit
vectors ``u₀, u₁``, with one block product ``A [u₀ u₁]`` and one more product of ``u₀``:

- **determinism**: ``A u₀`` computed again must agree with the first to ``sqrt(eps)`` of the compute
  dtype — else the curvature is not a fixed matrix (dropout, train-mode BatchNorm, augmentation) and
  :class:`NondeterministicProductError` names the usual causes. Rounding noise is far below that
  threshold (float32: ~1e-7 against 3.5e-4), so noise is never mistaken for randomness.
- **noise floor**: the size of the products' own rounding error relative to ``‖A‖``. For an operator
  below float64 the second product of ``u₀`` is computed in float64 (a twin operator on float64
  copies of the same parameters and data), so the error ``‖(A u₀)_dtype − (A u₀)_f64‖`` is
  measured directly. A float64 operator has no higher reference; its floor comes from the repeat
  difference and the symmetry defect ``|u₀ᵀAu₁ − u₁ᵀAu₀|``, scaled by ``√(D/2)`` because a random
  unit vector sees only ``1/√D`` of an error vector. Both are divided by ``max ‖A uᵢ‖``, a lower
  bound of ``‖A‖``, so the floor errs on the side of caution. It is never below ``eps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from curvscope.common import make_generator

F64 = torch.float64


class NondeterministicProductError(RuntimeError):
    """Two products with the same vector disagreed.

    Attributes:
        defect: their relative difference.
        reference: ``"repeat"`` (the same product computed again) or ``"float64"`` (a float64
            product of the same vector, for an operator below float64).
    """

    def __init__(self, message: str, defect: float = math.nan, reference: str = "repeat") -> None:
        super().__init__(message)
        self.defect, self.reference = defect, reference


@dataclass(frozen=True)
class ProbeReport:
    """What the probe measured (all relative to the norm estimate).

    Attributes:
        noise_floor: relative size of a product's rounding error, ``≥ eps(dtype)``.
        repeat_defect: ``‖A u₀ − (A u₀)'‖ / ‖A u₀‖`` of the repeated product (against float64
            for operators below float64).
        symmetry_defect: ``|u₀ᵀAu₁ − u₁ᵀAu₀| / max‖A uᵢ‖``.
        norm_estimate: ``max ‖A uᵢ‖``, a lower bound of ``‖A‖``.
        reference: ``"float64"`` (measured against a float64 product) or ``"repeat"``.
    """

    noise_floor: float
    repeat_defect: float
    symmetry_defect: float
    norm_estimate: float
    reference: str


def probe_vectors(dim: int, dtype: torch.dtype, device: torch.device, seed: int = 0) -> Tensor:
    """Two seeded random unit vectors ``[D, 2]`` (drawn in float64 on the CPU, then cast)."""
    U = torch.randn(dim, 2, generator=make_generator(seed), dtype=F64)
    return (U / U.norm(dim=0)).to(dtype=dtype, device=device)


def run_probe(
    apply: Callable[[Tensor], Tensor],
    dim: int,
    dtype: torch.dtype,
    device: torch.device,
    *,
    reference: Callable[[Tensor], Tensor | None] | None,
    check: bool = True,
    repeat: Callable[[Tensor], Tensor] | None = None,
    name: str,
) -> ProbeReport:
    """Measure determinism and the noise floor; raise if the operator is not a fixed matrix.

    Args:
        apply: the operator's product (without the probe) on a ``[D, K]`` block.
        reference: the same product in float64 (for operators below float64), or ``None``; it may
            return ``None`` to ask for a repeat instead (finite-difference products, whose own
            error would be taken for randomness against a float64 product).
        check: raise when the repeated product disagrees (``False``: only measure).
        repeat: the product recomputed from scratch (a fresh forward pass, no retained graph), so
            that randomness in the model shows; default ``apply``.
        name: the operator's name, for the error message.
    """
    U = probe_vectors(dim, dtype, device)
    Y = apply(U).to(F64)
    ref = None if reference is None else reference(U[:, :1].to(F64))
    if ref is not None:
        again, kind = ref[:, 0], "float64"
    else:
        again, kind = (repeat or apply)(U[:, :1]).to(F64)[:, 0], "repeat"
    eps = torch.finfo(dtype).eps
    norm = max(Y.norm(dim=0).max().item(), torch.finfo(F64).tiny)
    repeat = (again - Y[:, 0]).norm().item() / max(Y[:, 0].norm().item(), torch.finfo(F64).tiny)
    U64 = U.to(F64)
    symmetry = abs(U64[:, 0] @ Y[:, 1] - U64[:, 1] @ Y[:, 0]).item() / norm
    if check and repeat > math.sqrt(eps) and Y[:, 0].norm().item() > 0:
        causes = (
            "dropout active (use mode='eval'), BatchNorm in train mode (use mode='eval'), random data "
            "augmentation or a loader that draws new samples (use a fixed dataset), or a model with randomness "
            "in forward"
        )
        if kind == "float64":  # a precision defect (e.g. ReLU / max-pool kinks that flip) looks the same
            what = (
                f"a {dtype} product differs from the float64 product of the same vector by {repeat:.2e} (relative; "
                f"rounding in {dtype} would explain at most {math.sqrt(eps):.1e}). Either the {dtype} products are "
                f"far less accurate than rounding (e.g. ReLU or max-pool kinks that flip between precisions: use "
                f"dtype=torch.float64), or the curvature is not a fixed matrix: {causes}"
            )
        else:
            what = (
                f"the same product computed twice differs by {repeat:.2e} (relative; rounding in {dtype} would "
                f"explain at most {math.sqrt(eps):.1e}). The curvature is not a fixed matrix. Likely causes: {causes}"
            )
        raise NondeterministicProductError(
            f"{name}: {what}. Pass probe=False only if you accept this.", defect=repeat, reference=kind
        )
    if kind == "float64":
        error = (again - Y[:, 0]).norm().item() / norm
    else:
        error = max(repeat, symmetry * math.sqrt(dim / 2))
    return ProbeReport(max(eps, error), repeat, symmetry, norm, kind)
