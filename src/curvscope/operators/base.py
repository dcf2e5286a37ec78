"""The linear-operator protocol every curvature operator and algorithm speaks.

An operator is a symmetric ``D x D`` matrix known only through products. Subclasses
implement one batched product ``_matmat(X)`` for ``X`` of shape ``[D, K]``; ``A @ v``
(``[D]``) and ``A @ V`` (``[D, K]``) are validated here once, so every algorithm gets
the same clear errors for a wrong length, dtype or device.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse.linalg

#: ``to_dense`` refuses above this many rows unless told otherwise (a float64 matrix of
#: this size is 1.3 GB).
DEFAULT_MAX_DENSE_DIM = 12_800


class LinearOperator:
    """A square linear operator ``A`` of shape ``(D, D)`` applied by products.

    Subclasses call ``super().__init__(dim, dtype, device)`` and implement
    :meth:`_matmat`, which receives a validated ``[D, K]`` tensor of the operator's
    dtype and device and returns ``A @ X`` of the same shape.

    Operators compose with ``+``, ``-``, scalar ``*`` and the helpers in
    :mod:`curvscope.operators.compose`.

    Example:
        >>> import torch
        >>> from curvscope.operators import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)))
        >>> (A @ torch.ones(3, dtype=torch.float64)).tolist()
        [1.0, 2.0, 3.0]
        >>> (2 * A - A).to_dense().diagonal().tolist()
        [1.0, 2.0, 3.0]
    """

    #: Whether the operator is symmetric by construction (all curvature operators are).
    symmetric: bool = True

    def __init__(self, dim: int, dtype: torch.dtype, device: torch.device | str) -> None:
        if dim <= 0:
            raise ValueError(f"an operator needs a positive dimension, got {dim}")
        self._dim = int(dim)
        self._dtype = dtype
        self._device = torch.device(device)

    # ------------------------------------------------------------------ protocol
    @property
    def shape(self) -> tuple[int, int]:
        """``(D, D)``."""
        return (self._dim, self._dim)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the products."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """Device the products are computed on."""
        return self._device

    def _matmat(self, X: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Return ``A @ X`` for a validated ``X`` of shape ``[D, K]``."""
        raise NotImplementedError

    def __matmul__(self, X: Tensor) -> Tensor:
        """Apply the operator to a vector ``[D]`` or a block ``[D, K]``."""
        X2 = self._check_input(X)
        Y = self._matmat(X2)
        return Y[:, 0] if X.ndim == 1 else Y

    def matvec(self, v: Tensor) -> Tensor:
        """``A @ v`` for ``v`` of shape ``[D]``."""
        if v.ndim != 1:
            raise ValueError(f"matvec expects a vector of shape [{self._dim}], got {tuple(v.shape)}")
        return self @ v

    def matmat(self, X: Tensor) -> Tensor:
        """``A @ X`` for ``X`` of shape ``[D, K]``."""
        if X.ndim != 2:
            raise ValueError(f"matmat expects a block of shape [{self._dim}, K], got {tuple(X.shape)}")
        return self @ X

    def _check_input(self, X: Tensor) -> Tensor:
        if not isinstance(X, Tensor):
            raise TypeError(f"an operator multiplies torch tensors, got {type(X).__name__}")
        if X.ndim not in (1, 2) or X.shape[0] != self._dim:
            raise ValueError(
                f"expected a vector [{self._dim}] or a block [{self._dim}, K], got shape "
                f"{tuple(X.shape)}: the operator acts on the flat parameter vector of length {self._dim}"
            )
        if X.dtype != self._dtype:
            raise TypeError(
                f"the operator works in {self._dtype} but the vector is {X.dtype}: convert it with .to({self._dtype})"
            )
        if X.device != self._device:
            raise ValueError(
                f"the operator lives on {self._device} but the vector is on {X.device}: "
                f"move it with .to('{self._device}')"
            )
        return X if X.ndim == 2 else X[:, None]

    # --------------------------------------------------------------- composition
    def __add__(self, other: LinearOperator) -> LinearOperator:
        from curvscope.operators.compose import SumOperator

        if not isinstance(other, LinearOperator):
            return NotImplemented
        return SumOperator([self, other])

    def __sub__(self, other: LinearOperator) -> LinearOperator:
        from curvscope.operators.compose import SumOperator

        if not isinstance(other, LinearOperator):
            return NotImplemented
        return SumOperator([self, other], coefficients=[1.0, -1.0])

    def __mul__(self, scalar: float) -> LinearOperator:
        from curvscope.operators.compose import ScaledOperator

        if isinstance(scalar, Tensor) and scalar.numel() == 1:
            scalar = scalar.item()
        if not isinstance(scalar, (int, float)):
            return NotImplemented
        return ScaledOperator(self, float(scalar))

    __rmul__ = __mul__

    def __neg__(self) -> LinearOperator:
        return self * -1.0

    def check_symmetric(self, num_probes: int = 4, seed: int = 0, rtol: float | None = None) -> float:
        """Debug check that ``uᵀ(A v) = vᵀ(A u)`` for random ``u, v``; returns the worst relative gap.

        Costs ``2 · num_probes`` products (one block). Raises :class:`ArithmeticError` when
        the gap exceeds ``rtol`` (default ``sqrt(eps)`` of the dtype).
        """
        g = torch.Generator().manual_seed(seed)
        X = torch.randn(self._dim, 2 * num_probes, generator=g, dtype=torch.float64).to(self._dtype).to(self._device)
        Y = self @ X
        U, V, AU, AV = X[:, :num_probes], X[:, num_probes:], Y[:, :num_probes], Y[:, num_probes:]
        a, b = (U * AV).sum(0), (V * AU).sum(0)
        scale = (U.norm(dim=0) * AV.norm(dim=0)).clamp(min=torch.finfo(self._dtype).tiny)
        gap = ((a - b).abs() / scale).max().item()
        rtol = symmetry_tolerance(self._dtype) if rtol is None else rtol
        if gap > rtol:
            raise ArithmeticError(
                f"{self!r} is not symmetric: |uᵀAv − vᵀAu| / (|u||Av|) = {gap:.2e} > {rtol:.1e}. A curvature "
                f"operator must be symmetric: check for a model that is not deterministic between passes "
                f"(dropout, train-mode BatchNorm) or a custom product with a bug."
            )
        return gap

    # --------------------------------------------------------------- fingerprint
    def fingerprint(self) -> dict:
        """What this operator measures, as a JSON-ready dict (see :mod:`curvscope.operators.fingerprint`).

        The default describes the type, shape and dtype and folds in every operator, tensor and
        number the instance holds (so composites such as ``A - σI`` or a deflation describe their
        parts). Curvature operators add the model, parameters, data and policy.
        """
        from curvscope.operators.fingerprint import describe_attributes

        return {"kind": type(self).__name__, "dim": self._dim, "dtype": str(self._dtype), **describe_attributes(self)}

    # ------------------------------------------------------------------- exports
    def to_dense(self, max_dim: int = DEFAULT_MAX_DENSE_DIM, chunk_size: int = 256) -> Tensor:
        """Materialise the operator as a ``[D, D]`` tensor by products with identity blocks.

        Args:
            max_dim: refuse above this dimension (the matrix would need ``D² · itemsize`` bytes).
            chunk_size: number of identity columns multiplied per block product.

        Raises:
            MemoryError: when ``D > max_dim``, with the memory the matrix would need.
        """
        D = self._dim
        if D > max_dim:
            itemsize = torch.empty((), dtype=self._dtype).element_size()
            raise MemoryError(
                f"to_dense of a {D} x {D} operator needs {D * D * itemsize / 2**30:.1f} GiB; it is "
                f"refused above max_dim={max_dim}. Use matrix-free algorithms (eigsh, "
                f"spectral_density) or raise max_dim if you have the memory."
            )
        out = torch.empty(D, D, dtype=self._dtype, device=self._device)
        for start in range(0, D, chunk_size):
            stop = min(D, start + chunk_size)
            E = torch.zeros(D, stop - start, dtype=self._dtype, device=self._device)
            E[torch.arange(start, stop), torch.arange(stop - start)] = 1
            out[:, start:stop] = self @ E
        return out

    def to_scipy(self) -> scipy.sparse.linalg.LinearOperator:
        """Wrap as a :class:`scipy.sparse.linalg.LinearOperator` (numpy in, numpy out).

        NumPy has no bfloat16: a bfloat16/float16 operator is exposed in float32 (products are
        still computed in the operator's dtype).
        """
        import numpy as np
        import scipy.sparse.linalg

        np_dtype = np.float64 if self._dtype == torch.float64 else np.float32

        def _mm(x: np.ndarray) -> np.ndarray:
            X = torch.as_tensor(np.ascontiguousarray(x), device=self._device).to(self._dtype)
            Y = self @ (X if X.ndim == 2 else X.reshape(-1))
            return (
                Y.detach().to(torch.float64 if np_dtype is np.float64 else torch.float32).cpu().numpy().reshape(x.shape)
            )

        return scipy.sparse.linalg.LinearOperator(
            self.shape, matvec=_mm, rmatvec=_mm, matmat=_mm, rmatmat=_mm, dtype=np_dtype
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(D={self._dim}, dtype={self._dtype}, device={self._device})"


class DenseOperator(LinearOperator):
    """An explicit matrix as an operator (ground truth in tests, small restricted problems).

    Args:
        matrix: ``[D, D]`` tensor. Symmetry is checked when ``check_symmetric`` is true.
    """

    def __init__(self, matrix: Tensor, check_symmetric: bool = False) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"DenseOperator needs a square matrix, got shape {tuple(matrix.shape)}")
        if check_symmetric:
            assert_symmetric(matrix, "DenseOperator matrix")
        super().__init__(matrix.shape[0], matrix.dtype, matrix.device)
        self.matrix = matrix

    def _matmat(self, X: Tensor) -> Tensor:
        return self.matrix @ X


def symmetry_tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance for symmetry checks: ``sqrt(eps)`` of the dtype, loose for round-off."""
    return math.sqrt(torch.finfo(dtype).eps)


def assert_symmetric(matrix: Tensor, what: str, rtol: float | None = None) -> None:
    """Raise if ``matrix`` is not symmetric to ``rtol`` (relative to its Frobenius norm)."""
    rtol = symmetry_tolerance(matrix.dtype) if rtol is None else rtol
    scale = torch.linalg.matrix_norm(matrix).item()
    asym = torch.linalg.matrix_norm(matrix - matrix.T).item()
    if asym > rtol * max(scale, torch.finfo(matrix.dtype).tiny):
        raise ArithmeticError(
            f"{what} is not symmetric: ||A - A^T||_F / ||A||_F = {asym / max(scale, 1e-300):.2e} "
            f"> {rtol:.1e}. A curvature matrix must be symmetric; this points to a wrong "
            f"derivative (e.g. torch.func.hessian on LayerNorm in torch 2.13) or a model that is "
            f"not deterministic between passes."
        )
