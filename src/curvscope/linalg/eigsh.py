"""Extreme eigenpairs with residual certificates: thick-restart Lanczos (Krylov–Schur).

Algorithm (Wu & Simon 2000, "Thick-restart Lanczos"; Stewart 2001, "A Krylov–Schur
algorithm"): expand an orthonormal basis ``Q`` ``[D, m]`` by Lanczos steps with full
reorthogonalisation until it holds ``ncv`` vectors, so that

    A Q = Q H + β q_{m+1} e_mᵀ,    H = Qᵀ A Q  [m, m].

Rayleigh–Ritz: ``H = S diag(θ) Sᵀ``; the Ritz pair ``(θ_i, Q s_i)`` has residual norm
``‖A Q s_i − θ_i Q s_i‖ = β |S[m-1, i]|``. A pair meets the tolerance when its residual is
at most ``tol · ‖A‖`` (``‖A‖`` estimated by the largest ``|θ|`` seen). Restart: keep the
``p`` most wanted Ritz vectors ``Q S[:, :p]`` plus ``q_{m+1}``; the projected matrix becomes
``diag(θ_{:p})`` bordered by the arrow ``β S[m-1, :p]``, and the expansion continues. The
basis never exceeds ``ncv + 1`` vectors: memory ``(ncv + 1) · D`` numbers, stated by
``EigshResult.basis_nbytes``.

The steps, one function each: :func:`_start` (start vector or checkpoint), :func:`_expand`
(Lanczos steps), :func:`_rayleigh_ritz`, :func:`_wanted` (convergence test), :func:`_restart`
(thick restart and checkpoint), :func:`_certify` and :func:`_finish` (result and verdict).

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

import contextlib
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from curvscope.common import SeedLike, Status, as_status, make_generator, make_progress
from curvscope.io import load_tensors, save_tensors
from curvscope.linalg.checkpoint import jsonable, load_state, save_state
from curvscope.linalg.lanczos import (
    check_block_size,
    check_operator,
    default_breakdown_tol,
    matmul_blocks,
    orthogonalize,
)
from curvscope.linalg.precision import WorkDtype, promote, resolve_tol, resolve_work_dtype
from curvscope.linalg.sampling import gaussian
from curvscope.linalg.storage import BasisStorage, StorageFactory, make_storage
from curvscope.memory import check_budget, vectors_bytes
from curvscope.operators.fingerprint import operator_fingerprint

WHICH = ("LA", "SA", "LM", "BE")
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


def priority(theta: Tensor, which: str) -> Tensor:
    """Indices of ``theta`` from most to least wanted under ``which``.

    ``LA``: largest first; ``SA``: smallest first; ``LM``: largest ``|θ|`` first; ``BE``:
    alternately from the top and the bottom, starting at the top (so the first ``k``
    hold ``⌈k/2⌉`` from the top and ``⌊k/2⌋`` from the bottom, as ARPACK).

    Example:
        >>> import torch
        >>> priority(torch.tensor([-3.0, 1.0, 2.0]), "BE").tolist()
        [2, 0, 1]
    """
    if which == "LA":
        return torch.argsort(theta, descending=True, stable=True)
    if which == "SA":
        return torch.argsort(theta, stable=True)
    if which == "LM":
        return torch.argsort(theta.abs(), descending=True, stable=True)
    if which == "BE":
        asc = torch.argsort(theta, stable=True)
        n = asc.numel()
        out = []
        for i in range((n + 1) // 2):
            out.append(asc[n - 1 - i])
            if i != n - 1 - i:
                out.append(asc[i])
        return torch.stack(out) if out else asc
    raise ValueError(f"which must be one of {WHICH}, got {which!r}")


def _display_order(values: Tensor, which: str) -> Tensor:
    if which in ("LA", "BE"):
        return torch.argsort(values, descending=True, stable=True)
    if which == "SA":
        return torch.argsort(values, stable=True)
    return torch.argsort(values.abs(), descending=True, stable=True)


@contextlib.contextmanager
def _defer_sigint() -> Iterator[list[bool]]:
    """Hold Ctrl-C until the block ends (keeps the basis consistent during a restart)."""
    hit = [False]
    if threading.current_thread() is not threading.main_thread():
        yield hit
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):  # pragma: no cover - needs a real signal
        hit[0] = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield hit
    finally:
        signal.signal(signal.SIGINT, previous)
    if hit[0]:  # pragma: no cover - needs a real signal
        raise KeyboardInterrupt


@dataclass(frozen=True)
class EigshResult:
    """Eigenpairs with their certificates.

    Attributes:
        eigenvalues: ``[k]`` (descending for ``LA``/``BE``, ascending for ``SA``, by ``|λ|`` for ``LM``).
        eigenvectors: ``[D, k]`` unit columns (in the work dtype).
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


