"""Shape of a Hessian spectrum: bulk/outlier split, logit-gradient clustering, the Goldilocks measure.

- :func:`split_spectrum` — outliers and bulk (Sagun et al. 2016/2017; Papyan 2019). Rule: among
  the top ``max_outliers`` positive eigenvalues (sorted descending), the number of outliers is
  ``argmax_i λ_i / λ_{i+1}`` when that largest relative gap is at least ``min_gap`` (else 0).
  With a spectral density ``(grid, φ)`` (SLQ/KPM) the bulk edge is instead the right end of
  the connected region around the density's mode where ``φ > edge_threshold · max φ``, and the
  outliers are the eigenvalues beyond it.
- :func:`logit_gradient_clustering` — Fort & Ganguli (2019): the gradients ``∇_θ z_c(x_i)`` of
  the logits cluster by logit ``c`` (weaker: by the input's class). Cosine-similarity matrix
  grouped by (logit, class) and the same-logit vs cross-logit mean cosines.
- :func:`goldilocks` — Fort & Scherlis (2018): the curvature on a random ``d``-dimensional
  hyperplane ``H_d = Mᵀ A M`` (``M`` ``[D, d]`` random orthonormal): ``Tr(H_d)/‖H_d‖_F`` (``√d`` for a
  multiple of ``I``, ``O(1)`` for a random symmetric matrix) and the fraction of positive
  eigenvalues of ``H_d``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from curvscope.common import SeedLike, Status, as_status, make_generator, make_progress
from curvscope.io import load_tensors, save_tensors
from curvscope.linalg.density import Density
from curvscope.linalg.precision import NOISE_FACTOR, WorkDtype, measured_noise_floor, resolve_work_dtype
from curvscope.linalg.products import check_product
from curvscope.linalg.sampling import gaussian


class _Saved:
    """save/load of a frozen dataclass: tensor fields as safetensors, the rest as JSON metadata."""

    def save(self, path: str) -> None:
        """Write to one safetensors file, atomically."""
        vals = {f.name: getattr(self, f.name) for f in fields(self)}
        save_tensors(path, {k: v for k, v in vals.items() if isinstance(v, Tensor)},
                     {k: v for k, v in vals.items() if not isinstance(v, Tensor)})  # fmt: skip

    @classmethod
    def load(cls, path: str) -> Any:
        """Read a file written by :meth:`save`."""
        tensors, meta = load_tensors(path)
        if "status" in meta:
            old = {"ok": "exact", "zero_curvature": "zero"}  # statuses of older files
            meta["status"] = as_status(old.get(meta["status"], meta["status"]))
        return cls(**tensors, **meta)


@dataclass(frozen=True)
class SpectrumSplit(_Saved):
    """Outliers and bulk of a spectrum (see :func:`split_spectrum` for the rule).

    Attributes:
        num_outliers: outliers by the primary rule (density edge when a density was given, else the gap).
        num_outliers_gap: outliers by the largest-relative-gap rule; gap_ratio: that ratio ``λ_i/λ_{i+1}``.
        outliers: ``[num_outliers]`` descending.
        bulk_edge: right end of the bulk; bulk_width: ``bulk_edge − left end`` of the bulk.
        negative_fraction: fraction of eigenvalues (of density mass) below ``−band``.
        negative_mass: ``Σ_{λ<−band}|λ| / Σ|λ|``; negative_ratio: ``|λ_min| / λ_max`` (0 when
            ``|λ_min| ≤ band``).
        effective_rank: ``exp(entropy(|λ|/Σ|λ|))`` (Roy & Vetterli 2007) of the given eigenvalues
            outside the band.
        rule: the rule that decided ``num_outliers``.
        band: eigenvalues with ``|λ| ≤ band`` were counted as zero (noise floor or density resolution).
        band_note: where the band came from.
    """

    num_outliers: int
    num_outliers_gap: int
    gap_ratio: float
    outliers: Tensor
    bulk_edge: float
    bulk_width: float
    negative_fraction: float
    negative_mass: float
    negative_ratio: float
    effective_rank: float
    rule: str
    band: float = 0.0
    band_note: str = "no band: every nonzero eigenvalue counts"


def _density_edges(grid: Tensor, phi: Tensor, threshold: float) -> tuple[float, float]:
    above = phi > threshold * phi.max()
    i = j = int(torch.argmax(phi))
    while j + 1 < len(phi) and above[j + 1]:
        j += 1
    while i > 0 and above[i - 1]:
        i -= 1
    return grid[i].item(), grid[j].item()


def _integral_below(grid: Tensor, f: Tensor, x: float = 0.0) -> float:
    """``∫_{t<x} f`` by the trapezoid rule, with ``f`` interpolated linearly at ``t = x``."""
    i = int(torch.searchsorted(grid, torch.tensor(x, dtype=grid.dtype), right=True)) - 1
    if i < 0:
        return 0.0
    if i >= len(grid) - 1:
        return torch.trapezoid(f, grid).item()
    w = (x - grid[i]) / (grid[i + 1] - grid[i])
    fx = f[i] + w * (f[i + 1] - f[i])
    return torch.trapezoid(f[: i + 1], grid[: i + 1]).item() + ((f[i] + fx) / 2 * (x - grid[i])).item()


def _band(lam: Tensor, density: Any, band: float | None, noise_floor: float | None) -> tuple[float, str]:
    """The zero band: the larger of ``band``, ``noise_floor · max|λ|`` and a :class:`Density`'s resolution."""
    parts = []
    if band is not None:
        parts.append((abs(float(band)), "given band"))
    if noise_floor is not None:
        parts.append((float(noise_floor) * lam.abs().max().item(), f"noise floor {noise_floor:.2g}·max|λ|"))
    if isinstance(density, Density) and band is None:
        parts.append((density.resolution, "the density's resolution"))
    if not parts:
        return 0.0, "no band: every nonzero eigenvalue counts"
    value, why = max(parts)
    return value, f"|λ| ≤ {value:.3g} counted as zero ({why})"


