"""Extreme eigenpairs with residual certificates: thick-restart Lanczos (Krylov–Schur).

The algorithm and its steps are in :mod:`curvscope.linalg.thick_restart`; this module
validates the arguments (:func:`_setup`), runs the steps, and certifies and reports the
result (:func:`_finish`, :func:`_verdict`).

Certificates: only a *measured* residual certifies. ``residuals="true"`` (default) multiplies
the ``k`` Ritz vectors ``V`` ``[D, k]`` once more and measures ``‖A v − λ v‖`` (``k`` products);
a pair is ``converged`` only if that residual is ``≤ tol · ‖A‖``. ``residuals="estimated"``
spends 2 products: it measures the defect ``E = A Q − Q H − β q e_mᵀ`` of the Lanczos relation
on two random unit combinations ``c`` and reports ``β|s_m| + √m · max ‖E c‖`` — an *estimate*
(``‖E‖_F ≈ √m ‖E c‖`` holds on average, not always), which catches a non-symmetric or
non-deterministic operator cheaply but certifies nothing: such a result has status
``unverified`` even when every estimate meets the tolerance. ``"ritz"`` reports the Lanczos
estimates alone (no extra products; also ``unverified``).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from curvscope.common import SeedLike, Status, as_status, make_generator, make_progress
from curvscope.io import load_tensors, save_tensors
from curvscope.linalg.lanczos import check_block_size, check_operator, default_breakdown_tol
from curvscope.linalg.precision import WorkDtype, promote, resolve_tol, resolve_work_dtype
from curvscope.linalg.space import space_of
from curvscope.linalg.storage import StorageFactory
from curvscope.linalg.thick_restart import (
    WHICH,
    Krylov,
    Problem,
    Ritz,
    certify,
    display_order,
    expand,
    priority,
    rayleigh_ritz,
    restart,
    start,
    wanted,
)
from curvscope.operators.fingerprint import operator_fingerprint

__all__ = ["WHICH", "EigshResult", "default_tol", "eigsh", "make_progress", "priority"]

RESIDUALS = ("true", "estimated", "ritz")


def default_tol(dtype: torch.dtype) -> float:
    """``sqrt(eps)``: 1.5e-8 in float64, 3.5e-4 in float32 (relative residual ``‖Av − λv‖/‖A‖``).

    The default of :func:`eigsh` also heeds the operator's noise (:mod:`curvscope.linalg.precision`).

    Example:
        >>> import torch
        >>> f"{default_tol(torch.float64):.1e}"
        '1.5e-08'
    """
    return math.sqrt(torch.finfo(dtype).eps)


@dataclass(frozen=True)
class EigshResult:
    """Eigenpairs with their certificates.

    Attributes:
        eigenvalues: ``[k]`` (descending for ``LA``/``BE``, ascending for ``SA``, by ``|λ|`` for ``LM``).
        eigenvectors: ``[D, k]`` unit columns (in the work dtype); for a sharded operator this
            rank's rows ``[d_local, k]`` (:func:`curvscope.distributed.fsdp.gather_vectors`).
        residuals: ``‖A v − λ v‖`` per pair ``[k]``: measured (``residual_kind == "true"``), an
            estimate from the Lanczos residual plus the measured relation defect (``"estimated"``),
            or the Lanczos estimate alone (``"ritz"``, after an interruption or when asked).
        converged: certified pairs ``[k]``: a *measured* residual ``≤ tol · anorm``. All false
            when the residuals are estimates.
        anorm: the ``‖A‖`` estimate (largest ``|θ|`` seen) the tolerance is relative to.
        tol: relative residual tolerance used.
        which: the selection rule.
        num_matvecs: operator-vector products spent, including the final certificate.
        num_restarts: thick restarts performed.
        basis_nbytes: memory of the Krylov basis in its storage (``(ncv + 1) · D · itemsize``).
        wall_time: seconds.
        status: a :class:`~curvscope.common.Status` (a ``str``): ``converged`` (every pair certified
            by a measured residual; trusted), ``unverified`` (every estimate meets ``tol`` but no
            measurement confirms it: estimated or Ritz residuals, or measured residuals that
            disagree with the estimates), ``max_matvecs`` or ``interrupted``.
        message: what happened and what to do about it.
        residual_kind: ``"true"``, ``"estimated"`` or ``"ritz"`` (see ``residuals``).
        within_tol: ``residuals ≤ tol · anorm`` ``[k]`` whatever their kind (equal to ``converged``
            for measured residuals).
        tol_reason: why ``tol`` has its value (the default rule, given, or raised to the noise floor).
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    residuals: Tensor
    converged: Tensor
    anorm: float
    tol: float
    which: str
    num_matvecs: int
    num_restarts: int
    basis_nbytes: int
    wall_time: float
    status: Status
    message: str
    residual_kind: str = "true"
    within_tol: Tensor | None = None
    tol_reason: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", as_status(self.status))  # a loaded file stores the string
        if self.within_tol is None:
            object.__setattr__(self, "within_tol", self.converged.clone())

    @property
    def num_converged(self) -> int:
        """How many returned pairs are certified."""
        return int(self.converged.sum())

    @property
    def partial(self) -> bool:
        """Whether some requested pair is missing its certificate."""
        return self.status != Status.CONVERGED

    _META = ("anorm", "tol", "which", "num_matvecs", "num_restarts", "basis_nbytes", "wall_time", "status")
    _TENSORS = ("eigenvalues", "eigenvectors", "residuals", "converged", "within_tol")

    def save(self, path: str | os.PathLike) -> None:
        """Write to a safetensors file atomically."""
        tensors = {k: getattr(self, k) for k in self._TENSORS}
        meta = {k: getattr(self, k) for k in (*self._META, "message", "residual_kind", "tol_reason")}
        save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> EigshResult:
        """Read a file written by :meth:`save` (tensors on the CPU)."""
        t, meta = load_tensors(path)
        return cls(**t, **meta)


