"""A-posteriori error estimates of :func:`curvscope.linalg.sketch.sketched_eigh` (maths in that module's doc).

Internal module: residual checks of returned pairs and the probe estimates of ``‖A − Â‖``. On
sharded vectors every norm and projection is summed over the ranks (``plan.vectors.reduce``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from curvscope.linalg import blockstore as bs
from curvscope.linalg.sketch_recovery import TestMatrix, _Plan


def _columns(V: Tensor | bs.DiskMatrix, a: int, b: int, budget: int | None) -> Tensor:
    if isinstance(V, Tensor):
        return V[:, a:b]
    rows = max(1, (budget or bs.DEFAULT_WORKING_BYTES) // (2 * V.shape[1] * bs.bytes_per_entry(V.dtype)))
    return torch.cat([c[:, a:b] for _, c in V.iter_rows(rows)])


def residuals(mv, lam: Tensor, V, count: int, plan: _Plan, budget: int | None) -> Tensor:
    """``‖A vᵢ − λᵢ vᵢ‖`` of the first ``count`` pairs (extra products; NaN for the others)."""
    res = torch.full((len(lam),), float("nan"), dtype=torch.float64)
    for a in range(0, min(count, len(lam)), plan.b):
        b = min(count, len(lam), a + plan.b)
        Vb = _columns(V, a, b, budget).to(plan.device)
        R = (mv(Vb, "residuals") - Vb * lam[a:b].to(Vb.dtype).to(plan.device)).double()
        res[a:b] = plan.vectors.colnorms(R).cpu()
    return res


def tail_factor(num_probes: int, confidence: float) -> float:
    """``1/(1−ε)`` with ``(e^ε (1−ε))^{p/2} = δ``: ``‖E‖_F² ≤ est · factor`` w.p. ``≥ 1 − δ`` (Tropp et al. 2019, §6.4).

    Example:
        >>> round(tail_factor(30, 1e-3), 2)
        3.13
    """
    target = math.log(confidence) / (num_probes / 2)
    lo, hi = 0.0, 1.0 - 1e-15
    for _ in range(200):  # ε + log(1−ε) decreases from 0 to −∞ on [0, 1)
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid + math.log1p(-mid) > target else (lo, mid)
    return 1.0 / (1.0 - hi)


def error_estimates(mv, lam: Tensor, V, plan: _Plan, p: int, delta: float, budget: int | None) -> dict:
    """``‖A − Â‖_F`` estimate and its bounds from ``p`` Gaussian probes (see :mod:`curvscope.linalg.sketch`)."""
    if p == 0:
        nan = float("nan")
        return {"error_fro": nan, "error_fro_bound": nan, "error_2_bound": nan, "norm_fro": nan}
    Om = TestMatrix("gaussian", plan.dim, p, plan.seed, "error", plan.dtype, plan.b, plan.index)
    e2, a2, reduce = [], [], plan.vectors.reduce
    for j in range(len(Om)):  # probe blocks of the product block size: memory as for the sketch
        X = Om.block(j).to(plan.device)
        Y = mv(X, "error_probes")
        if isinstance(V, bs.DiskMatrix):
            low = V.matmul((lam[:, None] * V.rmatmul(X, budget)).to(plan.dtype), budget).to(plan.device)
        else:
            low = V @ (lam[:, None] * reduce(V.T @ X).double().cpu()).to(plan.dtype).to(plan.device)
        e2.append(reduce(((Y - low) ** 2).sum(0, dtype=torch.float64)).cpu())  # no float64 copy of the block
        a2.append(reduce((Y**2).sum(0, dtype=torch.float64)).cpu())
    e2t = torch.cat(e2)
    est = e2t.mean().sqrt().item()
    bound_fro = est * math.sqrt(tail_factor(p, delta))
    bound_2 = min(bound_fro, delta ** (-1 / p) * math.sqrt(2 / math.pi) * e2t.max().sqrt().item())
    norm = torch.cat(a2).mean().sqrt().item()
    return {"error_fro": est, "error_fro_bound": bound_fro, "error_2_bound": bound_2, "norm_fro": norm}
