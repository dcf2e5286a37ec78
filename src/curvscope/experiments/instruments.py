"""Measurement steps shared by the demo, ``analyze`` and the paper reproductions.

Each function runs one resumable step of a :class:`RunDir` (saved tensors + values) using
the library layers — operators, linalg, metrics — and never a private copy of them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from curvscope.experiments.run import Figure, RunDir, array_ref
from curvscope.linalg import eigsh, spectral_density, trace

#: Dense eigendecompositions are used up to this dimension (exact spectra; 2 CPU cores take ~10-45 s at D = 3000).
EXACT_MAX_DIM = 4000


def eigenpairs(
    run: RunDir,
    name: str,
    op: Any,
    k: int,
    *,
    which: str = "LA",
    tol: float | None = None,
    seed: int = 0,
    keep_vectors: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Top (or bottom) ``k`` eigenpairs with residuals ‖Av − λv‖, as step ``name``.

    ``tol=None`` leaves the tolerance to :func:`curvscope.linalg.eigsh` (its dtype-aware default);
    the step records the one used and the result's ``status`` (claims read it: see :func:`statuses`).
    """

    def compute() -> dict[str, Any]:
        res = eigsh(op, k=k, which=which, tol=tol, seed=seed, progress=progress)
        out = {
            "eigenvalues": res.eigenvalues.double().cpu(),
            "residuals": res.residuals.double().cpu(),
            "converged": res.converged.double().cpu(),
            "num_matvecs": int(res.num_matvecs),
            "status": str(res.status),
            "anorm": float(res.anorm),
            "tol": float(res.tol),
            "wall_time": float(res.wall_time),
        }
        if keep_vectors:
            out["eigenvectors"] = res.eigenvectors.cpu()
        return out

    return run.step(name, compute)


def exact_spectrum(run: RunDir, name: str, op: Any, keep_vectors: bool = False) -> dict[str, Any]:
    """All eigenvalues (and, if asked, eigenvectors: ``D²`` numbers) of a small operator, densely."""

    def compute() -> dict[str, Any]:
        D = op.shape[0]
        if D > EXACT_MAX_DIM:
            raise MemoryError(f"exact spectrum refused for D={D} > {EXACT_MAX_DIM}: use eigenpairs()/density()")
        A = op.to_dense().double().cpu()
        A = (A + A.T) / 2
        if not keep_vectors:
            return {"eigenvalues": torch.linalg.eigvalsh(A).flip(0), "dim": D, "status": "exact"}
        lam, Q = torch.linalg.eigh(A)
        return {"eigenvalues": lam.flip(0), "eigenvectors": Q.flip(1), "dim": D, "status": "exact"}

    return run.step(name, compute)


def density(
    run: RunDir,
    name: str,
    op: Any,
    *,
    num_probes: int = 10,
    num_steps: int = 80,
    seed: int = 0,
    grid_points: int = 1000,
    progress: bool = False,
    spectral_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """SLQ density (nodes, weights) and its Papyan-broadened pdf on a linear grid, as step ``name``."""

    def compute() -> dict[str, Any]:
        dens = spectral_density(op, "slq", num_probes, num_steps, seed=seed, progress=progress)
        lo, hi = spectral_range or dens.spectral_range
        pad = 0.05 * (hi - lo)
        grid = torch.linspace(lo - pad, hi + pad, grid_points, dtype=torch.float64)
        top, top_res = dens.top_eigenvalues(1)
        negative = dens.negative_mass()  # |λ| within the density's resolution counts as zero
        return {
            "grid": grid,
            "pdf": dens.pdf(grid).double(),
            "nodes": dens.nodes.double().cpu(),
            "weights": dens.weights.double().cpu(),
            "range_lo": float(dens.spectral_range[0]),
            "range_hi": float(dens.spectral_range[1]),
            "top_ritz": float(top[0]),
            "top_ritz_residual": float(top_res[0]),
            "num_matvecs": int(dens.num_matvecs),
            "wall_time": float(dens.wall_time),
            "status": str(dens.status),
            "negative_mass": float(negative.value),
            "negative_mass_band": float(negative.band),
            "negative_mass_unresolved": float(negative.raw),  # mass below 0, signs inside the band included
            "resolution": float(dens.resolution),
        }

    return run.step(name, compute)


def trace_estimate(
    run: RunDir, name: str, op: Any, *, num_matvecs: int = 60, seed: int = 0, method: str = "xtrace"
) -> dict[str, Any]:
    """Trace with standard error, as step ``name``."""

    def compute() -> dict[str, Any]:
        res = trace(op, method=method, num_matvecs=num_matvecs, seed=seed)
        return {
            "estimate": float(res.estimate),
            "stderr": float(res.stderr),
            "num_matvecs": int(res.num_matvecs),
            "method": method,
            "status": str(res.status),
        }

    return run.step(name, compute)


def statuses(**steps: dict[str, Any]) -> dict[str, str]:
    """``{label: status}`` of saved steps, for :attr:`Claim.inputs` (``statuses(eigsh_H=top)``).

    A step that recorded no status counts as ``"unverified"``: a claim never rests on a result
    that cannot vouch for itself (dense spectra record ``"exact"``).
    """
    return {label: str(values.get("status", "unverified")) for label, values in steps.items()}


def density_figure(
    fig_name: str, title: str, steps: dict[str, str], *, outliers: Tensor | None = None, caption: str = ""
) -> Figure:
    """Densities of several steps overlaid on a log-y axis; optional outlier eigenvalues as vertical lines."""
    series = [
        {"label": label, "x": array_ref(step, "grid"), "y": array_ref(step, "pdf")} for label, step in steps.items()
    ]
    vlines = []
    if outliers is not None:
        for i, lam in enumerate(outliers.tolist()):
            if math.isfinite(lam):
                vlines.append({"x": lam, "color": "red", "label": "top eigenvalues (eigsh)" if i == 0 else None})
    return Figure(
        fig_name, title, "eigenvalue λ", "density (log scale)", series=series, logy=True, vlines=vlines, caption=caption
    )


def sorted_eigenvalues_figure(
    fig_name: str, title: str, steps: dict[str, str], key: str = "eigenvalues", caption: str = ""
) -> Figure:
    """Eigenvalues by rank (scatter), one series per step."""
    series = []
    for label, step in steps.items():
        series.append({"label": label, "y": array_ref(step, key), "style": "scatter"})  # x: rank
    return Figure(fig_name, title, "rank", "eigenvalue", series=series, caption=caption)