def _residual_kind(residuals: str) -> str:
    if residuals == "verified":
        warnings.warn(
            "residuals='verified' is renamed residuals='estimated': it is an estimate, not a bound, "
            "and it certifies nothing (status 'unverified'); use residuals='true' to certify",
            DeprecationWarning,
            stacklevel=4,
        )
        return "estimated"
    if residuals not in RESIDUALS:
        raise ValueError(f"residuals must be one of {RESIDUALS}, got {residuals!r}")
    return residuals


def _setup(A: Any, k: int, which: str, tol, num_matvecs, ncv, deflate, seed, storage, residuals,
           block_size, work_dtype) -> Problem:  # fmt: skip
    """Validate the arguments; choose ``ncv``, the budget, the work dtype and the tolerance."""
    D, op_dtype, device = check_operator(A)
    space = space_of(A)
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    kind = _residual_kind(residuals)
    block_size = check_block_size(block_size)
    if deflate is not None and (deflate.ndim != 2 or deflate.shape[0] != space.local_dim):
        raise ValueError(f"deflate must be [{space.local_dim}, p] eigenvectors, got {tuple(deflate.shape)}")
    n_eff = D - (0 if deflate is None else deflate.shape[1])
    if not 1 <= k <= n_eff:
        raise ValueError(f"k must be between 1 and {n_eff} (D minus deflated vectors), got {k}")
    ncv = min(n_eff, max(2 * k + 1, k + 32)) if ncv is None else min(int(ncv), n_eff)
    if ncv <= k and ncv < n_eff:
        raise ValueError(f"ncv={ncv} must exceed k={k} (ncv = 2k + 1 is a good choice)")
    dtype = resolve_work_dtype(work_dtype, op_dtype, space.local_dim, ncv + 1, storage, device, "eigsh", stacklevel=4,
                               space=space)  # fmt: skip
    tol, tol_reason = resolve_tol(tol, A, op_dtype, dtype, "eigsh", stacklevel=4)
    Qd = None if deflate is None else space.orthonormalize(deflate.to(dtype=dtype, device=device))
    budget = max(1000, 50 * ncv) if num_matvecs is None else int(num_matvecs)
    return Problem(promote(A, dtype), D, dtype, device, k, which, ncv, n_eff, budget, tol, tol_reason,
                    default_breakdown_tol(dtype), Qd, make_generator(seed), block_size, kind, space)  # fmt: skip