def _gap_rule(lam: Tensor, band: float, max_outliers: int, min_gap: float) -> tuple[int, float]:
    pos = lam[lam > band][: max_outliers + 1]
    ratios = pos[:-1] / pos[1:] if len(pos) > 1 else torch.zeros(0, dtype=torch.float64)
    gap_ratio = ratios.max().item() if len(ratios) else 1.0
    return (int(torch.argmax(ratios)) + 1 if len(ratios) and gap_ratio >= min_gap else 0), gap_ratio


def _density_statistics(density: Any, band: float, threshold: float) -> tuple[float, float, float, float]:
    """``(left, edge, negative_fraction, negative_mass)`` of ``(grid, φ)`` or a :class:`Density`."""
    if isinstance(density, Density):
        grid = density.grid(4001, margin=0.1)
        phi = density.pdf(grid)
    else:
        grid, phi = (t.detach().double().cpu() for t in density)
        if grid.shape != phi.shape or grid.ndim != 1:
            raise ValueError(f"density must be (grid [M], values [M]), got {tuple(grid.shape)}, {tuple(phi.shape)}")
    left, edge = _density_edges(grid, phi, threshold)
    if isinstance(density, Density):
        neg_frac = density.negative_mass(band).value
    else:
        neg_frac = _integral_below(grid, phi, -band) / torch.trapezoid(phi, grid).item()
    weighted = phi * grid.abs()
    neg_mass = _integral_below(grid, weighted, -band) / torch.trapezoid(weighted, grid).item()
    return left, edge, neg_frac, neg_mass