@dataclass
class _Problem:
    """The validated inputs of one eigsh call (fixed while it runs)."""

    A: Any  # in the work dtype
    D: int
    dtype: torch.dtype
    device: torch.device
    k: int
    which: str
    ncv: int
    n_eff: int
    budget: int
    tol: float
    tol_reason: str
    btol: float
    Qd: Tensor | None
    gen: torch.Generator
    block_size: int | None
    residuals: str

    @property
    def config(self) -> dict:
        """What a checkpoint must match."""
        return {"D": self.D, "k": self.k, "which": self.which, "ncv": self.ncv, "tol": self.tol,
                "dtype": jsonable(self.dtype), "deflate": 0 if self.Qd is None else self.Qd.shape[1]}  # fmt: skip


@dataclass
class _Krylov:
    """The thick-restart state: basis, projected matrix and counters (what a checkpoint saves)."""

    store: BasisStorage
    H: Tensor  # [ncv, ncv] float64; H[:n, :n] is live
    n: int = 0
    beta_last: float = 0.0
    matvecs: int = 0
    restarts: int = 0
    anorm: float = 0.0
    scale: float = 0.0
    last_check: int = 0
    exhausted: bool = False

    _SAVED = ("n", "beta_last", "matvecs", "restarts", "anorm", "scale", "last_check")

    def values(self) -> dict:
        return {k: getattr(self, k) for k in self._SAVED}

    def restore(self, values: dict) -> None:
        for k in self._SAVED:
            setattr(self, k, type(getattr(self, k))(values[k]))


@dataclass
class _Ritz:
    theta: Tensor  # [n] ascending
    S: Tensor  # [n, n]
    est: Tensor  # [n] Lanczos residual estimates β|S[n-1, i]|


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
           block_size, work_dtype) -> _Problem:  # fmt: skip
    """Validate the arguments; choose ``ncv``, the budget, the work dtype and the tolerance."""
    D, op_dtype, device = check_operator(A)
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    kind = _residual_kind(residuals)
    block_size = check_block_size(block_size)
    if deflate is not None and (deflate.ndim != 2 or deflate.shape[0] != D):
        raise ValueError(f"deflate must be [{D}, p] eigenvectors, got {tuple(deflate.shape)}")
    n_eff = D - (0 if deflate is None else deflate.shape[1])
    if not 1 <= k <= n_eff:
        raise ValueError(f"k must be between 1 and {n_eff} (D minus deflated vectors), got {k}")
    ncv = min(n_eff, max(2 * k + 1, k + 32)) if ncv is None else min(int(ncv), n_eff)
    if ncv <= k and ncv < n_eff:
        raise ValueError(f"ncv={ncv} must exceed k={k} (ncv = 2k + 1 is a good choice)")
    dtype = resolve_work_dtype(work_dtype, op_dtype, D, ncv + 1, storage, device, "eigsh", stacklevel=4)
    tol, tol_reason = resolve_tol(tol, A, op_dtype, dtype, "eigsh", stacklevel=4)
    Qd = None if deflate is None else torch.linalg.qr(deflate.to(dtype=dtype, device=device)).Q
    budget = max(1000, 50 * ncv) if num_matvecs is None else int(num_matvecs)
    return _Problem(promote(A, dtype), D, dtype, device, k, which, ncv, n_eff, budget, tol, tol_reason,
                    default_breakdown_tol(dtype), Qd, make_generator(seed), block_size, kind)  # fmt: skip


