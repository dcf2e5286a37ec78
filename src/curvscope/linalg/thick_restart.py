"""The steps of thick-restart Lanczos (Krylov–Schur), one function each; :func:`~curvscope.linalg.eigsh` runs them.

Algorithm (Wu & Simon 2000, "Thick-restart Lanczos"; Stewart 2001, "A Krylov–Schur
algorithm"): expand an orthonormal basis ``Q`` ``[D, m]`` by Lanczos steps with full
reorthogonalisation until it holds ``ncv`` vectors, so that

    A Q = Q H + β q_{m+1} e_mᵀ,    H = Qᵀ A Q  [m, m].

Rayleigh–Ritz: ``H = S diag(θ) Sᵀ``; the Ritz pair ``(θ_i, Q s_i)`` has residual norm
``‖A Q s_i − θ_i Q s_i‖ = β |S[m-1, i]|``. A pair meets the tolerance when its residual is
at most ``tol · ‖A‖`` (``‖A‖`` estimated by the largest ``|θ|`` seen). Restart: keep the
``p`` most wanted Ritz vectors ``Q S[:, :p]`` plus ``q_{m+1}``; the projected matrix becomes
``diag(θ_{:p})`` bordered by the arrow ``β S[m-1, :p]``, and the expansion continues. The
basis never exceeds ``ncv + 1`` vectors: memory ``(ncv + 1) · D`` numbers.

The steps: :func:`start` (start vector, or the state of a checkpoint), :func:`expand`
(Lanczos steps, :func:`lanczos_step`), :func:`rayleigh_ritz`, :func:`wanted` (the
convergence test), :func:`restart` (thick restart, checkpoint) and :func:`certify` (the
residuals of the returned pairs). The state they share is a :class:`Problem` (fixed inputs)
and a :class:`Krylov` (basis, projected matrix, counters).
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from curvscope.linalg.checkpoint import jsonable, load_state, save_state
from curvscope.linalg.lanczos import matmul_blocks, orthogonalize
from curvscope.linalg.products import check_product
from curvscope.linalg.space import LocalSpace
from curvscope.linalg.storage import BasisStorage, make_storage
from curvscope.memory import check_budget, vectors_bytes
from curvscope.operators.fingerprint import tensors_digest

WHICH = ("LA", "SA", "LM", "BE")


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


def display_order(values: Tensor, which: str) -> Tensor:
    """The order results are shown in: descending for ``LA``/``BE``, ascending for ``SA``, by ``|λ|`` for ``LM``."""
    if which in ("LA", "BE"):
        return torch.argsort(values, descending=True, stable=True)
    if which == "SA":
        return torch.argsort(values, stable=True)
    return torch.argsort(values.abs(), descending=True, stable=True)


@contextlib.contextmanager
def defer_sigint() -> Iterator[list[bool]]:
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


@dataclass
class Problem:
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
    space: LocalSpace  # local or sharded vectors (lengths space.local_dim)

    @property
    def config(self) -> dict:
        """What a checkpoint must match."""
        # the deflated vectors themselves, not only their count: other vectors give other eigenvalues
        deflate = 0 if self.Qd is None else tensors_digest([self.Qd])
        # a default tol follows the measured noise floor, which may differ slightly between runs
        # (free memory picks the float64 reference or a repeat): a checkpoint matches "the default"
        tol = "default" if self.tol_reason.startswith("default") else self.tol
        return {"D": self.D, "k": self.k, "which": self.which, "ncv": self.ncv, "tol": tol,
                "dtype": jsonable(self.dtype), "deflate": deflate}  # fmt: skip


@dataclass
class Krylov:
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
        """The counters a checkpoint saves."""
        return {k: getattr(self, k) for k in self._SAVED}

    def restore(self, values: dict) -> None:
        """Set the counters from a checkpoint."""
        for k in self._SAVED:
            setattr(self, k, type(getattr(self, k))(values[k]))


@dataclass
class Ritz:
    """The Rayleigh–Ritz pairs of the projected matrix."""

    theta: Tensor  # [n] ascending
    S: Tensor  # [n, n]
    est: Tensor  # [n] Lanczos residual estimates β|S[n-1, i]|


def start(P: Problem, v0: Tensor | None, storage: Any, checkpoint, fingerprint: dict | None) -> Krylov:
    """The first basis vector (``v0`` or Gaussian), or the state of the checkpoint's last restart."""
    d = P.space.local_dim
    q = (
        P.space.gaussian(1, P.gen, P.dtype, P.device)
        if v0 is None
        else v0.reshape(d, 1).to(dtype=P.dtype, device=P.device)
    )
    if P.Qd is not None:
        q = q - P.Qd @ P.space.inner(P.Qd, q)
    if float(P.space.norm(q)) == 0:
        raise ValueError("the start vector is zero (or inside the deflated space): pass another v0 or seed")
    if storage in ("device", "host"):  # memory guard: refuse before allocating a basis that cannot fit
        where = P.device if storage == "device" else torch.device("cpu")
        check_budget(vectors_bytes(d, P.ncv + 1, P.dtype), f"the eigsh basis ({P.ncv + 1} vectors of {d} "
                     f"coordinates, {P.dtype})", ["storage='disk'", "storage='host'" if where.type == "cuda" else
                     "a smaller k or ncv"], where)  # fmt: skip
    K = Krylov(
        make_storage(storage, d, P.ncv + 1, 1, P.dtype, P.device), torch.zeros(P.ncv, P.ncv, dtype=torch.float64)
    )
    state = load_state(checkpoint, P.config, P.gen, fingerprint)
    if state is None:
        K.store.append(q / P.space.norm(q))
        return K
    tensors, values = state  # continue from the last thick restart: same basis, counters, random stream
    for j in range(tensors["basis"].shape[1]):
        K.store.append(tensors["basis"][:, j : j + 1].to(dtype=P.dtype, device=P.device))
    K.restore(values)
    K.H[: K.n, : K.n] = tensors["H"]
    return K