def split_spectrum(
    eigenvalues: Tensor,
    density: tuple[Tensor, Tensor] | Density | None = None,
    max_outliers: int = 30,
    min_gap: float = 1.5,
    edge_threshold: float = 1e-3,
    *,
    band: float | None = None,
    noise_floor: float | None = None,
) -> SpectrumSplit:
    """Split a spectrum into outliers and bulk.

    Eigenvalues with ``|λ| ≤ band`` count as zero: they are not outliers, not negative and do not
    enter the effective rank (round-off of a float32 Hessian puts thousands of them at ``±1e-6``).

    Args:
        eigenvalues: eigenvalues ``[n]`` (all of them, or the top ones of a large operator:
            the bulk statistics then describe only the given part).
        density: optional spectral density: ``(grid [M], φ [M])`` or a
            :class:`~curvscope.linalg.density.Density` (SLQ/KPM); gives the bulk edge, the bulk
            width and the negative fraction/mass of the whole spectrum.
        max_outliers: look for the gap among the top ``max_outliers + 1`` eigenvalues above the band.
        min_gap: the largest ratio ``λ_i/λ_{i+1}`` must reach this to count as a gap (else 0 outliers).
        edge_threshold: relative density level that ends the bulk.
        band: half-width of the zero band (eigenvalue units). Default: the largest of
            ``noise_floor · max|λ|`` and a ``Density``'s :attr:`~curvscope.linalg.density.Density.resolution`;
            0 when neither is given.
        noise_floor: the operator's relative noise floor (``A.noise_floor``).

    Example:
        >>> lam = torch.tensor([9.0, 7.0, 6.0, 1.0, 0.9, 0.5, 0.2, -0.1], dtype=torch.float64)
        >>> s = split_spectrum(lam)
        >>> s.num_outliers, s.outliers.tolist(), s.bulk_edge, round(s.negative_ratio, 4)
        (3, [9.0, 7.0, 6.0], 1.0, 0.0111)
        >>> split_spectrum(lam, noise_floor=0.02).negative_fraction  # |-0.1| <= 0.02·9: zero, not negative
        0.0
    """
    lam = torch.sort(eigenvalues.detach().double().cpu().reshape(-1), descending=True).values
    if lam.numel() == 0:
        raise ValueError("no eigenvalues given")
    width_band, note = _band(lam, density, band, noise_floor)
    n_gap, gap_ratio = _gap_rule(lam, width_band, max_outliers, min_gap)
    absl = torch.where(lam.abs() > width_band, lam.abs(), 0.0)
    total = absl.sum().item()
    p = absl[absl > 0] / max(total, 1e-300)
    eff = math.exp(-(p * p.log()).sum().item()) if len(p) else 0.0
    neg_ratio = max(0.0, -lam[-1].item() if -lam[-1] > width_band else 0.0) / lam[0].item() if lam[0] > 0 else math.inf
    negative = lam < -width_band
    if density is None:
        bulk = lam[n_gap:]
        edge, width = (bulk[0].item(), (bulk[0] - bulk[-1]).item()) if len(bulk) else (math.nan, math.nan)
        neg_frac = negative.double().mean().item()
        neg_mass = absl[negative].sum().item() / max(total, 1e-300)
        n_out, rule = n_gap, f"largest relative gap among the top {max_outliers + 1} positive eigenvalues >= {min_gap}"
    else:
        left, edge, neg_frac, neg_mass = _density_statistics(density, width_band, edge_threshold)
        width = edge - left
        n_out, rule = int((lam > edge).sum()), f"eigenvalues beyond the density's bulk edge (φ > {edge_threshold}·max)"
    return SpectrumSplit(n_out, n_gap, gap_ratio, lam[:n_out].clone(), edge, width, neg_frac, neg_mass, neg_ratio,
                         eff, rule, width_band, note)  # fmt: skip


@dataclass(frozen=True)
class LogitClustering(_Saved):
    """Cosine similarities of logit gradients grouped by (logit, class) (Fort & Ganguli 2019).

    Attributes:
        cosine: ``[n·C, n·C]`` cosine matrix, rows/columns ordered by logit, then class, then sample.
        logit, label: ``[n·C]`` the logit ``c`` and the sample's class of every row.
        same_logit: mean cosine between gradients of the same logit (different samples).
        cross_logit: mean cosine between gradients of different logits.
        same_logit_same_class, same_logit_cross_class: the same-logit mean split by the samples' classes.
        group_means: ``[C·K, C·K]`` mean cosine per pair of (logit, class) groups (``K`` classes).
    """

    cosine: Tensor
    logit: Tensor
    label: Tensor
    same_logit: float
    cross_logit: float
    same_logit_same_class: float
    same_logit_cross_class: float
    group_means: Tensor


