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

Conventions (as every curvscope algorithm): ``seed`` (int or generator), ``progress``,
``block_size`` (columns per product ``A @ X``, for every product of every method),
``work_dtype`` (probes, sketches and their QR in float64 on a lower-precision operator by
default; products in the operator's dtype) and ``checkpoint`` (a file where finished product
blocks are saved with the operator's fingerprint; a killed run resumes from them, and a
checkpoint made for another operator raises :class:`~curvscope.operators.fingerprint.StaleStateError`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from curvscope.common import SeedLike, Status, as_status, make_generator, make_progress
from curvscope.io import load_tensors, save_tensors
from curvscope.linalg.checkpoint import jsonable, load_state, save_state
from curvscope.linalg.density_runs import fingerprint_of
from curvscope.linalg.lanczos import check_operator
from curvscope.linalg.precision import WorkDtype, promote, resolve_work_dtype
from curvscope.linalg.products import check_product
from curvscope.linalg.space import LocalSpace, space_of
from curvscope.operators.fingerprint import check_fingerprint

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
        status: :class:`~curvscope.common.Status` ``completed`` (the whole budget ran; trust
            ``estimate ± stderr``) or ``exact`` (the sketch spans the range of ``A``).
        message: what happened.
    """

    estimate: float
    stderr: float
    samples: Tensor
    method: str
    num_matvecs: int
    wall_time: float
    status: Status
    message: str

    def save(self, path: str | os.PathLike) -> None:
        """Write to a safetensors file atomically."""
        keys = ("estimate", "stderr", "method", "num_matvecs", "wall_time", "status", "message")
        save_tensors(path, {"samples": self.samples}, {k: getattr(self, k) for k in keys})

    @classmethod
    def load(cls, path: str | os.PathLike) -> TraceResult:
        """Read a file written by :meth:`save`."""
        t, meta = load_tensors(path)
        return cls(samples=t["samples"], **{**meta, "status": as_status(meta["status"])})


@dataclass(frozen=True)
class DiagonalResult:
    """A diagonal estimate.

    Attributes:
        estimate: ``diag A`` estimate ``[D]`` (a sharded operator: this rank's entries ``[d_local]``).
        stderr: per-entry standard error ``[D]``.
        method: estimator name.
        num_matvecs: products spent.
        wall_time: seconds.
        status: :class:`~curvscope.common.Status` ``completed`` or ``exact``.
        message: what happened.
    """

    estimate: Tensor
    stderr: Tensor
    method: str
    num_matvecs: int
    wall_time: float
    status: Status
    message: str

    def save(self, path: str | os.PathLike) -> None:
        """Write to a safetensors file atomically."""
        keys = ("method", "num_matvecs", "wall_time", "status", "message")
        save_tensors(path, {"estimate": self.estimate, "stderr": self.stderr}, {k: getattr(self, k) for k in keys})

    @classmethod
    def load(cls, path: str | os.PathLike) -> DiagonalResult:
        """Read a file written by :meth:`save`."""
        t, meta = load_tensors(path)
        return cls(**t, **{**meta, "status": as_status(meta["status"])})


# ---------------------------------------------------------------------------- block products
Reduce = Callable[[Tensor, Tensor], Tensor]


def _identity(X: Tensor, Y: Tensor) -> Tensor:
    return Y


def _quadratic(X: Tensor, Y: Tensor) -> Tensor:
    return (X * Y).sum(0)


def _hadamard(X: Tensor, Y: Tensor) -> Tensor:
    return X * Y


class _Products:
    """``A @ X`` in column blocks of ``block_size``, with a progress bar and a checkpoint of finished blocks.

    Every product call is a named *stage*; what is kept of a block is ``reduce(X_block, (A X)_block)``
    (e.g. only ``zᵀAz`` for Hutchinson). The checkpoint holds the finished part of every stage and the
    generator state at the start of the run: a resumed run redraws the same probes and skips
    the saved blocks.
    """

    def __init__(self, A: Any, original: Any, block_size: int | None, bar: Any, checkpoint: Any, config: dict, gen):
        if block_size is not None and int(block_size) < 1:
            raise ValueError(f"block_size must be a positive number of columns, got {block_size}")
        self.A, self.bs, self.bar, self.path, self.config = A, block_size, bar, checkpoint, config
        self.saved: dict[str, Tensor] = {}
        self.fingerprint = None
        if checkpoint is not None:
            self.fingerprint = fingerprint_of(original)
            state = load_state(checkpoint, config, gen)  # restores the generator to the run's start
            if state is not None:
                check_fingerprint(state[1].get("fingerprint"), self.fingerprint, f"trace checkpoint {checkpoint}")
                self.saved = state[0]
        self._start = gen.get_state()

    def __call__(self, X: Tensor, stage: str, reduce: Reduce = _identity) -> Tensor:
        n = X.shape[1]
        bs = n if self.bs is None else int(self.bs)
        done = self.saved.get(stage)
        parts = [] if done is None else [done.to(device=X.device, dtype=X.dtype)]
        start = 0 if done is None else done.shape[-1]
        self.bar.update(start)
        for s in range(start, n, bs):
            Xb = X[:, s : s + bs]
            Y = check_product(Xb, self.A @ Xb, self.config["what"])
            self.bar.update(Y.shape[1])
            parts.append(reduce(Xb, Y))
            if self.path is not None:
                self._save(stage, torch.cat(parts, -1))
        return torch.cat(parts, -1) if len(parts) > 1 else parts[0]

    def _save(self, stage: str, value: Tensor) -> None:
        self.saved[stage] = value
        gen = torch.Generator()
        gen.set_state(self._start)
        save_state(self.path, self.config, gen, self.saved, {"fingerprint": self.fingerprint})


def _setup(A, method, num_matvecs, seed, block_size, progress, checkpoint, work_dtype, what, probe="rademacher"):
    """Operator in the working dtype, generator, products and the relative rank tolerance of a run."""
    D, op_dtype, device = check_operator(A)
    space = space_of(A)
    if space.sharded and checkpoint is not None:
        raise ValueError(f"{what}: checkpoint= is not supported on a sharded operator (vectors split over ranks)")
    wd = resolve_work_dtype(work_dtype, op_dtype, space.local_dim, 2 * num_matvecs, "device", device, what, space=space)
    W = promote(A, wd)
    gen = make_generator(seed)
    config = {"what": what, "method": method, "D": D, "num_matvecs": num_matvecs, "probe": probe,
              "block_size": block_size, "work_dtype": jsonable(wd), "dtype": jsonable(op_dtype)}  # fmt: skip
    bar = make_progress(num_matvecs, progress, what)
    mv = _Products(W, A, block_size, bar, checkpoint, config, gen)
    # "exact" needs Y rank deficient beyond the products' round-off; half-precision products are too
    # noisy to tell a small bulk from round-off (bf16: 0.4%), so they never claim exactness this way
    op_eps = torch.finfo(op_dtype).eps
    rank_tol = 1e3 * torch.finfo(wd).eps if op_eps > 1e-4 else max(1e3 * torch.finfo(wd).eps, 10 * op_eps)
    return (space if space.sharded else D), wd, device, gen, mv, rank_tol


def _mean_se(x: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    n = x.shape[dim]
    se = x.std(dim=dim) / math.sqrt(n) if n > 1 else torch.full_like(x.mean(dim), math.nan)
    return x.mean(dim), se


def _check(num_matvecs: int, least: int, method: str) -> None:
    if num_matvecs < least:
        raise ValueError(f"{method} needs num_matvecs ≥ {least}, got {num_matvecs}")


def _xsketch(mv: _Products, D, n: int, gen, probe, dtype, device, rank_tol: float):
    """Shared XTrace/XDiag sketch: Ω, Y = AΩ = QR, Z = AQ, normalised columns S of R^{-T}; or None if R is singular.

    On sharded vectors ``R`` comes from Gram–Schmidt twice (:meth:`ShardedSpace.qr`), whose dependent
    columns have a zero diagonal entry (Householder: round-off), caught by the same rank test.
    """
    sp = _space(D)
    Om = sp.probes(probe, n, gen, dtype, device)
    Y = mv(Om, "Y")
    Q, R = sp.qr(Y)
    Z = mv(Q, "Z")
    d = R.diagonal().abs()
    if float(d.min()) <= rank_tol * float(d.max()):
        return Om, Y, Q, R, Z, None  # Y is rank deficient: range(A) ⊆ span(Q)
    S = torch.linalg.solve_triangular(R.T, torch.eye(n, dtype=dtype, device=device), upper=False)
    S = S / S.norm(dim=0, keepdim=True)
    return Om, Y, Q, R, Z, S


# ------------------------------------------------------------------------------- estimators
def _space(D: int | LocalSpace) -> LocalSpace:
    """The runs receive ``D`` (whole vectors) or a sharded space (see :mod:`curvscope.linalg.space`)."""
    return D if isinstance(D, LocalSpace) else LocalSpace(D)


def _hutchinson(mv, D, m, gen, probe, dtype, device, rank_tol):
    sp = _space(D)
    samples = sp.reduce(mv(sp.probes(probe, m, gen, dtype, device), "AZ", _quadratic))
    est, se = _mean_se(samples)
    return est, se, samples, m, Status.COMPLETED, ""


def _hutchpp(mv, D, m, gen, probe, dtype, device, rank_tol):
    k = m // 3
    n_g = m - 2 * k
    sp = _space(D)
    Q = sp.qr(mv(sp.probes(probe, k, gen, dtype, device), "AS"))[0]  # sharded: dependent columns → 0
    low = sp.reduce((Q * mv(Q, "AQ")).sum())
    G = sp.probes(probe, n_g, gen, dtype, device)
    Gp = G - Q @ sp.inner(Q, G)
    samples = sp.reduce(mv(Gp, "AG", _quadratic))
    mean, se = _mean_se(samples)
    return low + mean, se, samples, m, Status.COMPLETED, ""


def _xtrace(mv, D, m, gen, probe, dtype, device, rank_tol):
    n = m // 2
    sp = _space(D)
    Om, Y, Q, _, Z, S = _xsketch(mv, D, n, gen, probe, dtype, device, rank_tol)
    H = sp.inner(Q, Z)
    if S is None:
        est = torch.trace(H)
        msg = "the sketch spans the range of A: the trace is exact"
        return est, torch.zeros((), dtype=dtype), est.reshape(1), 2 * n, Status.EXACT, msg
    W = sp.inner(Q, Om)
    c = (S * W).sum(0)
    Bm = W - S * c
    U = Om - Q @ Bm
    AU = Y - Z @ Bm
    samples = torch.trace(H) - (S * (H @ S)).sum(0) + sp.reduce((U * AU).sum(0))
    est, se = _mean_se(samples)
    return est, se, samples, 2 * n, Status.COMPLETED, ""


TRACE_RUNS = {"hutchinson": (_hutchinson, 1), "hutch++": (_hutchpp, 3), "xtrace": (_xtrace, 4)}


def trace(
    A: Any,
    method: str = "xtrace",
    num_matvecs: int = 60,
    *,
    seed: SeedLike = 0,
    probe: str = "rademacher",
    block_size: int | None = None,
    progress: bool | None = None,
    work_dtype: WorkDtype = "auto",
    checkpoint: str | os.PathLike | None = None,
) -> TraceResult:
    """Estimate ``tr A`` with a standard error.

    Args:
        A: symmetric operator (``@``, ``shape``, ``dtype``, ``device``).
        method: ``"hutchinson"``, ``"hutch++"`` or ``"xtrace"``.
        num_matvecs: product budget ``m`` (Hutch++ uses ``3⌊m/3⌋`` … all ``m``, XTrace ``2⌊m/2⌋``).
        seed: int or ``torch.Generator`` for the probes.
        probe: ``"rademacher"`` (default) or ``"gaussian"``.
        block_size: columns per product ``A @ X`` for every product (default: one block per
            stage); memory of a product is ``block_size · D``.
        progress: show a progress bar (default ``None``: only on a terminal).
        work_dtype: dtype of probes, sketches and their QR (``"auto"``: float64 when it fits, see
            :mod:`curvscope.linalg.precision`); products run in ``A.dtype``.
        checkpoint: a file where each finished product block is saved (only ``zᵀAz`` for
            Hutchinson) with the operator's fingerprint; the same call with the same file resumes
            and returns the uninterrupted result; another operator raises ``StaleStateError``.

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
    if method not in TRACE_RUNS:
        raise ValueError(f"unknown trace method {method!r}; valid: {TRACE_METHODS}")
    run, least = TRACE_RUNS[method]
    _check(num_matvecs, least, method)
    D, wd, device, gen, mv, rank_tol = _setup(
        A, method, num_matvecs, seed, block_size, progress, checkpoint, work_dtype, f"trace ({method})", probe
    )
    try:
        est, se, samples, used, status, msg = run(mv, D, num_matvecs, gen, probe, wd, device, rank_tol)
    finally:
        mv.bar.close()
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


def _diag_hutchinson(mv, D, m, gen, dtype, device, rank_tol):
    est, se = _mean_se(mv(_space(D).probes("rademacher", m, gen, dtype, device), "AZ", _hadamard), dim=1)
    return est, se, m, Status.COMPLETED, ""


def _xdiag(mv, D, m, gen, dtype, device, rank_tol):
    n = m // 2
    Om, Y, Q, R, Z, S = _xsketch(mv, D, n, gen, "rademacher", dtype, device, rank_tol)
    base = (Q * Z).sum(1)
    if S is None:
        return (
            base,
            torch.zeros_like(base),
            2 * n,
            Status.EXACT,
            "the sketch spans the range of A: the diagonal is exact",
        )
    QS, ZS = Q @ S, Z @ S
    coef = R - S * (S * R).sum(0)
    samples = base[:, None] - QS * ZS + Om * (Y - Q @ coef)
    est, se = _mean_se(samples, dim=1)
    return est, se, 2 * n, Status.COMPLETED, ""


DIAG_RUNS = {"hutchinson": (_diag_hutchinson, 1), "xdiag": (_xdiag, 4)}


def diagonal(
    A: Any,
    method: str = "xdiag",
    num_matvecs: int = 60,
    *,
    seed: SeedLike = 0,
    block_size: int | None = None,
    progress: bool | None = None,
    work_dtype: WorkDtype = "auto",
    checkpoint: str | os.PathLike | None = None,
) -> DiagonalResult:
    """Estimate ``diag A`` ``[D]`` with per-entry standard errors (Rademacher probes).

    Args:
        A: symmetric operator.
        method: ``"hutchinson"`` or ``"xdiag"``.
        num_matvecs: product budget (XDiag uses ``2⌊m/2⌋``).
        seed: int or ``torch.Generator`` for the probes.
        block_size: columns per product ``A @ X`` (default: one block per stage).
        progress: show a progress bar (default ``None``: only on a terminal).
        work_dtype: dtype of probes, sketches and their QR (see :func:`trace`).
        checkpoint: a file of finished product blocks (see :func:`trace`).

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
    if method not in DIAG_RUNS:
        raise ValueError(f"unknown diagonal method {method!r}; valid: {DIAG_METHODS}")
    run, least = DIAG_RUNS[method]
    _check(num_matvecs, least, method)
    D, wd, device, gen, mv, rank_tol = _setup(
        A, method, num_matvecs, seed, block_size, progress, checkpoint, work_dtype, f"diagonal ({method})"
    )
    try:
        est, se, used, status, msg = run(mv, D, num_matvecs, gen, wd, device, rank_tol)
    finally:
        mv.bar.close()
    return DiagonalResult(
        estimate=est.detach().to("cpu", torch.float64),
        stderr=se.detach().to("cpu", torch.float64),
        method=method,
        num_matvecs=used,
        wall_time=time.perf_counter() - t0,
        status=status,
        message=msg or f"{method} with {used} products",
    )