def _verdict(P: Problem, K: Krylov, kind: str, within: Tensor, est_ok: bool, interrupted: bool) -> tuple[Status, str]:
    """Status and message: only measured residuals make ``converged``."""
    k, nin, mv, tol = P.k, int(within.sum()), K.matvecs, P.tol
    if interrupted:
        return Status.INTERRUPTED, (
            f"interrupted after {mv} products: {nin} of {k} pairs within tol by their Lanczos residual "
            f"estimates (not measured); call again with v0=result.eigenvectors[:, 0] to continue"
        )
    if kind == "true" and nin == k:
        return Status.CONVERGED, f"{k} pairs with measured ‖Av − λv‖ ≤ {tol:.1e}·‖A‖ in {mv} products"
    if not est_ok:
        return Status.MAX_MATVECS, (
            f"budget of {P.budget} products spent with {nin} of {k} pairs within tol: raise num_matvecs, "
            f"or ncv (now {P.ncv}) to restart less often"
        )
    if nin < k:  # the estimates converged, the measurement (or the relation defect) disagrees
        what = "true residuals" if kind == "true" else "estimated residuals (with the Lanczos relation defect)"
        return Status.UNVERIFIED, (
            f"the Lanczos estimates converged but {k - nin} {what} exceed tol·‖A‖: the operator may not "
            f"be symmetric or deterministic, or tol={tol:.1e} is below its round-off; raise tol"
        )
    how = "an estimate (2 products), not a bound" if kind == "estimated" else "the Lanczos estimates alone"
    return Status.UNVERIFIED, (
        f"{k} pairs within tol={tol:.1e} by {how}; nothing was measured: pass residuals='true' "
        f"({k} more products) to certify them"
    )


def _finish(P: Problem, K: Krylov, ritz: Ritz | None, interrupted: bool, t0: float) -> EigshResult:
    """The ``k`` wanted pairs in display order, certified (or not), with status and message."""
    nbytes = K.store.nbytes
    if ritz is None:  # interrupted before the first product finished
        K.store.close()
        empty = torch.zeros(0, dtype=torch.float64)
        none = torch.zeros(P.space.local_dim, 0, dtype=P.dtype, device=P.device)
        return EigshResult(empty, none, empty, empty.bool(), K.anorm,
                           P.tol, P.which, K.matvecs, K.restarts, nbytes, time.perf_counter() - t0, Status.INTERRUPTED,
                           "interrupted before the first product finished; nothing to report", "ritz",
                           tol_reason=P.tol_reason)  # fmt: skip
    want = priority(ritz.theta, P.which)[: min(P.k, K.n)]
    V = K.store.combine(ritz.S[:, want].to(dtype=P.dtype, device=P.device), K.n)
    lam, est = ritz.theta[want], ritz.est[want].clone()
    res, kind = est, "ritz"
    if not interrupted:
        try:
            res, kind = certify(P, K, V, lam, est)
        except KeyboardInterrupt:
            interrupted = True
    K.store.close()
    within = res <= P.tol * K.anorm
    status, message = _verdict(P, K, kind, within, bool((est <= P.tol * K.anorm).all()), interrupted)
    if K.exhausted or K.n >= P.n_eff:
        message += f" (the Krylov space spans the whole {P.n_eff}-dimensional search space)"
    perm = display_order(lam, P.which)
    within = within[perm]
    return EigshResult(
        eigenvalues=lam[perm], eigenvectors=V[:, perm], residuals=res[perm],
        converged=within & (kind == "true"), anorm=K.anorm, tol=P.tol, which=P.which,
        num_matvecs=K.matvecs, num_restarts=K.restarts, basis_nbytes=nbytes,
        wall_time=time.perf_counter() - t0, status=status, message=message, residual_kind=kind,
        within_tol=within, tol_reason=P.tol_reason,
    )  # fmt: skip