def logit_gradient_clustering(grads: Tensor, labels: Tensor) -> LogitClustering:
    """Cosine-similarity structure of per-sample logit gradients ``∇_θ z_c(x_i)``.

    Args:
        grads: ``[n, C, D]`` gradient of logit ``c`` of sample ``i`` (e.g. rows of the
            per-sample Jacobians of :func:`curvscope.operators.dense.per_sample_jacobians`).
        labels: ``[n]`` classes of the samples.

    Example:
        >>> g = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.1], [0.1, 1.0]]], dtype=torch.float64)
        >>> r = logit_gradient_clustering(g, torch.tensor([0, 1]))
        >>> round(r.same_logit, 3), round(r.cross_logit, 3)
        (0.995, 0.1)
    """
    if grads.ndim != 3 or labels.shape != (grads.shape[0],):
        raise ValueError(f"need grads [n, C, D] and labels [n], got {tuple(grads.shape)} and {tuple(labels.shape)}")
    n, C, _ = grads.shape
    logit = torch.arange(C).repeat(n)
    label = labels.cpu().long().repeat_interleave(C)
    order = torch.argsort(logit * (int(label.max()) + 1) * n + label * n + torch.arange(n).repeat_interleave(C))
    X = grads.reshape(n * C, -1).double()[order]
    logit, label = logit[order], label[order]
    norms = X.norm(dim=1, keepdim=True)
    if (norms == 0).any():
        raise ValueError("a logit gradient is exactly zero: its cosine is undefined")
    X = X / norms
    cos = X @ X.T
    same_l = logit[:, None] == logit[None, :]
    same_c = label[:, None] == label[None, :]
    other = torch.ones_like(same_l)
    other.fill_diagonal_(False)
    sample = torch.arange(n).repeat_interleave(C)[order]
    other &= sample[:, None] != sample[None, :]  # different samples only

    def mean(sel: Tensor) -> float:
        return cos[sel].mean().item() if sel.any() else math.nan

    K = int(label.max()) + 1
    S = torch.nn.functional.one_hot(logit * K + label, C * K).double()  # [n·C, groups]
    W = other.double()
    counts = S.T @ W @ S
    means = torch.where(counts > 0, (S.T @ (cos * W) @ S) / counts.clamp(min=1), math.nan)
    return LogitClustering(cos, logit, label, mean(same_l & other), mean(~same_l & other),
                           mean(same_l & same_c & other), mean(same_l & ~same_c & other), means)  # fmt: skip


@dataclass(frozen=True)
class GoldilocksResult(_Saved):
    """Curvature on a random ``d``-dimensional hyperplane (Fort & Scherlis 2018).

    Attributes:
        trace_ratio: ``Tr(H_d)/‖H_d‖_F`` (``√d`` for ``c·I``, ``O(1)`` for a random symmetric matrix).
        positive_fraction: fraction of eigenvalues of ``H_d`` above ``noise_band`` (resolved as positive).
        eigenvalues: ``[d]`` ascending eigenvalues of ``H_d``.
        d, seed, num_matvecs, wall_time: what was run and what it cost (``seed`` is ``None`` when a
            generator or an explicit basis was given).
        status: :class:`~curvscope.common.Status` ``exact`` (``H_d`` is computed exactly) or ``zero``
            (``H_d = 0``: the ratio is undefined, NaN).
        message: what happened.
        noise_band: eigenvalues with ``|λ| ≤ noise_band`` cannot be signed: Weyl's bound on how far the
            products' rounding moves an eigenvalue of ``H_d``, ``NOISE_FACTOR · max(noise_floor,
            eps(dtype)) · ‖A M‖_F`` (each product's relative rounding is at most the operator's
            measured ``noise_floor``, so the error matrix ``E`` has ``‖E‖₂ ≤ ‖E‖_F ≤ noise · ‖A M‖_F``;
            the factor covers the floor's own estimate, as for eigensolver tolerances).
        unresolved_fraction: fraction of eigenvalues of ``H_d`` inside the noise band.
    """

    trace_ratio: float
    positive_fraction: float
    eigenvalues: Tensor
    d: int
    seed: int | None
    num_matvecs: int
    wall_time: float
    status: Status
    message: str = ""
    noise_band: float = 0.0
    unresolved_fraction: float = 0.0


