"""Stochastic trace and diagonal estimators with standard errors.

Trace of a symmetric ``A`` (``D x D``) from ``m`` products:

- **Hutchinson** (1989): ``tr A ≈ (1/m) Σ z_iᵀ A z_i`` with Rademacher ``z_i``; variance
  ``2 ‖A‖_F² − 2 Σ A_jj²`` per sample.
- **Hutch++** (Meyer, Musco, Musco & Woodruff 2021): ``m/3`` products sketch
  ``Q = orth(A S)``, ``m/3`` give ``tr(Qᵀ A Q)`` exactly, ``m/3`` run Hutchinson on
  ``(I − QQᵀ) A (I − QQᵀ)``. Error ``O(1/m)`` instead of ``O(1/√m)`` when the spectrum decays.
- **XTrace** (Epperly, Tropp & Webber 2024): ``m/2`` test vectors ``Ω``, ``Y = AΩ = QR``;
  for each ``i`` the Hutch++ estimate that uses ``Q_(i) = orth(Y without column i)`` as
  the sketch and ``ω_i`` as the Hutchinson probe, averaged over ``i`` (exchangeable, so
  every product serves both roles). With ``s_i`` the normalised ``i``-th column of
  ``R^{-ᵀ}``, ``Q_(i)Q_(i)ᵀ = Q(I − s_i s_iᵀ)Qᵀ``, so all ``m/2`` estimates cost
  ``O(D m²)`` flops and ``m`` products.

Diagonal: Hutchinson (``z ⊙ Az`` averaged; Bekas, Kokiopoulou & Saad 2007) and XDiag
(Epperly, Tropp & Webber 2024: ``diag(Q_(i)Q_(i)ᵀA) + ω_i ⊙ (I − Q_(i)Q_(i)ᵀ) A ω_i``,
averaged over ``i``).

Standard errors: the sample standard deviation of the per-probe (or per-``i``)
estimates over ``√n``. For XTrace/XDiag the ``n`` estimates are exchangeable, not
independent; Epperly et al. use the same formula as an error estimate.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from curvscope.io import load_tensors, save_tensors
from curvscope.linalg.lanczos import check_operator
from curvscope.linalg.sampling import SeedLike, make_generator, probes

TRACE_METHODS = ("hutchinson", "hutch++", "xtrace")
DIAG_METHODS = ("hutchinson", "xdiag")


@dataclass(frozen=True)
class TraceResult:
    """A trace estimate.

    Attributes:
        estimate: the estimate of ``tr A``.
        stderr: its standard error (0 when the estimate is exact).
        samples: the per-probe (Hutchinson, Hutch++ residual part) or per-``i`` (XTrace) estimates ``[n]``.
        method: estimator name.
        num_matvecs: products spent.
        wall_time: seconds.
        status: ``"completed"`` or ``"exact"`` (the sketch spans the range of ``A``).
        message: what happened.
    """

    estimate: float
    stderr: float
    samples: Tensor
    method: str
    num_matvecs: int
    wall_time: float
    status: str
    message: str

    def save(self, path: str | os.PathLike) -> None:
        """Write to a safetensors file atomically."""
        keys = ("estimate", "stderr", "method", "num_matvecs", "wall_time", "status", "message")
        save_tensors(path, {"samples": self.samples}, {k: getattr(self, k) for k in keys})

    @classmethod
    def load(cls, path: str | os.PathLike) -> TraceResult:
        """Read a file written by :meth:`save`."""
        t, meta = load_tensors(path)
        return cls(samples=t["samples"], **meta)


@dataclass(frozen=True)
class DiagonalResult:
    """A diagonal estimate.

    Attributes:
        estimate: ``diag A`` estimate ``[D]``.
        stderr: per-entry standard error ``[D]``.
        method: estimator name.
        num_matvecs: products spent.
        wall_time: seconds.
        status: ``"completed"`` or ``"exact"``.
        message: what happened.
    """

    estimate: Tensor
    stderr: Tensor
    method: str
    num_matvecs: int
    wall_time: float
    status: str
    message: str

    def save(self, path: str | os.PathLike) -> None:
        """Write to a safetensors file atomically."""
        keys = ("method", "num_matvecs", "wall_time", "status", "message")
        save_tensors(path, {"estimate": self.estimate, "stderr": self.stderr}, {k: getattr(self, k) for k in keys})

    @classmethod
    def load(cls, path: str | os.PathLike) -> DiagonalResult:
        """Read a file written by :meth:`save`."""
        t, meta = load_tensors(path)
        return cls(**t, **meta)


def _mean_se(x: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    n = x.shape[dim]
    se = x.std(dim=dim) / math.sqrt(n) if n > 1 else torch.full_like(x.mean(dim), math.nan)
    return x.mean(dim), se


def _blocked(A: Any, Z: Tensor, block_size: int | None) -> Tensor:
    if block_size is None or block_size >= Z.shape[1]:
        return A @ Z
    return torch.cat([A @ Z[:, s : s + block_size] for s in range(0, Z.shape[1], block_size)], dim=1)


def _check(num_matvecs: int, least: int, method: str) -> None:
    if num_matvecs < least:
        raise ValueError(f"{method} needs num_matvecs ≥ {least}, got {num_matvecs}")


def _xsketch(A: Any, D: int, n: int, gen, probe, dtype, device):
    """Shared XTrace/XDiag sketch: Ω, Y = AΩ = QR, Z = AQ, normalised columns S of R^{-T}; or None if R is singular."""
    Om = probes(probe, D, n, gen, dtype, device)
    Y = A @ Om
    Q, R = torch.linalg.qr(Y)
    Z = A @ Q
    d = R.diagonal().abs()
    if float(d.min()) <= 1e3 * torch.finfo(dtype).eps * float(d.max()):
        return Om, Y, Q, R, Z, None  # Y is rank deficient: range(A) ⊆ span(Q)
    S = torch.linalg.solve_triangular(R.T, torch.eye(n, dtype=dtype, device=device), upper=False)
    S = S / S.norm(dim=0, keepdim=True)
    return Om, Y, Q, R, Z, S


def trace(
    A: Any,
    method: str = "xtrace",
    num_matvecs: int = 60,
    *,
    seed: SeedLike = 0,
    probe: str = "rademacher",
    block_size: int | None = None,
) -> TraceResult:
    """Estimate ``tr A`` with a standard error.

    Args:
        A: symmetric operator (``@``, ``shape``, ``dtype``, ``device``).
        method: ``"hutchinson"``, ``"hutch++"`` or ``"xtrace"``.
        num_matvecs: product budget ``m`` (Hutch++ uses ``3⌊m/3⌋`` … all ``m``, XTrace ``2⌊m/2⌋``).
        seed: seed or generator for the probes.
        probe: ``"rademacher"`` (default) or ``"gaussian"``.
        block_size: Hutchinson probes per block product (memory ``block_size · D``).

    Returns:
        A :class:`TraceResult`.

    Example:
        >>> import torch
        >>> from curvscope.operators import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.arange(1.0, 41.0, dtype=torch.float64)))
        >>> r = trace(A, "hutchinson", 20, seed=0)
        >>> r.estimate  # Rademacher probes are exact on a diagonal matrix
        820.0
        >>> r2 = trace(A, "xtrace", 30, seed=0)
        >>> abs(r2.estimate - 820.0) < 3 * r2.stderr + 1e-9, r2.num_matvecs
        (True, 30)
    """
    t0 = time.perf_counter()
    D, dtype, device = check_operator(A)
    gen = make_generator(seed)
    status, msg = "completed", ""
    if method == "hutchinson":
        _check(num_matvecs, 1, method)
        Z = probes(probe, D, num_matvecs, gen, dtype, device)
        samples = (Z * _blocked(A, Z, block_size)).sum(0)
        est, se = _mean_se(samples)
        used = num_matvecs
    elif method == "hutch++":
        _check(num_matvecs, 3, method)
        k = num_matvecs // 3
        n_g = num_matvecs - 2 * k
        Q = torch.linalg.qr(A @ probes(probe, D, k, gen, dtype, device)).Q
        low = (Q * (A @ Q)).sum()
        G = probes(probe, D, n_g, gen, dtype, device)
        Gp = G - Q @ (Q.T @ G)
        samples = (Gp * (A @ Gp)).sum(0)
        m, se = _mean_se(samples)
        est, used = low + m, num_matvecs
    elif method == "xtrace":
        _check(num_matvecs, 4, method)
        n = num_matvecs // 2
        Om, Y, Q, _, Z, S = _xsketch(A, D, n, gen, probe, dtype, device)
        H = Q.T @ Z
        used = 2 * n
        if S is None:
            est, se = torch.trace(H), torch.zeros((), dtype=dtype)
            samples = est.reshape(1)
            status, msg = "exact", "the sketch spans the range of A: the trace is exact"
        else:
            W = Q.T @ Om
            c = (S * W).sum(0)
            Bm = W - S * c
            U = Om - Q @ Bm
            AU = Y - Z @ Bm
            samples = torch.trace(H) - (S * (H @ S)).sum(0) + (U * AU).sum(0)
            est, se = _mean_se(samples)
    else:
        raise ValueError(f"unknown trace method {method!r}; valid: {TRACE_METHODS}")
    return TraceResult(
        estimate=float(est),
        stderr=float(se),
        samples=samples.detach().to("cpu", torch.float64),
        method=method,
        num_matvecs=used,
        wall_time=time.perf_counter() - t0,
        status=status,
        message=msg or f"{method} with {used} products",
    )


def diagonal(
    A: Any,
    method: str = "xdiag",
    num_matvecs: int = 60,
    *,
    seed: SeedLike = 0,
    block_size: int | None = None,
) -> DiagonalResult:
    """Estimate ``diag A`` ``[D]`` with per-entry standard errors (Rademacher probes).

    Args:
        A: symmetric operator.
        method: ``"hutchinson"`` or ``"xdiag"``.
        num_matvecs: product budget (XDiag uses ``2⌊m/2⌋``).
        seed: seed or generator for the probes.
        block_size: Hutchinson probes per block product.

    Returns:
        A :class:`DiagonalResult`.

    Example:
        >>> import torch
        >>> from curvscope.operators import DenseOperator
        >>> M = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
        >>> diagonal(DenseOperator(M), "hutchinson", 3, seed=0).estimate.tolist()
        [1.0, 2.0, 3.0, 4.0]
    """
    t0 = time.perf_counter()
    D, dtype, device = check_operator(A)
    gen = make_generator(seed)
    status, msg = "completed", ""
    if method == "hutchinson":
        _check(num_matvecs, 1, method)
        Z = probes("rademacher", D, num_matvecs, gen, dtype, device)
        est, se = _mean_se(Z * _blocked(A, Z, block_size), dim=1)
        used = num_matvecs
    elif method == "xdiag":
        _check(num_matvecs, 4, method)
        n = num_matvecs // 2
        Om, Y, Q, R, Z, S = _xsketch(A, D, n, gen, "rademacher", dtype, device)
        base = (Q * Z).sum(1)
        used = 2 * n
        if S is None:
            est, se = base, torch.zeros_like(base)
            status, msg = "exact", "the sketch spans the range of A: the diagonal is exact"
        else:
            QS, ZS = Q @ S, Z @ S
            coef = R - S * (S * R).sum(0)
            samples = base[:, None] - QS * ZS + Om * (Y - Q @ coef)
            est, se = _mean_se(samples, dim=1)
    else:
        raise ValueError(f"unknown diagonal method {method!r}; valid: {DIAG_METHODS}")
    return DiagonalResult(
        estimate=est.detach().to("cpu", torch.float64),
        stderr=se.detach().to("cpu", torch.float64),
        method=method,
        num_matvecs=used,
        wall_time=time.perf_counter() - t0,
        status=status,
        message=msg or f"{method} with {used} products",
    )
