"""Symmetric test matrices with a prescribed spectrum: ``A = Q diag(λ) Qᵀ`` with a random orthogonal ``Q``.

Each spectrum is declared by name; ``make(name, D, seed)`` returns the dense float64
matrix, its eigenvalues (ascending) and eigenvectors, so a test knows the exact answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

DT = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_orthogonal(D: int, seed: int) -> Tensor:
    """Haar-distributed orthogonal ``[D, D]`` (QR of a Gaussian with the sign fix)."""
    Q, R = torch.linalg.qr(torch.randn(D, D, generator=_gen(seed), dtype=DT))
    return Q * torch.sign(torch.diagonal(R))


def _spiked(D: int, g: torch.Generator) -> Tensor:
    """A few well-separated spikes on a small positive bulk."""
    bulk = 0.05 * torch.rand(D - 5, generator=g, dtype=DT)
    return torch.cat([bulk, torch.tensor([2.0, 3.0, 5.0, 8.0, 13.0], dtype=DT)])


def _bulk_outliers(D: int, g: torch.Generator) -> Tensor:
    """Marchenko–Pastur-like bulk in [0, 1] plus 10 outliers in [4, 20] (the Hessian picture)."""
    bulk = torch.rand(D - 10, generator=g, dtype=DT) ** 2
    return torch.cat([bulk, torch.linspace(4.0, 20.0, 10, dtype=DT)])


def _clustered(D: int, g: torch.Generator) -> Tensor:
    """Top eigenvalues in tight clusters (gaps 1e-3 relative) on a uniform bulk."""
    bulk = torch.rand(D - 9, generator=g, dtype=DT)
    top = torch.tensor([3.0, 3.003, 3.006, 5.0, 5.005, 5.01, 9.0, 9.009, 9.018], dtype=DT)
    return torch.cat([bulk, top])


def _repeated(D: int, g: torch.Generator) -> Tensor:
    """Exactly repeated extreme eigenvalues (multiplicity 3 at the top, 2 at the bottom)."""
    bulk = 1.0 + torch.rand(D - 5, generator=g, dtype=DT)
    return torch.cat([torch.tensor([-1.0, -1.0], dtype=DT), bulk, torch.tensor([6.0, 6.0, 6.0], dtype=DT)])


def _negative(D: int, g: torch.Generator) -> Tensor:
    """Indefinite: a symmetric bulk in [-1, 1] plus outliers on both sides (early-training Hessian)."""
    bulk = 2 * torch.rand(D - 6, generator=g, dtype=DT) - 1
    return torch.cat([bulk, torch.tensor([-7.0, -4.0, -2.5, 3.0, 6.0, 10.0], dtype=DT)])


def _rank_deficient(D: int, g: torch.Generator) -> Tensor:
    """Rank D/4: a positive spectrum and an exact null space (cross-entropy Gauss–Newton)."""
    r = D // 4
    pos = 0.1 + 4 * torch.rand(r, generator=g, dtype=DT) ** 3
    return torch.cat([torch.zeros(D - r, dtype=DT), pos])


SPECTRA = {
    "spiked": _spiked,
    "bulk_outliers": _bulk_outliers,
    "clustered": _clustered,
    "repeated": _repeated,
    "negative": _negative,
    "rank_deficient": _rank_deficient,
}


@dataclass(frozen=True)
class TestMatrix:
    name: str
    A: Tensor  # [D, D]
    eigenvalues: Tensor  # [D], ascending
    eigenvectors: Tensor  # [D, D], columns match eigenvalues

    @property
    def norm(self) -> float:
        return float(self.eigenvalues.abs().max())


def make(name: str, D: int = 200, seed: int = 0) -> TestMatrix:
    """The test matrix ``name`` of size ``D`` (deterministic in ``seed``)."""
    lam = torch.sort(SPECTRA[name](D, _gen(1000 + seed))).values
    Q = random_orthogonal(D, seed)
    A = (Q * lam) @ Q.T
    return TestMatrix(name, 0.5 * (A + A.T), lam, Q)


class MatmulOnly:
    """The bare protocol (``@``, ``shape``, ``dtype``, ``device``) — not a curvscope LinearOperator."""

    def __init__(self, M: Tensor) -> None:
        self.M = M
        self.shape = tuple(M.shape)
        self.dtype = M.dtype
        self.device = M.device
        self.calls = 0

    def __matmul__(self, X: Tensor) -> Tensor:
        self.calls += 1
        return self.M @ X