def random_orthonormal(D: int, d: int, seed: SeedLike = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """``M`` ``[D, d]`` with orthonormal columns, uniformly distributed (QR of a seeded Gaussian, sign-fixed).

    Example:
        >>> M = random_orthonormal(5, 2, seed=0)
        >>> torch.allclose(M.T @ M, torch.eye(2, dtype=torch.float64))
        True
    """
    if not 1 <= d <= D:
        raise ValueError(f"need 1 <= d <= D, got d={d}, D={D}")
    Q, R = torch.linalg.qr(gaussian(D, d, make_generator(seed), torch.float64))
    return (Q * torch.sign(torch.diagonal(R))).to(dtype)


def _restricted(A: Any, M: Tensor, block_size: int | None, bar: Any) -> tuple[Tensor, float]:
    """``H_d = Mᵀ A M`` ``[d, d]`` float64 and ``‖A M‖_F`` (the scale of the products' rounding error).

    Products of ``block_size`` columns at a time, cast to ``A.dtype``.
    """
    d = M.shape[1]
    bs = d if block_size is None else int(block_size)
    Hd = torch.empty(d, d, dtype=torch.float64)
    sq_norm = 0.0
    for s in range(0, d, bs):
        X = M[:, s : s + bs].to(dtype=A.dtype)
        AM = check_product(X, A @ X, "goldilocks").to(M.dtype)
        Hd[:, s : s + bs] = (M.T @ AM).double().cpu()
        sq_norm += float(AM.double().square().sum())
        bar.update(AM.shape[1])
    return (Hd + Hd.T) / 2, math.sqrt(sq_norm)


def goldilocks(
    A: Any,
    d: int,
    seed: SeedLike = 0,
    basis: Tensor | None = None,
    *,
    block_size: int | None = None,
    progress: bool | None = None,
    work_dtype: WorkDtype = "auto",
    checkpoint: None = None,
) -> GoldilocksResult:
    """``Tr(H_d)/‖H_d‖_F`` and the positive fraction of ``H_d = Mᵀ A M``, ``M`` random orthonormal ``[D, d]``.

    Costs ``d`` products with ``A`` and a dense ``d × d`` ``eigvalsh``.

    Args:
        A: symmetric operator ``[D, D]`` (e.g. :class:`~curvscope.operators.Hessian`).
        d: hyperplane dimension.
        seed: int or ``torch.Generator`` of ``M``.
        basis: an explicit ``[D, d]`` orthonormal ``M`` instead (``seed`` is then ignored).
        block_size: columns of ``M`` per product ``A @ X`` (default all ``d``: one pass over the data).
        progress: show a progress bar (default ``None``: only on a terminal).
        work_dtype: dtype of ``M`` and of ``Mᵀ(AM)`` (``"auto"``: float64 when ``M`` fits); products
            run in ``A.dtype``.
        checkpoint: not supported (``d`` products are one pass): must be ``None``.

    Example:
        >>> from curvscope.operators import DenseOperator
        >>> r = goldilocks(DenseOperator(3.0 * torch.eye(50, dtype=torch.float64)), d=16)
        >>> round(r.trace_ratio, 10), r.positive_fraction, r.status
        (4.0, 1.0, <Status.EXACT: 'exact'>)
    """
    t0 = time.perf_counter()
    if checkpoint is not None:
        raise ValueError("goldilocks is not resumable (its d products are one pass): drop checkpoint=")
    if block_size is not None and int(block_size) < 1:
        raise ValueError(f"block_size must be a positive number of columns, got {block_size}")
    D = int(A.shape[0])
    wd = resolve_work_dtype(work_dtype, A.dtype, D, 2 * d, "device", A.device, "goldilocks")
    M = random_orthonormal(D, d, seed, wd) if basis is None else basis.to(wd)
    if M.shape != (D, d):
        raise ValueError(f"basis must be [{D}, {d}], got {tuple(M.shape)}")
    bar = make_progress(d, progress, "goldilocks")
    try:
        Hd, am_norm = _restricted(A, M.to(A.device), block_size, bar)
    finally:
        bar.close()
    evals = torch.linalg.eigvalsh(Hd)
    noise = max(measured_noise_floor(A) or 0.0, torch.finfo(A.dtype).eps)
    band = NOISE_FACTOR * noise * am_norm
    fro = torch.linalg.matrix_norm(Hd).item()
    # exact up to round-off only for float64 products; below float64 the d × d matrix carries their rounding
    trusted = Status.EXACT if A.dtype == torch.float64 else Status.COMPLETED
    status = trusted if fro > 0 else Status.ZERO
    message = f"H_d from {d} products" if fro > 0 else "H_d is zero on this subspace: the trace ratio is undefined"
    if fro > 0 and A.dtype != torch.float64:
        message += f" in {str(A.dtype).removeprefix('torch.')} (exact up to their rounding)"
    ratio = Hd.trace().item() / fro if fro > 0 else math.nan
    seed_value = int(seed) if isinstance(seed, int) and basis is None else None
    positive, unresolved = ((evals > band).double().mean().item(), (evals.abs() <= band).double().mean().item())
    return GoldilocksResult(ratio, positive, evals, d, seed_value, d, time.perf_counter() - t0, status, message,
                            band, unresolved)  # fmt: skip
