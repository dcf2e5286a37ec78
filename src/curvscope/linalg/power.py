"""Power iteration with deflation: PyHessian's method, kept as a baseline for comparisons only."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from curvscope.linalg.eigsh import EigshResult
from curvscope.linalg.lanczos import check_operator
from curvscope.linalg.sampling import SeedLike, gaussian, make_generator


def power_iteration(
    A: Any,
    k: int = 1,
    *,
    num_matvecs: int = 1000,
    tol: float = 1e-3,
    seed: SeedLike = 0,
) -> EigshResult:
    """Largest-magnitude eigenpairs by power iteration with deflation — a baseline only.

    PyHessian's method: iterate ``v ← Av/‖Av‖`` (orthogonal to the pairs already found)
    until the Rayleigh quotient changes by less than ``tol`` relatively; then the next
    pair. Converges at the rate ``|λ_{i+1}/λ_i|`` per product, so slowly on clustered
    spectra; use :func:`eigsh`. Residuals ``‖Av − λv‖`` are measured from the last product
    (free) and a pair is flagged converged only if its residual is ``≤ tol · |λ_1|``.

    Args:
        A: symmetric operator.
        k: number of pairs (found one after the other).
        num_matvecs: total product budget.
        tol: relative change of the eigenvalue that stops one pair; also the residual tolerance.
        seed: seed or generator for the start vectors.

    Returns:
        An :class:`EigshResult` (``which="LM"``, ``residual_kind="true"``).

    Example:
        >>> import torch
        >>> from curvscope.operators import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.tensor([1.0, 2.0, 10.0], dtype=torch.float64)))
        >>> round(float(power_iteration(A, tol=1e-12).eigenvalues[0]), 8)
        10.0
    """
    t0 = time.perf_counter()
    D, dtype, device = check_operator(A)
    gen = make_generator(seed)
    vals, vecs, res = [], [], []
    matvecs = 0
    for _ in range(k):
        v = gaussian(D, 1, gen, dtype, device)
        found = torch.cat(vecs, dim=1) if vecs else None
        lam, r = 0.0, math.inf
        while matvecs < num_matvecs:
            if found is not None:
                v = v - found @ (found.T @ v)
            v = v / v.norm()
            w = A @ v
            matvecs += 1
            new = float(v.T @ w)
            r = float((w - new * v).norm())
            done = abs(new - lam) <= tol * (abs(new) + 1e-6)
            lam = new
            if done:
                break
            v = w
        vals.append(lam)
        vecs.append(v)
        res.append(r)
        if matvecs >= num_matvecs:
            break
    lam_t = torch.tensor(vals, dtype=torch.float64)
    res_t = torch.tensor(res, dtype=torch.float64)
    anorm = float(lam_t.abs().max()) if vals else 0.0
    conv = res_t <= tol * anorm
    status = "converged" if bool(conv.all()) and len(vals) == k else "max_matvecs"
    return EigshResult(
        eigenvalues=lam_t,
        eigenvectors=torch.cat(vecs, dim=1) if vecs else torch.zeros(D, 0, dtype=dtype, device=device),
        residuals=res_t,
        converged=conv,
        anorm=anorm,
        tol=tol,
        which="LM",
        num_matvecs=matvecs,
        num_restarts=0,
        basis_nbytes=(len(vecs) + 2) * D * torch.empty((), dtype=dtype).element_size(),
        wall_time=time.perf_counter() - t0,
        status=status,
        message=f"power iteration: {int(conv.sum())} of {k} pairs with residual ≤ tol·|λ₁| in {matvecs} products",
    )
