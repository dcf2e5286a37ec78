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

from curvscope.common import SeedLike, Status, as_status, make_generator, make_progress
from curvscope.io import load_tensors, save_tensors
from curvscope.linalg.precision import WorkDtype, promote, resolve_work_dtype
from curvscope.linalg.products import check_product
from curvscope.linalg.space import LocalSpace, space_of
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


def default_breakdown_tol(dtype: torch.dtype) -> float:
    """``100 · eps`` of the dtype: below this ``β/‖T‖`` is round-off, not a new direction.

    Example:
        >>> import torch
        >>> default_breakdown_tol(torch.float64)
        2.220446049250313e-14
    """
    return 100.0 * torch.finfo(dtype).eps


def orthogonalize(
    storage: BasisStorage,
    W: Tensor,
    stop: int,
    extra: Tensor | None = None,
    min_passes: int = 2,
    space: LocalSpace | None = None,
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
        space: the vector space (default whole local vectors); a sharded space sums the
            coefficients and norms over the ranks, so every rank takes the same decisions.

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
    space = LocalSpace(W.shape[0]) if space is None else space
    h = torch.zeros(stop, W.shape[1], dtype=W.dtype, device=W.device)
    prev = space.colnorms(W)
    norms = prev
    for p in range(MAX_PASSES):
        if stop > 0:
            c = space.reduce(storage.project(W, stop))
            W = W - storage.combine(c, stop)
            h = h + c
        if extra is not None and extra.shape[1] > 0:
            W = W - extra @ space.inner(extra, W)
        norms = space.colnorms(W)
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
        status: a :class:`~curvscope.common.Status` (a ``str``): ``completed``,
            ``invariant_subspace`` (some run broke down: its Ritz values are exact) or ``interrupted``.
        message: what happened, in words.
    """

    alpha: Tensor
    beta: Tensor
    lengths: Tensor
    basis: BasisStorage | None
    num_matvecs: int
    wall_time: float
    status: Status
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", as_status(self.status))  # a loaded file stores the string

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


def check_block_size(block_size: int | None) -> int | None:
    """``None`` (all vectors in one product) or a positive number of vectors per product."""
    if block_size is None:
        return None
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int (vectors per product) or None, got {block_size!r}")
    return block_size


def matmul_blocks(A: Any, X: Tensor, block_size: int | None) -> Tensor:
    """``A @ X`` for ``X`` ``[D, K]``, in products of at most ``block_size`` columns (``None``: one product).

    Example:
        >>> import torch
        >>> X = torch.eye(3, dtype=torch.float64)
        >>> bool(torch.equal(matmul_blocks(2 * X, X, 2), 2 * X))
        True
    """
    if block_size is None or X.shape[1] <= block_size:
        return check_product(X, A @ X, type(A).__name__)
    cols = [X[:, i : i + block_size] for i in range(0, X.shape[1], block_size)]
    return torch.cat([check_product(C, A @ C, type(A).__name__) for C in cols], dim=1)


def no_checkpoint(checkpoint: Any, what: str, instead: str) -> None:
    """Refuse ``checkpoint`` for an algorithm that has no resumable state, saying where it lives."""
    if checkpoint is not None:
        raise ValueError(f"{what} does not checkpoint: {instead}")


@dataclass
class _Runs:
    """The state of ``B`` lock-step Lanczos runs while they are built."""

    store: BasisStorage
    space: LocalSpace
    alpha: Tensor
    beta: Tensor
    lengths: Tensor
    active: Tensor
    scale: Tensor
    matvecs: int = 0
    done: int = 0


def _start_block(space: LocalSpace, v0: Tensor | None, gen: torch.Generator, dtype, device) -> tuple[Tensor, bool]:
    if v0 is None:
        V = space.gaussian(1, gen, dtype, device)
        return V / space.colnorms(V), True
    d = space.local_dim
    if v0.ndim not in (1, 2) or v0.shape[0] != d:
        raise ValueError(f"v0 must be [{d}] or [{d}, B], got {tuple(v0.shape)}")
    V = v0.reshape(d, -1).to(dtype=dtype, device=device)
    norms = space.colnorms(V)
    if bool((norms == 0).any()) or not bool(torch.isfinite(norms).all()):
        raise ValueError("a start vector is zero or not finite: pass nonzero finite columns in v0")
    return V / norms, v0.ndim == 1


def _step(A: Any, r: _Runs, j: int, block_size: int | None) -> tuple[Tensor, Tensor]:
    """Step ``j`` of every active run: one block product, the three-term step, reorthogonalisation."""
    Qj = r.store.column(j)
    if bool(r.active.all()):
        W = matmul_blocks(A, Qj, block_size)
    else:
        W = torch.zeros_like(Qj)
        idx = r.active.nonzero().flatten().to(Qj.device)
        W[:, idx] = matmul_blocks(A, Qj[:, idx], block_size)
    r.matvecs += int(r.active.sum())
    r.scale = torch.maximum(r.scale, r.space.colnorms(W))
    # The three-term step first, then full reorthogonalisation removes only round-off:
    # one pass usually passes the DGKS test, halving the reads of the basis.
    if j > 0:
        W = W - r.beta[:, j - 1] * r.store.column(j - 1)
    a = r.space.coldots(Qj, W)
    W = W - a * Qj
    h, W, b = orthogonalize(r.store, W, j + 1, min_passes=1, space=r.space)
    r.alpha[:, j] = a + h[j]
    act = r.active.to(W.device)
    r.beta[:, j] = b * act
    return torch.where(b > 0, W / torch.where(b > 0, b, 1), 0) * act, b


def _breakdown(r: _Runs, j: int, Qn: Tensor, broke: Tensor, breakdown: str, gen, btol: float) -> Tensor:
    """Runs whose ``β`` vanished: stop them, or continue with a fresh orthogonal direction."""
    if breakdown == "stop":
        r.lengths[broke] = j + 1
        r.active &= ~broke
        return Qn
    R = r.space.gaussian(Qn.shape[1], gen, Qn.dtype, Qn.device)
    r0 = r.space.colnorms(R)
    _, R, rn = orthogonalize(r.store, R, j + 1, space=r.space)
    exhausted = (rn <= btol * r0).cpu() & broke
    fresh = (broke & ~exhausted).to(Qn.device)
    Qn = torch.where(fresh, R / rn.clamp(min=torch.finfo(Qn.dtype).tiny), Qn)
    r.beta[:, j] = torch.where(fresh, 0, r.beta[:, j])
    if bool(exhausted.any()):  # the whole space is spanned: nothing new to add
        r.lengths[exhausted] = j + 1
        r.active &= ~exhausted
    return Qn


def _status(r: _Runs, m: int, interrupted: bool) -> tuple[Status, str]:
    if interrupted:
        return Status.INTERRUPTED, f"interrupted after {r.done} of {m} steps; the result covers those"
    if bool((r.lengths < m).any()):
        stopped = (r.lengths < m).nonzero().flatten().tolist()
        return Status.INVARIANT_SUBSPACE, (
            f"run(s) {stopped} found an invariant subspace after {r.lengths[stopped].tolist()} steps: their "
            f"Ritz values are exact eigenvalues and their quadrature is exact"
        )
    return Status.COMPLETED, f"{m} steps per run"


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
    progress: bool | None = None,
    block_size: int | None = None,
    work_dtype: WorkDtype = "auto",
    checkpoint: None = None,
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
        progress: show a progress bar; default ``None``: only on a terminal, and not when a
            ``callback`` is given (the caller then reports progress itself).
        block_size: most vectors in one product (``None``: all ``B`` runs in one block product).
        work_dtype: dtype of the basis and the orthogonalisation: ``"auto"`` (float64 when it
            fits, see :mod:`curvscope.linalg.precision`), ``None`` (the operator's) or a dtype.
        checkpoint: must be ``None``: one run is a single pass of ``m`` products; resumable runs
            are ``spectral_density(checkpoint=...)`` (finished probe blocks) and ``eigsh(checkpoint=...)``.

    Returns:
        A :class:`LanczosResult` with ``A Q = Q T + r e_mᵀ`` to round-off.

    Example:
        >>> import torch
        >>> from curvscope.operators import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.arange(1.0, 7.0, dtype=torch.float64)))
        >>> res = lanczos(A, 6, seed=0)
        >>> str(res.status), res.num_matvecs
        ('completed', 6)
        >>> [round(x, 8) for x in res.ritz()[0].tolist()]
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        >>> Q, T = res.basis_matrix(), res.tridiagonal()
        >>> bool(torch.allclose(A @ Q, Q @ T, atol=1e-12))  # exact: the space is invariant
        True
    """
    t0 = time.perf_counter()
    D, op_dtype, device = check_operator(A)
    if breakdown not in ("stop", "restart"):
        raise ValueError(f"breakdown must be 'stop' or 'restart', got {breakdown!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    no_checkpoint(checkpoint, "lanczos", "resume spectral_density(checkpoint=...) or eigsh(checkpoint=...)")
    block_size = check_block_size(block_size)
    m = min(int(num_steps), D)
    B0 = 1 if v0 is None or v0.ndim == 1 else v0.shape[1]
    space = space_of(A)
    dtype = resolve_work_dtype(work_dtype, op_dtype, space.local_dim, B0 * (m + 1), storage, device, "lanczos",
                               space=space)  # fmt: skip
    A = promote(A, dtype)
    gen = make_generator(seed)
    V, single = _start_block(space, v0, gen, dtype, device)
    B = V.shape[1]
    note = f" (num_steps={num_steps} clamped to D={D})" if m < num_steps else ""
    btol = default_breakdown_tol(dtype) if breakdown_tol is None else float(breakdown_tol)
    store = make_storage(storage, space.local_dim, m + 1, B, dtype, device)  # a sharded space: 1/W of D
    store.append(V)
    zeros = torch.zeros(B, m, dtype=dtype, device=device)
    r = _Runs(store, space, zeros, zeros.clone(), torch.full((B,), m, dtype=torch.long),
              torch.ones(B, dtype=torch.bool), torch.zeros(B, dtype=dtype, device=device))  # fmt: skip
    bar = make_progress(B * m, False if progress is None and callback is not None else progress, "lanczos")
    interrupted = False
    try:
        for j in range(m):
            if not bool(r.active.any()):
                break
            Qn, b = _step(A, r, j, block_size)
            broke = (r.active.to(device) & (b <= btol * r.scale)).cpu()
            if bool(broke.any()) and j + 1 < m:
                Qn = _breakdown(r, j, Qn, broke, breakdown, gen, btol)
            store.append(Qn)
            r.done = j + 1
            bar.update(r.matvecs - bar.n)
            if callback is not None:
                callback(r.done, r.matvecs)
    except KeyboardInterrupt:
        interrupted = True
        store.truncate(min(store.size, r.done + 1))
        r.lengths = r.lengths.clamp(max=r.done)
        r.alpha, r.beta = r.alpha[:, : r.done], r.beta[:, : r.done]
    finally:
        bar.close()
    status, message = _status(r, m, interrupted)
    if note:
        warnings.warn(f"lanczos: {note.strip(' ()')}", stacklevel=2)
    if not keep_basis:
        store.close()
    alpha64, beta64 = r.alpha.to("cpu", torch.float64), r.beta.to("cpu", torch.float64)
    if single:
        alpha64, beta64 = alpha64[0], beta64[0]
    return LanczosResult(alpha64, beta64, r.lengths, store if keep_basis else None, r.matvecs,
                         time.perf_counter() - t0, status, message + note)  # fmt: skip