def eigsh(
    A: Any,
    k: int = 6,
    which: str = "LA",
    *,
    tol: float | None = None,
    num_matvecs: int | None = None,
    ncv: int | None = None,
    v0: Tensor | None = None,
    deflate: Tensor | None = None,
    seed: SeedLike = 0,
    storage: str | StorageFactory = "device",
    residuals: str = "true",
    progress: bool | None = None,
    block_size: int | None = None,
    work_dtype: WorkDtype = "auto",
    checkpoint: str | os.PathLike | None = None,
) -> EigshResult:
    """``k`` extreme eigenpairs of a symmetric operator by thick-restart Lanczos.

    Args:
        A: symmetric operator (``@``, ``shape``, ``dtype``, ``device``), ``D x D``; float64,
            float32, bfloat16 or float16 (products always run in its dtype).
        k: number of eigenpairs.
        which: ``"LA"`` largest, ``"SA"`` smallest, ``"LM"`` largest magnitude, ``"BE"`` both ends.
        tol: a pair is converged when ``‖Av − λv‖ ≤ tol · ‖A‖``. The eigenvalue error is at
            most the residual, and about ``residual²/gap``. Default ``max(sqrt(eps(work_dtype)),
            10 · A.noise_floor)``, or ``sqrt(eps)`` of the operator's dtype when it does not
            measure its noise; a ``tol`` below the noise is raised to it with a warning (see
            :mod:`curvscope.linalg.precision`). ``result.tol_reason`` says which applied.
        num_matvecs: product budget (default ``max(1000, 50 · ncv)``).
        ncv: largest basis size (default ``max(2k + 1, k + 32)``, at most ``D``); memory
            ``(ncv + 1) · D`` numbers.
        v0: start vector ``[D]`` (default Gaussian from ``seed``).
        deflate: ``[D, p]`` known eigenvectors; the search runs in their orthogonal complement.
        seed: seed or generator for the start vector and breakdown restarts.
        storage: basis storage (``"device"``, ``"host"``, ``"disk"`` or a factory).
        residuals: ``"true"`` (certify with one final ``[D, k]`` block product; the only kind
            that can give status ``converged``), ``"estimated"`` (Lanczos estimates plus the
            relation defect measured with 2 products: an estimate, status at best ``unverified``)
            or ``"ritz"`` (the Lanczos estimates ``β|s_m|``; no extra products, ``unverified``).
            ``"verified"`` is the deprecated name of ``"estimated"``.
        progress: show a progress bar (default ``None``: only on a terminal).
        block_size: most vectors in one product (``None``: all). The expansion multiplies one
            vector at a time; the final certificate multiplies ``k`` — a smaller block bounds
            the activations a curvature product holds at once.
        work_dtype: dtype of the basis, the orthogonalisation and the returned vectors:
            ``"auto"`` (default: float64 when its basis fits the memory guard, else the operator's
            dtype with a warning), ``None`` (the operator's dtype) or a float dtype.
        checkpoint: a file where the state is saved (atomically) at every thick restart: the
            kept basis, the projected matrix, the counters, the random-generator state and the
            operator's fingerprint. A killed run called again with the same file continues from
            the last restart and returns what an uninterrupted run returns; products already done
            are not redone. A file made for another operator (or without a fingerprint) is
            refused with :class:`~curvscope.operators.fingerprint.StaleStateError`.

    Returns:
        An :class:`EigshResult`; on Ctrl-C the pairs found so far, ``status="interrupted"``.

    Example:
        >>> import torch
        >>> from curvscope.operators import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64)))
        >>> res = eigsh(A, k=3, which="LA", tol=1e-10)
        >>> str(res.status), [round(x, 10) for x in res.eigenvalues.tolist()]
        ('converged', [100.0, 99.0, 98.0])
        >>> bool((res.residuals <= 1e-10 * res.anorm).all()), res.status.trusted
        (True, True)
    """
    t0 = time.perf_counter()
    P = _setup(A, k, which, tol, num_matvecs, ncv, deflate, seed, storage, residuals, block_size, work_dtype)
    if checkpoint is not None and P.space.sharded:
        raise ValueError(
            "eigsh(checkpoint=...) saves whole basis vectors; a sharded operator's are split over "
            "ranks: drop checkpoint= (resumable sharded runs are not supported yet)"
        )
    fingerprint = None if checkpoint is None else operator_fingerprint(A)
    K = start(P, v0, storage, checkpoint, fingerprint)
    bar = make_progress(P.budget, progress, f"eigsh {which} k={k}")
    bar.update(K.matvecs)  # a resumed run starts at the products already done
    ritz, interrupted = None, False
    try:
        while True:
            expand(P, K, bar)
            ritz = rayleigh_ritz(K)
            order, ok, worst = wanted(P, K, ritz)
            bar.set_postfix(worst_residual=f"{worst:.1e}", restarts=K.restarts)
            if bool(ok.all()) or K.exhausted or K.n >= P.n_eff or K.matvecs >= P.budget:
                break
            restart(P, K, ritz, order, int(ok.sum()), checkpoint, fingerprint)
    except KeyboardInterrupt:
        interrupted = True
        K.store.truncate(K.n + 1)
        ritz = rayleigh_ritz(K) if K.n > 0 else None
    finally:
        bar.close()
    return _finish(P, K, ritz, interrupted, t0)
