"""Power iteration with deflation: PyHessian's method, kept as a baseline for comparisons only.

With ``block_size=b > 1`` it is simultaneous (orthogonal) iteration: ``b`` vectors are
multiplied in one block product, kept orthonormal, and rotated to their Ritz vectors
(Rutishauser 1970); ``b = 1`` is PyHessian's power iteration. The ``k`` pairs are found in
groups of ``b``, each group deflated against the pairs already found.

Every returned vector is a unit vector that was multiplied by the operator, and its residual
``‖A v − λ v‖`` is measured from that product — also when the budget runs out mid-group.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from curvscope.common import SeedLike, Status, make_generator, make_progress
from curvscope.linalg.checkpoint import jsonable, load_state, save_state
from curvscope.linalg.eigsh import EigshResult
from curvscope.linalg.lanczos import check_block_size, check_operator
from curvscope.linalg.precision import WorkDtype, promote, resolve_tol, resolve_work_dtype
from curvscope.linalg.products import check_product
from curvscope.linalg.space import LocalSpace, space_of
from curvscope.operators.fingerprint import operator_fingerprint

#: A checkpoint is written when a group of pairs finishes, and otherwise at most this often (seconds).
CHECKPOINT_SECONDS = 30.0


@dataclass
class _Pairs:
    """Pairs found so far (one entry per finished group) and the group in progress."""

    vals: list[Tensor] = field(default_factory=list)  # [b] float64 each
    vecs: list[Tensor] = field(default_factory=list)  # [D, b] unit columns each
    res: list[Tensor] = field(default_factory=list)  # [b] measured residuals each
    V: Tensor | None = None  # the block to multiply next (None: start a new group)
    last: tuple[Tensor, Tensor, Tensor] | None = None  # (θ, Ritz vectors, residuals) of the last product
    matvecs: int = 0

    @property
    def found(self) -> int:
        return sum(v.numel() for v in self.vals)

    def finish_group(self) -> None:
        if self.last is not None:
            theta, X, r = self.last
            self.vals.append(theta), self.vecs.append(X), self.res.append(r)
        self.V = self.last = None


def _orthonormal(V: Tensor, found: Tensor | None, space: LocalSpace) -> Tensor:
    """``V`` deflated against ``found`` and orthonormalised (``b = 1``: normalised, as PyHessian).

    Sharded vectors take the space's Cholesky QR (reduced Gram matrix); its ``R`` has a positive
    diagonal, the sign convention applied to the local Householder QR below.
    """
    if found is not None:
        V = V - found @ space.inner(found, V)
    if V.shape[1] == 1:
        return V / space.norm(V)
    if space.sharded:
        return space.orthonormalize(V)
    Q, R = torch.linalg.qr(V)
    return Q * torch.sign(torch.diagonal(R)).where(torch.diagonal(R) != 0, 1)


def _iterate(A: Any, p: _Pairs, tol: float, space: LocalSpace) -> bool:
    """One block product and Rayleigh–Ritz in its span; whether every residual meets ``tol · ‖A‖``.

    ``‖A‖`` is estimated by the largest ``|θ|`` seen (pairs already found included).
    """
    found = torch.cat(p.vecs, dim=1) if p.vecs else None
    V = _orthonormal(p.V, found, space)
    W = check_product(V, A @ V, "power_iteration")
    p.matvecs += V.shape[1]
    H = space.inner(V, W)
    theta, S = torch.linalg.eigh(0.5 * (H + H.T))
    order = torch.argsort(theta.abs(), descending=True, stable=True)
    theta, S = theta[order], S[:, order]
    X, AX = V @ S, W @ S  # unit Ritz vectors and their products (A(VS) = (AV)S)
    r = space.colnorms(AX - X * theta).to("cpu", torch.float64)
    theta64 = theta.to("cpu", torch.float64)
    p.last, p.V = (theta64, X, r), AX
    anorm = max([float(theta64.abs().max())] + [float(v.abs().max()) for v in p.vals])
    return bool((r <= tol * anorm).all())


def _save(checkpoint, config: dict, gen: torch.Generator, p: _Pairs, fingerprint: dict) -> None:
    tensors = {
        f"{name}{i}": t for name, ts in (("val", p.vals), ("vec", p.vecs), ("res", p.res)) for i, t in enumerate(ts)
    }
    if p.V is not None:
        tensors.update(V=p.V, last_val=p.last[0], last_vec=p.last[1], last_res=p.last[2])
    save_state(checkpoint, config, gen, tensors, {"groups": len(p.vals), "matvecs": p.matvecs}, fingerprint)


def _load(checkpoint, config: dict, gen: torch.Generator, fingerprint: dict | None, dtype, device) -> _Pairs:
    p = _Pairs()
    state = load_state(checkpoint, config, gen, fingerprint)
    if state is None:
        return p
    t, values = state
    on = {"dtype": dtype, "device": device}
    for i in range(int(values["groups"])):
        p.vals.append(t[f"val{i}"]), p.vecs.append(t[f"vec{i}"].to(**on)), p.res.append(t[f"res{i}"])
    if "V" in t:
        p.V, p.last = t["V"].to(**on), (t["last_val"], t["last_vec"].to(**on), t["last_res"])
    p.matvecs = int(values["matvecs"])
    return p


def _result(p: _Pairs, k: int, b: int, tol: float, tol_reason: str, d: int, dtype, device, exhausted: bool,
            interrupted: bool, t0: float) -> EigshResult:  # fmt: skip
    lam = torch.cat(p.vals) if p.vals else torch.zeros(0, dtype=torch.float64)
    res = torch.cat(p.res) if p.res else torch.zeros(0, dtype=torch.float64)
    anorm = float(lam.abs().max()) if lam.numel() else 0.0
    conv = res <= tol * anorm
    n, nconv = lam.numel(), int(conv.sum())
    if interrupted:
        status, msg = Status.INTERRUPTED, f"interrupted: {n} of {k} pairs returned"
    elif n == k and nconv == k:
        status, msg = Status.CONVERGED, f"{k} pairs with measured residual ≤ tol·|λ₁|"
    else:
        status, msg = (
            Status.MAX_MATVECS,
            f"{n} of {k} pairs returned, {nconv} within tol: raise num_matvecs or use eigsh",
        )
    vecs = torch.cat(p.vecs, dim=1) if p.vecs else torch.zeros(d, 0, dtype=dtype, device=device)
    return EigshResult(
        eigenvalues=lam, eigenvectors=vecs,
        residuals=res, converged=conv, anorm=anorm, tol=tol, which="LM", num_matvecs=p.matvecs, num_restarts=0,
        basis_nbytes=(k + 2 * b) * d * torch.empty((), dtype=dtype).element_size(),
        wall_time=time.perf_counter() - t0, status=status, message=f"power iteration: {msg} in {p.matvecs} products",
        residual_kind="true", tol_reason=tol_reason,
    )  # fmt: skip


def power_iteration(
    A: Any,
    k: int = 1,
    *,
    num_matvecs: int = 1000,
    tol: float = 1e-3,
    seed: SeedLike = 0,
    progress: bool | None = None,
    block_size: int | None = 1,
    work_dtype: WorkDtype = "auto",
    checkpoint: str | os.PathLike | None = None,
) -> EigshResult:
    """Largest-magnitude eigenpairs by power iteration with deflation — a baseline only.

    PyHessian's method: iterate ``v ← Av/‖Av‖`` (orthogonal to the pairs already found),
    then the next pair. Converges at the rate ``|λ_{i+1}/λ_i|`` per product, so slowly on
    clustered spectra; use :func:`eigsh`. The residual ``‖Av − λv‖`` of the current unit
    vector comes free with every product, so a pair stops (and counts as converged) when it
    is ``≤ tol · ‖A‖`` (``‖A‖``: the largest ``|λ|`` seen) — the meaning ``tol`` has in
    :func:`eigsh`. (PyHessian stops instead when ``λ`` changes by less than ``tol``
    relatively, which happens while the residual is still about ``sqrt(tol)``.)

    Args:
        A: symmetric operator.
        k: number of pairs.
        num_matvecs: total product budget (a block of ``b`` vectors counts ``b``).
        tol: relative residual tolerance (raised with a warning to what the products can
            resolve, see :mod:`curvscope.linalg.precision`).
        seed: seed or generator for the start vectors.
        progress: show a progress bar (default ``None``: only on a terminal).
        block_size: vectors per product ``b``: pairs are found ``b`` at a time by simultaneous
            iteration (``1``: PyHessian's power iteration; ``None``: all ``k`` at once).
        work_dtype: dtype of the vectors and the Rayleigh–Ritz arithmetic (``"auto"``: float64
            when it fits; products run in the operator's dtype).
        checkpoint: a file where the state is saved (atomically) when a group finishes and at
            most every :data:`CHECKPOINT_SECONDS` otherwise; a run called again with it continues
            where it was saved (refused for another operator, as :func:`eigsh`).

    Returns:
        An :class:`EigshResult` (``which="LM"``, ``residual_kind="true"``); on Ctrl-C the pairs
        found so far (the group in progress at its last product), ``status="interrupted"``.

    Example:
        >>> import torch
        >>> from curvscope.operators import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.tensor([1.0, 2.0, 10.0], dtype=torch.float64)))
        >>> round(float(power_iteration(A, tol=1e-12).eigenvalues[0]), 8)
        10.0
    """
    t0 = time.perf_counter()
    D, op_dtype, device = check_operator(A)
    space = space_of(A)  # sharded (FSDP) operators: each rank iterates on its rows, reductions are global
    if space.sharded and checkpoint is not None:
        raise ValueError("power_iteration checkpoints hold whole vectors: run a sharded operator without checkpoint")
    if not 1 <= k <= D:
        raise ValueError(f"k must be between 1 and {D}, got {k}")
    b = min(k, check_block_size(block_size) or k)
    dtype = resolve_work_dtype(work_dtype, op_dtype, space.local_dim, k + 2 * b, "device", device, "power_iteration",
                               space=space)  # fmt: skip
    tol, tol_reason = resolve_tol(tol, A, op_dtype, dtype, "power_iteration")
    gen = make_generator(seed)
    fingerprint = None if checkpoint is None else operator_fingerprint(A)
    config_tol = "default" if tol_reason.startswith("default") else tol  # the floor may vary slightly between runs
    config = {"D": D, "k": k, "tol": config_tol, "block_size": b, "dtype": jsonable(dtype)}
    p = _load(checkpoint, config, gen, fingerprint, dtype, device)
    A = promote(A, dtype)
    bar = make_progress(num_matvecs, progress, f"power iteration k={k}")
    bar.update(p.matvecs)
    exhausted, interrupted, saved = False, False, time.monotonic()
    try:
        while p.found < k and not exhausted:
            if p.V is None:
                p.V = space.gaussian(min(b, k - p.found), gen, dtype, device)
            while True:
                if p.matvecs + p.V.shape[1] > num_matvecs:
                    exhausted = True
                    break
                done = _iterate(A, p, tol, space)
                bar.update(p.V.shape[1])
                if done:
                    break
                if checkpoint is not None and time.monotonic() - saved >= CHECKPOINT_SECONDS:
                    _save(checkpoint, config, gen, p, fingerprint)
                    saved = time.monotonic()
            p.finish_group()
            if checkpoint is not None:
                _save(checkpoint, config, gen, p, fingerprint)
                saved = time.monotonic()
    except KeyboardInterrupt:
        interrupted = True
        p.finish_group()
    finally:
        bar.close()
    return _result(p, k, b, tol, tol_reason, space.local_dim, dtype, device, exhausted, interrupted, t0)