def _start(P: _Problem, v0: Tensor | None, storage: Any, checkpoint, fingerprint: dict | None) -> _Krylov:
    """The first basis vector (``v0`` or Gaussian), or the state of the checkpoint's last restart."""
    q = (
        gaussian(P.D, 1, P.gen, P.dtype, P.device)
        if v0 is None
        else v0.reshape(P.D, 1).to(dtype=P.dtype, device=P.device)
    )
    if P.Qd is not None:
        q = q - P.Qd @ (P.Qd.T @ q)
    if float(q.norm()) == 0:
        raise ValueError("the start vector is zero (or inside the deflated space): pass another v0 or seed")
    if storage in ("device", "host"):  # memory guard: refuse before allocating a basis that cannot fit
        where = P.device if storage == "device" else torch.device("cpu")
        check_budget(vectors_bytes(P.D, P.ncv + 1, P.dtype), f"the eigsh basis ({P.ncv + 1} vectors of D={P.D}, "
                     f"{P.dtype})", ["storage='disk'", "storage='host'" if where.type == "cuda" else
                     "a smaller k or ncv"], where)  # fmt: skip
    K = _Krylov(
        make_storage(storage, P.D, P.ncv + 1, 1, P.dtype, P.device), torch.zeros(P.ncv, P.ncv, dtype=torch.float64)
    )
    state = load_state(checkpoint, P.config, P.gen, fingerprint)
    if state is None:
        K.store.append(q / q.norm())
        return K
    tensors, values = state  # continue from the last thick restart: same basis, counters, random stream
    for j in range(tensors["basis"].shape[1]):
        K.store.append(tensors["basis"][:, j : j + 1].to(dtype=P.dtype, device=P.device))
    K.restore(values)
    K.H[: K.n, : K.n] = tensors["H"]
    return K


def _lanczos_step(P: _Problem, K: _Krylov) -> None:
    """One product and full reorthogonalisation; a fresh direction after an invariant subspace."""
    n = K.n
    w = P.A @ K.store.column(n)
    K.matvecs += 1
    K.scale = max(K.scale, float(w.norm()))
    h, w, b = orthogonalize(K.store, w, n + 1, P.Qd)
    hv = h[:, 0].to("cpu", torch.float64)
    K.H[: n + 1, n] = hv
    K.H[n, : n + 1] = hv
    b = float(b[0])
    if b <= P.btol * K.scale:  # invariant subspace: continue with a fresh direction
        R = gaussian(P.D, 1, P.gen, P.dtype, P.device)
        r0 = float(R.norm())
        _, R, rn = orthogonalize(K.store, R, n + 1, P.Qd)
        K.exhausted = n + 1 >= P.n_eff or float(rn[0]) <= P.btol * r0
        qn, b = (torch.zeros_like(R) if K.exhausted else R / rn), 0.0
    else:
        qn = w / b
    K.store.append(qn)
    K.n, K.beta_last = n + 1, b


def _rayleigh_ritz(K: _Krylov) -> _Ritz:
    """Eigenpairs of the projected matrix, their residual estimates; updates the ``‖A‖`` estimate."""
    theta, S = torch.linalg.eigh(K.H[: K.n, : K.n])
    K.anorm = max(K.anorm, float(theta.abs().max()))
    return _Ritz(theta, S, (K.beta_last * S[-1]).abs())


def _wanted(P: _Problem, K: _Krylov, ritz: _Ritz) -> tuple[Tensor, Tensor, float]:
    """The convergence test: ``(order, ok, worst)``.

    ``order``: Ritz indices by priority; ``ok``: which of the ``k`` wanted estimates meet
    ``tol · ‖A‖``; ``worst``: the largest relative estimate among them.
    """
    order = priority(ritz.theta, P.which)
    est = ritz.est[order[: P.k]]
    return order, est <= P.tol * K.anorm, float(est.max()) / max(K.anorm, 1e-300)


