"""Symmetric Lanczos with full reorthogonalisation, for one start vector or a block of them.

For a symmetric ``A`` (``D x D``) and a unit start vector ``q₁``, ``m`` steps build an
orthonormal basis ``Q = [q₁ … q_m]`` ``[D, m]`` of the Krylov space and a tridiagonal
``T = tridiag(β, α, β)`` ``[m, m]`` with the Lanczos relation

    A Q = Q T + r e_mᵀ,    r = β_m q_{m+1} ⟂ Q.

Every new vector is reorthogonalised against the whole basis by classical Gram–Schmidt
twice ("twice is enough", Giraud, Langou & Rozložník 2005), with further passes when a
pass cancels more than half of the vector (Daniel, Gragg, Kaufman & Stewart 1976).
Without this, Lanczos returns ghost copies of outliers (Paige 1971; Parlett & Scott 1979).

A block start ``[D, B]`` runs ``B`` independent Lanczos processes in lock step: every step
is one block product ``A @ V`` ``[D, B]`` (one pass over the data for all runs), which is
how SLQ probes are run.

Breakdown (``β_j ≤ breakdown_tol · ‖T‖``) means the Krylov space is an invariant subspace:
its Ritz values are exact eigenvalues. ``breakdown="stop"`` ends that run (its quadrature
is then exact); ``breakdown="restart"`` continues with a fresh random vector orthogonal to
the basis (``β_j = 0``, ``T`` block diagonal), as eigensolvers need.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from curvscope.io import load_tensors, save_tensors
from curvscope.linalg.sampling import SeedLike, gaussian, make_generator
from curvscope.linalg.storage import BasisStorage, DeviceStorage, StorageFactory, make_storage

#: Reorthogonalise again while a pass keeps less than this fraction of the norm.
REORTH_ETA = 0.5
MAX_PASSES = 4


def check_operator(A: Any) -> tuple[int, torch.dtype, torch.device]:
    """``(D, dtype, device)`` of anything that speaks ``@``, ``shape``, ``dtype``, ``device``.

    Raises:
        TypeError: with what is missing and how to wrap a plain matrix.

    Example:
        >>> import torch
        >>> check_operator(torch.eye(3, dtype=torch.float64))  # a tensor speaks the protocol
        (3, torch.float64, device(type='cpu'))
    """
    missing = [a for a in ("shape", "dtype", "device") if not hasattr(A, a)]
    if missing or not hasattr(A, "__matmul__"):
        raise TypeError(
            f"{type(A).__name__} is not an operator: it lacks {missing or ['@']}. Wrap a matrix with "
            f"curvscope.DenseOperator(M), or give your object shape, dtype, device and __matmul__."
        )
    shape = tuple(A.shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"a symmetric operator must be square, got shape {shape}")
    if not torch.empty((), dtype=A.dtype).is_floating_point():
        raise TypeError(f"the operator's dtype must be floating point, got {A.dtype}")
    return int(shape[0]), A.dtype, torch.device(A.device)


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

    def __matmul__(self, X: Tensor) -> Tensor:
        return (self.A @ X.to(self.op_dtype)).to(self.dtype)


def promote(A: Any, work_dtype: torch.dtype | None) -> Any:
    """``A`` itself, or :class:`Promoted` when ``work_dtype`` differs from its dtype."""
    if work_dtype is None or work_dtype == A.dtype:
        return A
    if not torch.empty((), dtype=work_dtype).is_floating_point():
        raise TypeError(f"work_dtype must be a floating dtype, got {work_dtype}")
    return Promoted(A, work_dtype)


def default_breakdown_tol(dtype: torch.dtype) -> float:
    """``100 · eps`` of the dtype: below this ``β/‖T‖`` is round-off, not a new direction.

    Example:
        >>> import torch
        >>> default_breakdown_tol(torch.float64)
        2.220446049250313e-14
    """
    return 100.0 * torch.finfo(dtype).eps


def orthogonalize(
    storage: BasisStorage, W: Tensor, stop: int, extra: Tensor | None = None, min_passes: int = 2
) -> tuple[Tensor, Tensor, Tensor]:
    """Orthogonalise ``W`` against the first ``stop`` stored vectors (and ``extra``), CGS2+.

    Args:
        storage: the basis (``B`` runs).
        W: ``[D, B]`` (or ``[D, K]`` for ``B = 1``) vectors to orthogonalise.
        stop: number of leading basis vectors to orthogonalise against.
        extra: optional ``[D, p]`` orthonormal vectors every column is also made orthogonal
            to (deflated eigenvectors).
        min_passes: full passes always made; further passes (up to ``MAX_PASSES``) while a
            pass keeps less than ``REORTH_ETA`` of the norm (the Daniel–Gragg–Kaufman–Stewart
            test). ``1`` suits a vector whose large components were already removed.

    Returns:
        ``(h, W, norms)``: accumulated coefficients ``Qᵀ W₀`` ``[stop, B]``, the orthogonal
        remainder ``[D, B]`` and its column norms ``[B]``.

    Example:
        >>> import torch
        >>> from curvscope.linalg.storage import DeviceStorage
        >>> s = DeviceStorage(3, 2, 1, torch.float64, "cpu")
        >>> s.append(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
        >>> h, w, n = orthogonalize(s, torch.tensor([[2.0], [3.0], [0.0]], dtype=torch.float64), 1)
        >>> h.tolist(), w.flatten().tolist(), n.tolist()
        ([[2.0]], [0.0, 3.0, 0.0], [3.0])
    """
    h = torch.zeros(stop, W.shape[1], dtype=W.dtype, device=W.device)
    prev = W.norm(dim=0)
    norms = prev
    for p in range(MAX_PASSES):
        if stop > 0:
            c = storage.project(W, stop)
            W = W - storage.combine(c, stop)
            h = h + c
        if extra is not None and extra.shape[1] > 0:
            W = W - extra @ (extra.T @ W)
        norms = W.norm(dim=0)
        if p >= min_passes - 1 and bool((norms >= REORTH_ETA * prev).all()):
            break
        prev = norms
    return h, W, norms


@dataclass(frozen=True)
class LanczosResult:
    """The output of :func:`lanczos`.

    Attributes:
        alpha: diagonal of ``T``: ``[m]`` for one start vector, ``[B, m]`` for a block (float64).
        beta: ``beta[j] = ‖r_j‖`` couples ``q_{j+1}`` and ``q_{j+2}``; the last entry of a run
            is its residual norm ``‖r‖``. Same shape as ``alpha``; zero past a run's length.
        lengths: steps each run completed, ``[B]`` (shorter than ``m`` after a breakdown).
        basis: the stored ``q₁ … q_{m+1}`` (the last is ``r/‖r‖``), or ``None`` when not kept.
        num_matvecs: operator-vector products spent (a block of ``B`` counts ``B``).
        wall_time: seconds.
        status: ``"completed"``, ``"invariant_subspace"`` (some run broke down) or ``"interrupted"``.
        message: what happened, in words.
    """

    alpha: Tensor
    beta: Tensor
    lengths: Tensor
    basis: BasisStorage | None
    num_matvecs: int
    wall_time: float
    status: str
    message: str

    @property
    def num_runs(self) -> int:
        """Number of independent runs ``B``."""
        return 1 if self.alpha.ndim == 1 else self.alpha.shape[0]

    @property
    def residual_norm(self) -> Tensor:
        """``‖r‖`` per run, ``[B]``."""
        a = self.beta.reshape(self.num_runs, -1)
        idx = (self.lengths - 1).clamp(min=0)
        return a[torch.arange(self.num_runs), idx] * (self.lengths > 0)

    def _ab(self, run: int) -> tuple[Tensor, Tensor, int]:
        if not 0 <= run < self.num_runs:
            raise IndexError(f"run {run} is outside the {self.num_runs} runs")
        n = int(self.lengths[run])
        a = self.alpha.reshape(self.num_runs, -1)[run, :n]
        b = self.beta.reshape(self.num_runs, -1)[run, :n]
        return a, b, n

    def tridiagonal(self, run: int = 0) -> Tensor:
        """``T`` of run ``run``, ``[m, m]`` float64."""
        a, b, _ = self._ab(run)
        return torch.diag(a) + torch.diag(b[:-1], 1) + torch.diag(b[:-1], -1)

    def ritz(self, run: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """Ritz values (ascending) ``[m]``, eigenvectors ``S`` of ``T`` ``[m, m]`` and residual bounds.

        The bound ``β_m |S[m-1, i]|`` equals ``‖A y_i − θ_i y_i‖`` for the Ritz vector
        ``y_i = Q s_i`` (exactly, when the Lanczos relation holds).
        """
        _, b, n = self._ab(run)
        if n == 0:
            empty = torch.zeros(0, dtype=torch.float64)
            return empty, torch.zeros(0, 0, dtype=torch.float64), empty
        theta, S = torch.linalg.eigh(self.tridiagonal(run))
        return theta, S, (b[-1] * S[-1]).abs()

    def quadrature(self, run: int = 0) -> tuple[Tensor, Tensor]:
        """Gauss quadrature of the spectral measure ``q₁ᵀ δ(A − t) q₁``: nodes ``θ`` and weights ``S[0]²``."""
        theta, S, _ = self.ritz(run)
        return theta, S[0] ** 2

    def basis_matrix(self, run: int = 0) -> Tensor:
        """``Q`` ``[D, m]`` of run ``run`` (needs the basis)."""
        if self.basis is None:
            raise ValueError("this result kept no basis: call lanczos(..., keep_basis=True)")
        return self.basis.matrix(run, int(self.lengths[run]))

    def residual(self, run: int = 0) -> Tensor:
        """``r = β_m q_{m+1}`` ``[D]`` of run ``run`` (needs the basis)."""
        if self.basis is None:
            raise ValueError("this result kept no basis: call lanczos(..., keep_basis=True)")
        n = int(self.lengths[run])
        q = self.basis.matrix(run, n + 1)[:, n]
        return q * self.residual_norm[run].to(q.dtype)

    def save(self, path: str | os.PathLike, include_basis: bool = False) -> None:
        """Write to a safetensors file atomically (the basis only when asked: ``B·m·D`` numbers)."""
        tensors = {"alpha": self.alpha, "beta": self.beta, "lengths": self.lengths}
        if include_basis and self.basis is not None:
            tensors["basis"] = torch.stack([self.basis.matrix(b) for b in range(self.num_runs)])
        meta = {k: getattr(self, k) for k in ("num_matvecs", "wall_time", "status", "message")}
        save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LanczosResult:
        """Read a file written by :meth:`save` (a saved basis comes back in a CPU :class:`DeviceStorage`)."""
        t, meta = load_tensors(path)
        basis = None
        if "basis" in t:
            Qs = t["basis"]  # [B, D, n]
            basis = DeviceStorage(Qs.shape[1], Qs.shape[2], Qs.shape[0], Qs.dtype, "cpu")
            for j in range(Qs.shape[2]):
                basis.append(Qs[:, :, j].T)
        return cls(t["alpha"], t["beta"], t["lengths"], basis, **meta)


def lanczos(
    A: Any,
    num_steps: int,
    v0: Tensor | None = None,
    *,
    seed: SeedLike = 0,
    storage: str | StorageFactory = "device",
    breakdown: str = "stop",
    breakdown_tol: float | None = None,
    keep_basis: bool = True,
    callback: Callable[[int, int], None] | None = None,
    work_dtype: torch.dtype | None = None,
) -> LanczosResult:
    """Run ``num_steps`` Lanczos steps with full reorthogonalisation.

    Args:
        A: symmetric operator (anything with ``@``, ``shape``, ``dtype``, ``device``).
        num_steps: steps ``m`` per run (clamped to ``D``); costs ``m`` products per run.
        v0: start vector ``[D]`` or a block ``[D, B]`` of independent starts (normalised
            here); default one Gaussian vector drawn from ``seed``.
        seed: seed or generator for the default start and for breakdown restarts.
        storage: where the ``B · (m+1)`` basis vectors live: ``"device"``, ``"host"``,
            ``"disk"`` or a factory (see :mod:`curvscope.linalg.storage`).
        breakdown: ``"stop"`` (end the run: the Krylov space is invariant) or ``"restart"``
            (continue with a random vector orthogonal to the basis, ``β = 0``).
        breakdown_tol: relative size of ``β`` treated as zero (default ``100·eps``).
        keep_basis: keep the basis in the result (otherwise its memory is released).
        callback: called as ``callback(step, num_matvecs)`` after every step (progress bars).
        work_dtype: dtype of the basis and the orthogonalisation (default: the operator's);
            ``torch.float64`` on a float32 operator removes float32 Gram–Schmidt round-off.

    Returns:
        A :class:`LanczosResult` with ``A Q = Q T + r e_mᵀ`` to round-off.

    Example:
        >>> import torch
        >>> from curvscope.operators import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.arange(1.0, 7.0, dtype=torch.float64)))
        >>> res = lanczos(A, 6, seed=0)
        >>> res.status, res.num_matvecs
        ('completed', 6)
        >>> [round(x, 8) for x in res.ritz()[0].tolist()]
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        >>> Q, T = res.basis_matrix(), res.tridiagonal()
        >>> bool(torch.allclose(A @ Q, Q @ T, atol=1e-12))  # exact: the space is invariant
        True
    """
    t0 = time.perf_counter()
    check_operator(A)
    A = promote(A, work_dtype)
    D, dtype, device = check_operator(A)
    if breakdown not in ("stop", "restart"):
        raise ValueError(f"breakdown must be 'stop' or 'restart', got {breakdown!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    gen = make_generator(seed)
    if v0 is None:
        V, single = gaussian(D, 1, gen, dtype, device), True
    else:
        if v0.ndim not in (1, 2) or v0.shape[0] != D:
            raise ValueError(f"v0 must be [{D}] or [{D}, B], got {tuple(v0.shape)}")
        single = v0.ndim == 1
        V = v0.reshape(D, -1).to(dtype=dtype, device=device)
    B = V.shape[1]
    norms = V.norm(dim=0)
    if bool((norms == 0).any()) or not bool(torch.isfinite(norms).all()):
        raise ValueError("a start vector is zero or not finite: pass nonzero finite columns in v0")
    V = V / norms
    m = min(int(num_steps), D)
    note = f" (num_steps={num_steps} clamped to D={D})" if m < num_steps else ""
    btol = default_breakdown_tol(dtype) if breakdown_tol is None else float(breakdown_tol)

    store = make_storage(storage, D, m + 1, B, dtype, device)
    store.append(V)
    alpha = torch.zeros(B, m, dtype=dtype, device=device)
    beta = torch.zeros(B, m, dtype=dtype, device=device)
    lengths = torch.full((B,), m, dtype=torch.long)
    active = torch.ones(B, dtype=torch.bool)
    scale = torch.zeros(B, dtype=dtype, device=device)
    matvecs, done, interrupted = 0, 0, False
    try:
        for j in range(m):
            if not bool(active.any()):
                break
            Qj = store.column(j)
            if bool(active.all()):
                W = A @ Qj
            else:
                W = torch.zeros_like(Qj)
                idx = active.nonzero().flatten().to(device)
                W[:, idx] = A @ Qj[:, idx]
            matvecs += int(active.sum())
            scale = torch.maximum(scale, W.norm(dim=0))
            # The three-term step first, then full reorthogonalisation removes only round-off:
            # one pass usually passes the DGKS test, halving the reads of the basis.
            if j > 0:
                W = W - beta[:, j - 1] * store.column(j - 1)
            a = (Qj * W).sum(0)
            W = W - a * Qj
            h, W, b = orthogonalize(store, W, j + 1, min_passes=1)
            alpha[:, j] = a + h[j]
            act = active.to(device)
            broke = (act & (b <= btol * scale)).cpu()
            Qn = torch.where(b > 0, W / torch.where(b > 0, b, 1), 0) * act
            beta[:, j] = b * act
            if bool(broke.any()) and j + 1 < m:
                if breakdown == "stop":
                    lengths[broke] = j + 1
                    active &= ~broke
                else:
                    R = gaussian(D, B, gen, dtype, device)
                    r0 = R.norm(dim=0)
                    _, R, rn = orthogonalize(store, R, j + 1)
                    exhausted = (rn <= btol * r0).cpu() & broke
                    fresh = (broke & ~exhausted).to(device)
                    Qn = torch.where(fresh, R / rn.clamp(min=torch.finfo(dtype).tiny), Qn)
                    beta[:, j] = torch.where(fresh, 0, beta[:, j])
                    if bool(exhausted.any()):  # the whole space is spanned: nothing new to add
                        lengths[exhausted] = j + 1
                        active &= ~exhausted
            store.append(Qn)
            done = j + 1
            if callback is not None:
                callback(done, matvecs)
    except KeyboardInterrupt:
        interrupted = True
        store.truncate(min(store.size, done + 1))
        lengths = lengths.clamp(max=done)
        alpha, beta = alpha[:, :done], beta[:, :done]

    if interrupted:
        status, message = "interrupted", f"interrupted after {done} of {m} steps; the result covers those"
    elif bool((lengths < m).any()):
        stopped = (lengths < m).nonzero().flatten().tolist()
        status = "invariant_subspace"
        message = (
            f"run(s) {stopped} found an invariant subspace after {lengths[stopped].tolist()} steps: their "
            f"Ritz values are exact eigenvalues and their quadrature is exact"
        )
    else:
        status, message = "completed", f"{m} steps per run"
    message += note
    if note:
        warnings.warn(f"lanczos: {note.strip(' ()')}", stacklevel=2)
    if not keep_basis:
        store.close()
    alpha64, beta64 = alpha.to("cpu", torch.float64), beta.to("cpu", torch.float64)
    if single:
        alpha64, beta64 = alpha64[0], beta64[0]
    return LanczosResult(
        alpha=alpha64,
        beta=beta64,
        lengths=lengths,
        basis=store if keep_basis else None,
        num_matvecs=matvecs,
        wall_time=time.perf_counter() - t0,
        status=status,
        message=message,
    )
