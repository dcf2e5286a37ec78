"""The vector space the Krylov algorithms work in: local storage, globally reduced inner products.

Every algorithm in :mod:`curvscope.linalg` touches vectors in a few ways only: it draws random
vectors, takes inner products and norms, and combines vectors linearly. The last is local
(each process combines the coordinates it holds); the first two are routed through a space:

- :class:`LocalSpace` (the default): a process holds whole vectors ``[D]``; inner products are
  plain tensor operations. Single-process and data-parallel operators use it (data-parallel
  products are all-reduced inside the operator, so vectors are replicated on every rank).
- :class:`ShardedSpace`: each rank holds the coordinates ``index`` of every vector
  (``[d_local]``); inner products are summed over the ranks, so every rank obtains the same
  scalars and follows the same path through the algorithm (no broadcasts, no rank-0 special case).
  A model sharded with FSDP (:mod:`curvscope.distributed.fsdp`) has such a space.

An operator announces its space as ``A.space``; anything without one is a :class:`LocalSpace`
of ``A.shape[0]``, so the algorithms have one implementation for all three cases.

Random draws are the same vectors in every space: a sharded space draws the full vector from the
generator and keeps its own coordinates, so a sharded run starts from exactly the probes of the
single-process run (bitwise), at the cost of one full ``[D, num]`` draw per call.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from curvscope.distributed.comm import all_reduce_sum
from curvscope.linalg.sampling import gaussian, probes


class LocalSpace:
    """Whole vectors in this process: ``local_dim == dim``, no reduction.

    Every method is the plain torch expression the algorithms used before spaces existed, so
    single-process results are unchanged bit for bit.

    Example:
        >>> import torch
        >>> s = LocalSpace(3)
        >>> s.inner(torch.eye(3, dtype=torch.float64)[:, :2], torch.ones(3, 1, dtype=torch.float64)).flatten().tolist()
        [1.0, 1.0]
    """

    sharded = False

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)
        self.local_dim = int(dim)

    def reduce(self, t: Tensor) -> Tensor:
        """Sum of ``t`` over the processes that share the vectors (here: ``t`` itself)."""
        return t

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any process that shares the vectors (a choice every rank must make alike)."""
        return bool(self.reduce(torch.tensor([1.0 if flag else 0.0], dtype=torch.float64)).item() > 0)

    def inner(self, A: Tensor, B: Tensor) -> Tensor:
        """``Aᵀ B`` for ``[d, m]`` and ``[d, k]`` blocks (``[m, k]``), or ``a·b`` for vectors."""
        return self.reduce(A @ B if A.ndim == 1 else A.T @ B)

    def coldots(self, A: Tensor, B: Tensor) -> Tensor:
        """Column-wise inner products ``(A * B).sum(0)``, ``[k]``."""
        return self.reduce((A * B).sum(0))

    def colnorms(self, X: Tensor) -> Tensor:
        """Column norms of ``X`` ``[d, k]``, ``[k]``."""
        return X.norm(dim=0)

    def norm(self, x: Tensor) -> Tensor:
        """Euclidean norm of the whole (global) vector or block."""
        return x.norm()

    def local(self, full: Tensor) -> Tensor:
        """The coordinates this process holds of a full ``[D, ...]`` tensor."""
        return full

    def gaussian(self, num: int, gen: torch.Generator, dtype: torch.dtype, device: Any) -> Tensor:
        """This process's rows of :func:`~curvscope.linalg.sampling.gaussian` ``(D, num)``."""
        return self.local(gaussian(self.dim, num, gen, dtype, device))

    def probes(self, kind: str, num: int, gen: torch.Generator, dtype: torch.dtype, device: Any) -> Tensor:
        """This process's rows of :func:`~curvscope.linalg.sampling.probes` ``(kind, D, num)``."""
        return self.local(probes(kind, self.dim, num, gen, dtype, device))

    def orthonormalize(self, X: Tensor) -> Tensor:
        """An orthonormal basis ``[d, k]`` of the columns of ``X`` (Householder QR)."""
        return torch.linalg.qr(X).Q

    def qr(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """``X = Q R`` with orthonormal ``Q`` ``[d, k]`` and upper-triangular ``R`` (Householder)."""
        return torch.linalg.qr(X)

    def gather(self, x: Tensor) -> Tensor | None:
        """The full vector(s) ``[D, ...]`` (here: ``x``)."""
        return x

    def check_local(self, x: Tensor, name: str) -> None:
        """Refuse a vector that does not have this process's length."""
        if x.shape[0] != self.local_dim:
            got = tuple(x.shape)
            raise ValueError(f"{name} must have {self.local_dim} rows (this process's coordinates), got {got}")


class ShardedSpace(LocalSpace):
    """Vectors of length ``dim`` of which this rank holds the coordinates ``index`` ``[d_local]``.

    The index sets of the ranks partition ``range(dim)``. Reductions are all-reduces over
    ``group``; a failed collective raises :class:`~curvscope.distributed.comm.DistributedError`.

    Args:
        dim: global length ``D``.
        index: global coordinates of this rank's entries, ``[d_local]`` (long).
        group: process group (default: the default group).
    """

    sharded = True

    def __init__(self, dim: int, index: Tensor, group: Any = None) -> None:
        super().__init__(dim)
        self.index = index.to(torch.long)
        self.local_dim = int(index.numel())
        self.group = group

    def reduce(self, t: Tensor) -> Tensor:
        """Sum of ``t`` over the ranks (a copy; identical on every rank)."""
        return all_reduce_sum(t.clone(), self.group)

    def colnorms(self, X: Tensor) -> Tensor:
        """Global column norms: local sums of squares, summed over the ranks."""
        return self.reduce((X * X).sum(0)).sqrt()

    def norm(self, x: Tensor) -> Tensor:
        """Global norm of ``x``."""
        return self.reduce((x * x).sum()).sqrt()

    def local(self, full: Tensor) -> Tensor:
        """Rows ``index`` of a full ``[D, ...]`` tensor."""
        return full[self.index.to(full.device)]

    def orthonormalize(self, X: Tensor) -> Tensor:
        """Cholesky QR twice (the Gram matrix is reduced over the ranks; Yamamoto et al. 2015)."""
        for _ in range(2):
            G = self.inner(X, X)
            R = torch.linalg.cholesky(G, upper=True)
            X = torch.linalg.solve_triangular(R, X, upper=True, left=False)
        return X

    def qr(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """``X = Q R`` by column-wise Gram–Schmidt twice (CGS2), each projection summed over the ranks.

        Householder QR needs whole columns. CGS2 keeps ``Q`` orthogonal to round-off and resolves a
        column's remaining norm down to ``eps·‖X‖`` (a Gram-matrix QR would stop at ``√eps``).
        A column whose remainder is below ``100·eps·max‖X_j‖`` is dependent: its ``R`` diagonal
        entry and its column of ``Q`` are zero (where Householder leaves round-off), so callers
        test ``R``'s diagonal as they do for a Householder ``R``. Costs ``2k`` small all-reduces.
        """
        k = X.shape[1]
        Q = torch.zeros_like(X)
        R = torch.zeros(k, k, dtype=X.dtype, device=X.device)
        if k == 0:
            return Q, R
        tol = 100 * torch.finfo(X.dtype).eps * float(self.colnorms(X).max())
        for j in range(k):
            z = X[:, j]
            for _ in range(2):  # twice is enough (Kahan–Parlett)
                c = self.reduce(Q[:, :j].T @ z)
                z = z - Q[:, :j] @ c
                R[:j, j] += c
            n = float(self.norm(z))
            if n > tol:
                Q[:, j], R[j, j] = z / n, n
        return Q, R

    def gather(self, x: Tensor) -> Tensor:
        """The full vector(s) on every rank: disjoint supports summed (exact: the others add zeros)."""
        full = torch.zeros((self.dim, *x.shape[1:]), dtype=x.dtype, device=x.device)
        full[self.index.to(x.device)] = x
        return self.reduce(full)


def space_of(A: Any) -> LocalSpace:
    """The vector space of operator ``A``: ``A.space``, or whole vectors of length ``A.shape[0]``."""
    space = getattr(A, "space", None)
    return LocalSpace(int(A.shape[0])) if space is None else space