def _expand(P: _Problem, K: _Krylov, bar: Any) -> None:
    """Lanczos steps until the basis holds ``ncv`` vectors or the budget is spent.

    Every ``ncv/10`` steps a Rayleigh–Ritz checks whether the wanted estimates already meet
    the tolerance (no restart needed then).
    """
    check_every = max(1, P.ncv // 10)
    while K.n < P.ncv and K.matvecs < P.budget and not K.exhausted:
        _lanczos_step(P, K)
        bar.update(1)
        if P.k < K.n < P.ncv and (K.n - K.last_check) >= check_every:
            K.last_check = K.n
            _, _, worst = _wanted(P, K, _rayleigh_ritz(K))
            bar.set_postfix(worst_residual=f"{worst:.1e}", restarts=K.restarts)
            if worst <= P.tol:
                return


def _restart(P: _Problem, K: _Krylov, ritz: _Ritz, order: Tensor, nconv: int, checkpoint, fingerprint) -> None:
    """Thick restart: keep the most wanted Ritz vectors and ``q_{m+1}``; save the state."""
    keep = max(1, min(K.n - 1, P.k + min(nconv, (K.n - P.k) // 2)))  # ARPACK's rule
    Y = ritz.S[:, order[:keep]]
    with _defer_sigint():
        K.store.rotate(Y.to(dtype=P.dtype, device=P.device))
        K.store.copy_column(K.n, keep)
        K.store.truncate(keep + 1)
        K.H.zero_()
        K.H[:keep, :keep] = torch.diag(ritz.theta[order[:keep]])
        K.n, K.restarts, K.last_check = keep, K.restarts + 1, keep
        if checkpoint is not None:
            basis = torch.cat([K.store.column(j) for j in range(K.n + 1)], dim=1)
            tensors = {"basis": basis, "H": K.H[: K.n, : K.n].clone()}
            save_state(checkpoint, P.config, P.gen, tensors, K.values(), fingerprint)


def _certify(P: _Problem, K: _Krylov, V: Tensor, lam: Tensor, est: Tensor) -> tuple[Tensor, str]:
    """Residuals of the returned pairs: measured (``"true"``), estimated, or the Lanczos estimates."""
    if P.residuals == "true":
        AV = matmul_blocks(P.A, V, P.block_size)
        K.matvecs += V.shape[1]
        return (AV - V * lam.to(dtype=P.dtype, device=P.device)).norm(dim=0).to("cpu", torch.float64), "true"
    if P.residuals == "estimated":
        n = K.n
        C = torch.randn(n, 2, generator=P.gen, dtype=torch.float64)
        C = C / C.norm(dim=0)
        AZ = matmul_blocks(P.A, K.store.combine(C.to(dtype=P.dtype, device=P.device), n), P.block_size)
        K.matvecs += 2
        pred = K.store.combine((K.H[:n, :n] @ C).to(dtype=P.dtype, device=P.device), n)
        pred = pred + K.store.column(n) * (K.beta_last * C[-1]).to(dtype=P.dtype, device=P.device)
        return est + math.sqrt(n) * float((AZ - pred).norm(dim=0).max()), "estimated"
    return est, "ritz"


def _verdict(P: _Problem, K: _Krylov, kind: str, within: Tensor, est_ok: bool, interrupted: bool) -> tuple[Status, str]:
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


def _finish(P: _Problem, K: _Krylov, ritz: _Ritz | None, interrupted: bool, t0: float) -> EigshResult:
    """The ``k`` wanted pairs in display order, certified (or not), with status and message."""
    nbytes = K.store.nbytes
    if ritz is None:  # interrupted before the first product finished
        K.store.close()
        empty = torch.zeros(0, dtype=torch.float64)
        return EigshResult(empty, torch.zeros(P.D, 0, dtype=P.dtype, device=P.device), empty, empty.bool(), K.anorm,
                           P.tol, P.which, K.matvecs, K.restarts, nbytes, time.perf_counter() - t0, Status.INTERRUPTED,
                           "interrupted before the first product finished; nothing to report", "ritz",
                           tol_reason=P.tol_reason)  # fmt: skip
    want = priority(ritz.theta, P.which)[: min(P.k, K.n)]
    V = K.store.combine(ritz.S[:, want].to(dtype=P.dtype, device=P.device), K.n)
    lam, est = ritz.theta[want], ritz.est[want].clone()
    res, kind = est, "ritz"
    if not interrupted:
        try:
            res, kind = _certify(P, K, V, lam, est)
        except KeyboardInterrupt:
            interrupted = True
    K.store.close()
    within = res <= P.tol * K.anorm
    status, message = _verdict(P, K, kind, within, bool((est <= P.tol * K.anorm).all()), interrupted)
    if K.exhausted or K.n >= P.n_eff:
        message += f" (the Krylov space spans the whole {P.n_eff}-dimensional search space)"
    perm = _display_order(lam, P.which)
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
    fingerprint = None if checkpoint is None else operator_fingerprint(A)
    K = _start(P, v0, storage, checkpoint, fingerprint)
    bar = make_progress(P.budget, progress, f"eigsh {which} k={k}")
    bar.update(K.matvecs)  # a resumed run starts at the products already done
    ritz, interrupted = None, False
    try:
        while True:
            _expand(P, K, bar)
            ritz = _rayleigh_ritz(K)
            order, ok, worst = _wanted(P, K, ritz)
            bar.set_postfix(worst_residual=f"{worst:.1e}", restarts=K.restarts)
            if bool(ok.all()) or K.exhausted or K.n >= P.n_eff or K.matvecs >= P.budget:
                break
            _restart(P, K, ritz, order, int(ok.sum()), checkpoint, fingerprint)
    except KeyboardInterrupt:
        interrupted = True
        K.store.truncate(K.n + 1)
        ritz = _rayleigh_ritz(K) if K.n > 0 else None
    finally:
        bar.close()
    return _finish(P, K, ritz, interrupted, t0)
