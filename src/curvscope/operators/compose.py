"""Operators built from other operators: sums, scaling, shifts, deflation, restrictions.

All of them keep symmetry when their parts are symmetric, forward block products to
their parts (so a ``[D, K]`` block stays one pass over the data), and never copy the
parent operator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from curvscope.operators.base import LinearOperator


def _same_space(ops: Sequence[LinearOperator]) -> None:
    first = ops[0]
    for op in ops[1:]:
        if op.shape != first.shape or op.dtype != first.dtype or op.device != first.device:
            raise ValueError(
                f"cannot combine operators of different spaces: {first!r} and {op!r} "
                f"(shape, dtype and device must match)"
            )


class SumOperator(LinearOperator):
    """``Σ_j c_j A_j`` for operators of one shape, dtype and device."""

    def __init__(self, operators: Sequence[LinearOperator], coefficients: Sequence[float] | None = None):
        operators = list(operators)
        if not operators:
            raise ValueError("SumOperator needs at least one operator")
        _same_space(operators)
        coefficients = [1.0] * len(operators) if coefficients is None else [float(c) for c in coefficients]
        if len(coefficients) != len(operators):
            raise ValueError(f"{len(operators)} operators but {len(coefficients)} coefficients")
        super().__init__(operators[0].shape[0], operators[0].dtype, operators[0].device)
        self.operators = operators
        self.coefficients = coefficients
        self.symmetric = all(op.symmetric for op in operators)

    def _matmat(self, X: Tensor) -> Tensor:
        out = self.coefficients[0] * (self.operators[0] @ X)
        for c, op in zip(self.coefficients[1:], self.operators[1:]):
            out = out + c * (op @ X)
        return out


class ScaledOperator(LinearOperator):
    """``c · A``."""

    def __init__(self, operator: LinearOperator, scalar: float) -> None:
        super().__init__(operator.shape[0], operator.dtype, operator.device)
        self.operator = operator
        self.scalar = float(scalar)
        self.symmetric = operator.symmetric

    def _matmat(self, X: Tensor) -> Tensor:
        return self.scalar * (self.operator @ X)


class ShiftedOperator(LinearOperator):
    """``A − σ I`` (spectral shift; e.g. to find the bottom of the spectrum with a top solver)."""

    def __init__(self, operator: LinearOperator, sigma: float) -> None:
        super().__init__(operator.shape[0], operator.dtype, operator.device)
        self.operator = operator
        self.sigma = float(sigma)
        self.symmetric = operator.symmetric

    def _matmat(self, X: Tensor) -> Tensor:
        return self.operator @ X - self.sigma * X


class DeflatedOperator(LinearOperator):
    """``A − V diag(λ) Vᵀ``: removes known eigenpairs (``V`` ``[D, k]`` orthonormal, ``λ`` ``[k]``).

    With exact eigenpairs the deflated directions get eigenvalue 0 and the rest of the
    spectrum is unchanged.
    """

    def __init__(self, operator: LinearOperator, eigenvectors: Tensor, eigenvalues: Tensor) -> None:
        D = operator.shape[0]
        if eigenvectors.ndim != 2 or eigenvectors.shape[0] != D:
            raise ValueError(f"eigenvectors must be [{D}, k], got {tuple(eigenvectors.shape)}")
        if eigenvalues.shape != (eigenvectors.shape[1],):
            raise ValueError(
                f"eigenvalues must be [{eigenvectors.shape[1]}] to match the eigenvectors, "
                f"got {tuple(eigenvalues.shape)}"
            )
        super().__init__(D, operator.dtype, operator.device)
        self.operator = operator
        self.V = eigenvectors.to(operator.dtype).to(operator.device)
        self.lam = eigenvalues.to(operator.dtype).to(operator.device)
        self.symmetric = operator.symmetric

    def _matmat(self, X: Tensor) -> Tensor:
        return self.operator @ X - self.V @ (self.lam[:, None] * (self.V.T @ X))


class SubspaceOperator(LinearOperator):
    """``Pᵀ A P`` for a basis ``P`` ``[D, d]``: the curvature restricted to a subspace.

    With orthonormal columns this is the Hessian of the loss restricted to the affine
    subspace ``θ₀ + P w`` (Fort & Scherlis' hyperplane curvature ``H_d``).
    """

    def __init__(self, operator: LinearOperator, basis: Tensor) -> None:
        D = operator.shape[0]
        if basis.ndim != 2 or basis.shape[0] != D:
            raise ValueError(f"basis must be [{D}, d], got {tuple(basis.shape)}")
        super().__init__(basis.shape[1], operator.dtype, operator.device)
        self.operator = operator
        self.basis = basis.to(operator.dtype).to(operator.device)
        self.symmetric = operator.symmetric

    def _matmat(self, X: Tensor) -> Tensor:
        return self.basis.T @ (self.operator @ (self.basis @ X))


class IndexRestrictedOperator(LinearOperator):
    """``A[S, S]`` for an index set ``S``: the curvature block of a subset of coordinates.

    For a block of parameters the curvature operators can also be built directly with
    ``params=[...]`` (cheaper: only that block is differentiated); this wrapper works for
    any operator and any index set.
    """

    def __init__(self, operator: LinearOperator, indices: Tensor | Sequence[int]) -> None:
        D = operator.shape[0]
        idx = torch.as_tensor(indices, dtype=torch.long, device=operator.device).reshape(-1)
        if idx.numel() == 0:
            raise ValueError("the index set is empty")
        if idx.min() < 0 or idx.max() >= D:
            raise IndexError(f"indices must lie in [0, {D}), got range [{idx.min()}, {idx.max()}]")
        if torch.unique(idx).numel() != idx.numel():
            raise ValueError("the index set has repeated entries")
        super().__init__(idx.numel(), operator.dtype, operator.device)
        self.operator = operator
        self.indices = idx
        self.symmetric = operator.symmetric

    def _matmat(self, X: Tensor) -> Tensor:
        full = torch.zeros(self.operator.shape[0], X.shape[1], dtype=X.dtype, device=X.device)
        full[self.indices] = X
        return (self.operator @ full)[self.indices]


class LowRankOperator(LinearOperator):
    """``U diag(w) Uᵀ`` for ``U`` ``[D, r]`` and weights ``w`` ``[r]`` (PSD when ``w ≥ 0``)."""

    def __init__(self, factor: Tensor, weights: Tensor) -> None:
        if factor.ndim != 2 or weights.shape != (factor.shape[1],):
            raise ValueError(
                f"need factor [D, r] and weights [r], got {tuple(factor.shape)} and {tuple(weights.shape)}"
            )
        super().__init__(factor.shape[0], factor.dtype, factor.device)
        self.factor = factor
        self.weights = weights.to(factor.dtype).to(factor.device)

    def _matmat(self, X: Tensor) -> Tensor:
        return self.factor @ (self.weights[:, None] * (self.factor.T @ X))