def lanczos_step(P: Problem, K: Krylov) -> None:
    """One product and full reorthogonalisation; a fresh direction after an invariant subspace."""
    n = K.n
    x = K.store.column(n)
    w = check_product(x, P.A @ x, "eigsh")
    K.matvecs += 1
    K.scale = max(K.scale, float(P.space.norm(w)))
    h, w, b = orthogonalize(K.store, w, n + 1, P.Qd, space=P.space)
    hv = h[:, 0].to("cpu", torch.float64)
    K.H[: n + 1, n] = hv
    K.H[n, : n + 1] = hv
    b = float(b[0])
    if b <= P.btol * K.scale:  # invariant subspace: continue with a fresh direction
        R = P.space.gaussian(1, P.gen, P.dtype, P.device)
        r0 = float(P.space.norm(R))
        _, R, rn = orthogonalize(K.store, R, n + 1, P.Qd, space=P.space)
        K.exhausted = n + 1 >= P.n_eff or float(rn[0]) <= P.btol * r0
        qn, b = (torch.zeros_like(R) if K.exhausted else R / rn), 0.0
    else:
        qn = w / b
    K.store.append(qn)
    K.n, K.beta_last = n + 1, b


def rayleigh_ritz(K: Krylov) -> Ritz:
    """Eigenpairs of the projected matrix, their residual estimates; updates the ``‖A‖`` estimate."""
    theta, S = torch.linalg.eigh(K.H[: K.n, : K.n])
    K.anorm = max(K.anorm, float(theta.abs().max()))
    return Ritz(theta, S, (K.beta_last * S[-1]).abs())


def wanted(P: Problem, K: Krylov, ritz: Ritz) -> tuple[Tensor, Tensor, float]:
    """The convergence test: ``(order, ok, worst)``.

    ``order``: Ritz indices by priority; ``ok``: which of the ``k`` wanted estimates meet
    ``tol · ‖A‖``; ``worst``: the largest relative estimate among them.
    """
    order = priority(ritz.theta, P.which)
    est = ritz.est[order[: P.k]]
    return order, est <= P.tol * K.anorm, float(est.max()) / max(K.anorm, 1e-300)


def expand(P: Problem, K: Krylov, bar: Any) -> None:
    """Lanczos steps until the basis holds ``ncv`` vectors or the budget is spent.

    Every ``ncv/10`` steps a Rayleigh–Ritz checks whether the wanted estimates already meet
    the tolerance (no restart needed then).
    """
    check_every = max(1, P.ncv // 10)
    while K.n < P.ncv and K.matvecs < P.budget and not K.exhausted:
        lanczos_step(P, K)
        bar.update(1)
        if P.k < K.n < P.ncv and (K.n - K.last_check) >= check_every:
            K.last_check = K.n
            _, _, worst = wanted(P, K, rayleigh_ritz(K))
            bar.set_postfix(worst_residual=f"{worst:.1e}", restarts=K.restarts)
            if worst <= P.tol:
                return


def restart(P: Problem, K: Krylov, ritz: Ritz, order: Tensor, nconv: int, checkpoint, fingerprint) -> None:
    """Thick restart: keep the most wanted Ritz vectors and ``q_{m+1}``; save the state."""
    keep = max(1, min(K.n - 1, P.k + min(nconv, (K.n - P.k) // 2)))  # ARPACK's rule
    Y = ritz.S[:, order[:keep]]
    with defer_sigint():
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


def certify(P: Problem, K: Krylov, V: Tensor, lam: Tensor, est: Tensor) -> tuple[Tensor, str]:
    """Residuals of the returned pairs: measured (``"true"``), estimated, or the Lanczos estimates."""
    if P.residuals == "true":
        AV = matmul_blocks(P.A, V, P.block_size)
        K.matvecs += V.shape[1]
        return P.space.colnorms(AV - V * lam.to(dtype=P.dtype, device=P.device)).to("cpu", torch.float64), "true"
    if P.residuals == "estimated":
        n = K.n
        C = torch.randn(n, 2, generator=P.gen, dtype=torch.float64)
        C = C / C.norm(dim=0)
        AZ = matmul_blocks(P.A, K.store.combine(C.to(dtype=P.dtype, device=P.device), n), P.block_size)
        K.matvecs += 2
        pred = K.store.combine((K.H[:n, :n] @ C).to(dtype=P.dtype, device=P.device), n)
        pred = pred + K.store.column(n) * (K.beta_last * C[-1]).to(dtype=P.dtype, device=P.device)
        return est + math.sqrt(n) * float(P.space.colnorms(AZ - pred).max()), "estimated"
    return est, "ritz"
