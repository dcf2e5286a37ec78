"""Spectral densities: stochastic Lanczos quadrature (SLQ) and the kernel polynomial method (KPM).

The spectral density of a symmetric ``A`` (``D x D``) is ``φ(t) = (1/D) Σ_i δ(t − λ_i)``.
For a unit probe ``v`` with ``E[v vᵀ] = I/D``, ``E[vᵀ f(A) v] = ∫ f φ``.

- **SLQ** (Golub & Meurant 1994; Ubaru, Chen & Saad 2017; Ghorbani, Krishnan & Xiao 2019;
  Papyan 2019): ``m`` Lanczos steps from ``v`` give ``T_m = U diag(θ) Uᵀ`` and the Gauss
  quadrature ``vᵀ f(A) v ≈ Σ_l τ_l² f(θ_l)``, ``τ_l = U[0, l]``. The density estimate is
  the probe average of these discrete measures; broadening is applied afterwards.
  All probes run as one block Lanczos-like pass (``A @ V`` ``[D, P]`` per step).
- **KPM** (Silver & Röder 1994; Weiße et al. 2006; Lin, Saad & Yang 2016): rescale
  ``Ã = (A − a)/b`` to ``[-1, 1]`` (range from a short Lanczos run plus a margin), estimate
  Chebyshev moments ``μ_k = vᵀ T_k(Ã) v`` (two moments per product with
  ``T_{2k} = 2T_k² − 1``, ``T_{2k+1} = 2T_{k+1}T_k − T_1``), and sum the damped series
  ``φ(x) = (g₀μ₀ + 2 Σ_k g_k μ_k T_k(x)) / (π √(1 − x²))`` with Jackson damping ``g_k``.

Broadening conventions (``Density.pdf``):

- ``"papyan"`` (default for SLQ): on the spectrum rescaled to ``[-1, 1]`` by the Ritz bounds
  plus a 5% margin, a Gaussian of width ``σ = (2/(m − 1)) / √(8 ln κ)`` (κ = 3).
- ``"pyhessian"``: ``σ² = 1e-5 · max(1, λmax − λmin)`` used as the kernel variance, the
  curve renormalised to integrate to one on the grid (Ghorbani et al. / PyHessian).
- ``"gaussian"`` with an explicit standard deviation ``sigma``.

Resolution (``Density.resolution``, eigenvalue units): a density cannot tell an eigenvalue at
``±r`` from one at 0 when ``r`` is below

    resolution = √(w² + (noise_floor · ‖A‖)²)

with ``w`` the kernel width — SLQ: Papyan's ``σ`` above, ``(2/(m−1))/√(8 ln 3) · (λmax−λmin)(1.1)/2``;
KPM: the Jackson kernel's width ``π b / (M + 1)`` for ``M`` moments on ``[a − b, a + b]`` — and
``noise_floor`` the operator's relative noise (``A.noise_floor``: round-off or data noise of its
products, ``None`` when unknown), ``‖A‖ ≈ max(|λmin|, |λmax|)``. Sign questions are asked
outside that band: :meth:`Density.negative_mass` is the mass below ``−resolution`` (a Ritz node
standing for a huge near-zero cluster may sit at ``−1e-4 · λmax`` and would otherwise count
the whole cluster as negative curvature).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from curvscope.common import SeedLike, Status, as_status, make_generator, make_progress
from curvscope.io import load_tensors, save_tensors
from curvscope.linalg import density_runs as runs
from curvscope.linalg.lanczos import check_operator
from curvscope.linalg.precision import WorkDtype, measured_noise_floor, promote, resolve_work_dtype
from curvscope.linalg.results import FloatResult
from curvscope.linalg.space import space_of
from curvscope.linalg.storage import StorageFactory

METHODS = ("slq", "kpm")
SLQ_BROADENINGS = ("papyan", "pyhessian", "gaussian")
KPM_KERNELS = runs.KPM_KERNELS

F64 = torch.float64


def _as_t(t: Any) -> Tensor:
    return torch.as_tensor(t, dtype=F64).reshape(-1)


def wasserstein1(nodes: Tensor, weights: Tensor, eigenvalues: Tensor) -> float:
    """``W₁ = ∫ |F(t) − G(t)| dt`` between ``Σ w δ(t − x)`` and the uniform measure on ``eigenvalues``.

    Args:
        nodes: atoms ``[n]`` (any shape, flattened).
        weights: their masses (normalised here to sum to one).
        eigenvalues: exact eigenvalues ``[D]`` (each of mass ``1/D``).

    Example:
        >>> import torch
        >>> wasserstein1(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([0.0, 2.0]))
        1.0
    """
    x, w = _as_t(nodes), _as_t(weights)
    w = w / w.sum()
    lam = _as_t(eigenvalues)
    y, v = lam, torch.full_like(lam, 1.0 / lam.numel())
    pts = torch.cat([x, y])
    mass = torch.cat([w, -v])
    order = torch.argsort(pts)
    pts, diff = pts[order], torch.cumsum(mass[order], 0)
    return float((diff[:-1].abs() * (pts[1:] - pts[:-1])).sum())


@dataclass(frozen=True, eq=False)
class BandedMass(FloatResult):
    """A mass of a density (a fraction of eigenvalues) with ``|λ| ≤ band`` counted as zero.

    Also a ``float`` equal to ``value``.

    Attributes:
        value: the fraction, band applied (e.g. the mass below ``−band`` for a negative mass).
        threshold: the ``t`` of "fraction ``≤ t``" (0 for a negative mass).
        band: half-width of the band around 0 treated as zero (eigenvalue units).
        raw: the same fraction without the band (what :meth:`Density.mass_below` says).
        within_band: mass with ``|λ| ≤ band``.
        note: in words, what was counted as zero and why.
    """

    value: float
    threshold: float
    band: float
    raw: float
    within_band: float
    note: str


@dataclass(frozen=True)
class Density:
    """An estimated spectral density; broadening and grids are applied after the products.

    Attributes:
        method: ``"slq"`` or ``"kpm"``.
        dim: ``D``.
        spectral_range: ``(lo, hi)``: the Ritz bounds (SLQ) or the rescaling interval (KPM).
        nodes: SLQ Ritz values per probe ``[P, m]`` (zero past a probe's length).
        weights: SLQ quadrature weights ``τ²`` ``[P, m]`` (each row sums to 1; zero padding).
        node_residuals: Ritz residual bounds ``β_m |U[m-1, l]|`` ``[P, m]``.
        moments: KPM Chebyshev moments per probe ``[P, M]``.
        num_steps: Lanczos steps (SLQ) or Chebyshev products (KPM) per probe.
        num_matvecs: products spent (including the KPM range estimate).
        wall_time: seconds.
        status: a :class:`~curvscope.common.Status`: ``completed``, ``interrupted``, or
            ``range_exceeded`` (KPM: the spectrum left the rescaling interval).
        message: what happened.
        noise_floor: the operator's relative noise floor (``A.noise_floor``), or ``None``.
        work_dtype: the dtype of the Krylov/Chebyshev arithmetic (e.g. ``"torch.float64"``).
    """

    method: str
    dim: int
    spectral_range: tuple[float, float]
    nodes: Tensor | None
    weights: Tensor | None
    node_residuals: Tensor | None
    moments: Tensor | None
    num_steps: int
    num_matvecs: int
    wall_time: float
    status: Status
    message: str
    noise_floor: float | None = None
    work_dtype: str | None = None

    # ---------------------------------------------------------------- helpers
    def _need(self, method: str, what: str) -> None:
        if self.method != method:
            raise ValueError(f"{what} needs an {method.upper()} density; this one is {self.method.upper()}")

    def _atoms(self) -> tuple[Tensor, Tensor]:
        P = self.weights.shape[0]
        return self.nodes.reshape(-1), self.weights.reshape(-1) / P

    def _rescale(self) -> tuple[float, float]:
        lo, hi = self.spectral_range
        return 0.5 * (hi + lo), max(0.5 * (hi - lo), 1e-300)

    def sigma(self, broadening: str = "papyan", kappa: float = 3.0, margin: float = 0.05) -> float:
        """Gaussian width (standard deviation, in eigenvalue units) of an SLQ broadening rule."""
        lo, hi = self.spectral_range
        width = hi - lo
        if broadening == "papyan":
            half = 0.5 * width * (1 + 2 * margin)
            return (2.0 / max(self.num_steps - 1, 1)) / math.sqrt(8 * math.log(kappa)) * max(half, 1e-300)
        if broadening == "pyhessian":
            return math.sqrt(1e-5 * max(1.0, width + 0.02))
        raise ValueError(f"broadening {broadening!r} has no rule; valid: {SLQ_BROADENINGS} (gaussian needs sigma)")

    # ------------------------------------------------------------- resolution
    @property
    def norm(self) -> float:
        """``‖A‖₂`` estimate ``max(|lo|, |hi|)`` of the spectral range (SLQ: Ritz bounds)."""
        return max(abs(self.spectral_range[0]), abs(self.spectral_range[1]))

    @property
    def kernel_width(self) -> float:
        """The kernel's width ``w`` (SLQ: Papyan's ``σ``; KPM: Jackson's ``π b/(M + 1)``), eigenvalue units."""
        if self.method == "kpm":
            return math.pi * self._rescale()[1] / (self.moments.shape[1] + 1)
        return self.sigma("papyan")

    @property
    def resolution(self) -> float:
        """``√(w² + (noise_floor·‖A‖)²)``: eigenvalues closer than this to 0 cannot be told from 0.

        ``w`` is :attr:`kernel_width`; the noise term is dropped when the operator states no
        ``noise_floor``. See the module doc.
        """
        noise = 0.0 if self.noise_floor is None else self.noise_floor * self.norm
        return math.hypot(self.kernel_width, noise)

    def _band_note(self, band: float, given: bool) -> str:
        if given:
            return f"|λ| ≤ {band:.3g} (given band) counted as zero"
        parts = f"kernel width {self.kernel_width:.3g}"
        if self.noise_floor is not None:
            parts += f", noise floor {self.noise_floor:.2g}·‖A‖ = {self.noise_floor * self.norm:.3g}"
        return f"|λ| ≤ {band:.3g} (the density's resolution: {parts}) counted as zero"

    def _below(self, x: float, strict: bool = False) -> float:
        x = math.nextafter(x, -math.inf) if strict else x
        return float(self.cdf(torch.tensor([x], dtype=F64))[0].clamp(0, 1))

    def _banded(self, value: float, t: float, band: float, given: bool, what: str) -> BandedMass:
        within = max(0.0, self._below(band) - self._below(-band, strict=True))
        raw = self.mass_below(t)
        note = (
            f"{self._band_note(band, given)}: {within:.1%} of the mass lies in that band; "
            f"{what}: {value:.3g} (without the band: {raw:.3g})"
        )
        return BandedMass(value, t, band, raw, within, note)

    def fraction_below(self, t: float, band: float | None = None) -> BandedMass:
        """Fraction of eigenvalues ``≤ t`` with ``|λ| ≤ band`` counted as exactly zero.

        Args:
            t: threshold (eigenvalue units).
            band: half-width of the zero band (default :attr:`resolution`).

        Example:
            >>> import torch
            >>> from curvscope.operators import DenseOperator
            >>> lam = torch.cat([torch.full((90,), -1e-9), torch.full((10,), -1.0), torch.tensor([5.0])]).double()
            >>> rho = spectral_density(DenseOperator(torch.diag(lam)), num_probes=20, num_steps=10, seed=0)
            >>> rho.mass_below(-1e-12) > 0.8, rho.fraction_below(-1e-12).value < 0.2
            (True, True)
        """
        given = band is not None
        band, t = (self.resolution if band is None else abs(float(band))), float(t)
        if t < -band:
            value = self.mass_below(t)
        elif t < 0:  # in (−band, 0): only eigenvalues below the band lie below t
            value = self._below(-band, strict=True)
        else:
            value = self._below(max(t, band))
        return self._banded(value, t, band, given, f"fraction ≤ {t:.3g}")

    def negative_mass(self, band: float | None = None) -> BandedMass:
        """Fraction of eigenvalues below ``−band`` (default ``band`` = :attr:`resolution`).

        ``value`` is the mass strictly below ``−band``; ``raw`` is :meth:`mass_below` ``(0)``,
        which counts a near-zero cluster whose Ritz node fell just below 0 as negative curvature.

        Example:
            >>> import torch
            >>> from curvscope.operators import DenseOperator
            >>> lam = torch.cat([torch.full((90,), -1e-9), torch.full((10,), -1.0), torch.tensor([5.0])]).double()
            >>> rho = spectral_density(DenseOperator(torch.diag(lam)), num_probes=20, num_steps=10, seed=0)
            >>> neg = rho.negative_mass()
            >>> neg.raw > 0.8, abs(neg.value - 10 / 101) < 0.1
            (True, True)
        """
        given = band is not None
        band = self.resolution if band is None else abs(float(band))
        return self._banded(self._below(-band, strict=True), 0.0, band, given, "fraction < 0")

    # ---------------------------------------------------------------- queries
    def pdf(self, grid: Any, broadening: str | None = None, sigma: float | None = None, kappa: float = 3.0) -> Tensor:
        """The smoothed density on ``grid`` ``[G]`` (float64, integrates to ≈ 1).

        Args:
            grid: evaluation points (e.g. from :meth:`grid`).
            broadening: SLQ: ``"papyan"`` (default), ``"pyhessian"``, ``"gaussian"``; KPM:
                the damping kernel ``"jackson"`` (default), ``"lorentz"``, ``"none"``.
            sigma: SLQ Gaussian standard deviation (implies ``"gaussian"``).
            kappa: Papyan's κ.
        """
        t = _as_t(grid)
        if self.method == "kpm":
            if sigma is not None:
                raise ValueError("KPM is smoothed by its damping kernel: pass broadening='jackson'|'lorentz'")
            mu = self.moments.mean(0) * runs.kernel(broadening or "jackson", self.moments.shape[1])
            a, b = self._rescale()
            x = (t - a) / b
            inside = x.abs() < 1
            xc = x.clamp(-1 + 1e-12, 1 - 1e-12)
            k = torch.arange(mu.numel(), dtype=F64)
            Tk = torch.cos(k[None, :] * torch.arccos(xc)[:, None])
            series = mu[0] + 2 * (Tk[:, 1:] * mu[1:]).sum(1)
            return torch.where(inside, series / (math.pi * torch.sqrt(1 - xc**2)) / b, 0.0)
        rule = "gaussian" if sigma is not None else (broadening or "papyan")
        if rule not in SLQ_BROADENINGS:
            raise ValueError(f"unknown broadening {rule!r}; valid: {SLQ_BROADENINGS}")
        if rule == "gaussian" and sigma is None:
            raise ValueError("broadening='gaussian' needs sigma (the kernel's standard deviation)")
        s = float(sigma) if sigma is not None else self.sigma(rule, kappa)
        x, w = self._atoms()
        out = torch.zeros_like(t)
        for i in range(0, t.numel(), 4096):
            z = (t[i : i + 4096, None] - x[None, :]) / s
            out[i : i + 4096] = (torch.exp(-0.5 * z**2) * w).sum(1) / (s * math.sqrt(2 * math.pi))
        if rule == "pyhessian" and t.numel() > 1:
            out = out / torch.trapezoid(out, t)
        return out

    def cdf(self, t: Any, broadening: str | None = None) -> Tensor:
        """Fraction of eigenvalues ``≤ t`` (SLQ: the unbroadened quadrature; KPM: the damped series).

        Args:
            t: points ``[G]`` or a scalar.
            broadening: KPM damping kernel (default ``"jackson"``); ignored for SLQ.
        """
        t = _as_t(t)
        if self.method == "kpm":
            mu = self.moments.mean(0) * runs.kernel(broadening or "jackson", self.moments.shape[1])
            a, b = self._rescale()
            phi = torch.arccos(((t - a) / b).clamp(-1, 1))
            k = torch.arange(1, mu.numel(), dtype=F64)
            tail = (mu[1:] * torch.sin(k[None, :] * phi[:, None]) / k).sum(1)
            return (mu[0] * (math.pi - phi) - 2 * tail) / math.pi
        x, w = self._atoms()
        return ((x[None, :] <= t[:, None]) * w).sum(1)

    def mass_below(self, t: float) -> float:
        """Fraction of eigenvalues ``≤ t``."""
        return float(self.cdf(t)[0])

    def mass_above(self, t: float) -> float:
        """Fraction of eigenvalues ``> t``."""
        return 1.0 - self.mass_below(t)

    def grid(self, num: int = 1000, scale: str = "linear", margin: float = 0.05, floor: float | None = None) -> Tensor:
        """Evaluation points over the spectral range ``[G]``.

        Args:
            num: number of points.
            scale: ``"linear"`` (over the range plus ``margin``) or ``"log"`` (positive
                part only, from ``floor`` — default ``1e-6 · hi`` — to ``hi``).
            margin: relative padding of a linear grid.
            floor: smallest point of a log grid.
        """
        lo, hi = self.spectral_range
        pad = margin * (hi - lo)
        if scale == "linear":
            return torch.linspace(lo - pad, hi + pad, num, dtype=F64)
        if scale == "log":
            if hi <= 0:
                raise ValueError(f"a log grid needs a positive spectrum; this one ends at {hi:.3g}: use scale='linear'")
            f = 1e-6 * hi if floor is None else float(floor)
            return torch.logspace(math.log10(f), math.log10(hi + pad), num, dtype=F64)
        raise ValueError(f"scale must be 'linear' or 'log', got {scale!r}")

    def top_eigenvalues(self, k: int = 1) -> tuple[Tensor, Tensor]:
        """The ``k`` largest eigenvalue estimates from the SLQ runs, with Ritz residual bounds.

        Rank ``i`` takes the largest ``i``-th Ritz value over the probes (each is a lower
        bound of ``λ_i`` by Cauchy interlacing); ``|θ − λ| ≤`` its bound for some eigenvalue.

        Returns:
            ``(values [k], residual_bounds [k])``.
        """
        self._need("slq", "top_eigenvalues")
        vals = torch.where(self.weights > 0, self.nodes, -math.inf)
        srt, idx = torch.sort(vals, dim=1, descending=True)
        res = torch.gather(self.node_residuals, 1, idx)[:, :k]
        best = srt[:, :k].argmax(0)
        cols = torch.arange(min(k, srt.shape[1]))
        return srt[best, cols], res[best, cols]

    def wasserstein(self, eigenvalues: Tensor, num: int = 20001) -> float:
        """``W₁`` to the exact spectrum (SLQ: exact for the quadrature; KPM: on a fine grid)."""
        if self.method == "slq":
            x, w = self._atoms()
            return wasserstein1(x, w, eigenvalues)
        lam = _as_t(eigenvalues)
        lo = min(self.spectral_range[0], float(lam.min()))
        hi = max(self.spectral_range[1], float(lam.max()))
        t = torch.linspace(lo, hi, num, dtype=F64)
        exact = torch.searchsorted(torch.sort(lam).values, t, right=True).to(F64) / lam.numel()
        return float(torch.trapezoid((self.cdf(t).clamp(0, 1) - exact).abs(), t))

    # ---------------------------------------------------------------- storage
    def save(self, path: str | os.PathLike) -> None:
        """Write to a safetensors file atomically."""
        tensors = {k: getattr(self, k) for k in ("nodes", "weights", "node_residuals", "moments")}
        tensors = {k: v for k, v in tensors.items() if v is not None}
        keys = ("method", "dim", "spectral_range", "num_steps", "num_matvecs", "wall_time", "status", "message",
                "noise_floor", "work_dtype")  # fmt: skip
        save_tensors(path, tensors, {k: getattr(self, k) for k in keys})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Density:
        """Read a file written by :meth:`save` (files of older versions lack the noise floor: ``None``)."""
        t, meta = load_tensors(path)
        meta["spectral_range"] = tuple(meta["spectral_range"])
        meta["status"] = as_status(meta["status"])
        return cls(**{k: t.get(k) for k in ("nodes", "weights", "node_residuals", "moments")}, **meta)


def spectral_density(
    A: Any,
    method: str = "slq",
    num_probes: int = 10,
    num_steps: int = 80,
    *,
    seed: SeedLike = 0,
    probe: str = "rademacher",
    block_size: int | None = None,
    storage: str | StorageFactory = "device",
    spectral_range: tuple[float, float] | None = None,
    margin: float = 0.05,
    range_steps: int = 30,
    progress: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    work_dtype: WorkDtype = "auto",
) -> Density:
    """Estimate the spectral density of a symmetric operator.

    Args:
        A: symmetric operator (``@``, ``shape``, ``dtype``, ``device``); an optional
            ``A.noise_floor`` (relative to ``‖A‖``) widens :attr:`Density.resolution`.
        method: ``"slq"`` (Lanczos quadrature, full reorthogonalisation) or ``"kpm"``.
        num_probes: random unit probes ``P`` (normalised Rademacher by default).
        num_steps: Lanczos steps (SLQ) or Chebyshev products (KPM, ``2·num_steps + 1``
            moments) per probe; the cost is ``P · num_steps`` products.
        seed: int or ``torch.Generator`` for the probes.
        probe: ``"rademacher"``, ``"gaussian"`` or ``"sphere"`` (all normalised to unit length).
        block_size: probes per block product (default all). SLQ memory is
            ``block_size · (num_steps + 1) · D`` numbers in ``storage``; KPM ``3 · block_size · D``.
        storage: SLQ basis storage (``"device"``, ``"host"``, ``"disk"`` or a factory).
        spectral_range: KPM rescaling interval; default: a ``range_steps``-step Lanczos run
            (Ritz bounds ± residuals) plus ``margin``.
        margin: relative KPM margin.
        range_steps: Lanczos steps for the KPM range.
        progress: show a progress bar (default ``None``: only on a terminal).
        checkpoint: SLQ only: a file where finished probe blocks are saved (atomically) after
            each block, with the operator's fingerprint; a killed run called again with the same
            file skips them and gives the result of an uninterrupted run. A checkpoint made for
            another operator raises :class:`~curvscope.operators.fingerprint.StaleStateError`.
            Use ``block_size`` to set the granularity.
        work_dtype: dtype of probes, Lanczos basis and Chebyshev vectors (``"auto"``: float64
            when it fits; see :mod:`curvscope.linalg.precision`). Products run in ``A.dtype``.

    Returns:
        A :class:`Density`.

    Example:
        >>> import torch
        >>> from curvscope.operators import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.linspace(0.0, 1.0, 50, dtype=torch.float64)))
        >>> rho = spectral_density(A, num_probes=4, num_steps=50, seed=0)
        >>> round(rho.mass_below(0.5), 1), round(float(rho.top_eigenvalues(1)[0][0]), 10)
        (0.5, 1.0)
        >>> rho.wasserstein(torch.linspace(0.0, 1.0, 50, dtype=torch.float64)) < 0.05
        True
    """
    t0 = time.perf_counter()
    D, _, _ = check_operator(A)
    runs.check_arguments(method, num_probes, num_steps, storage, spectral_range, margin, range_steps, checkpoint)
    bs = num_probes if block_size is None else max(1, min(int(block_size), num_probes))
    keep = bs * (min(num_steps, D) + 1) if method == "slq" else 4 * bs
    where = storage if method == "slq" else "device"
    space = space_of(A)
    if checkpoint is not None and space.sharded:
        raise ValueError("spectral_density(checkpoint=...) is not supported for a sharded operator: drop checkpoint=")
    wd = resolve_work_dtype(work_dtype, A.dtype, space.local_dim, keep, where, A.device, f"spectral_density({method})",
                            space=space)  # fmt: skip
    W = promote(A, wd)
    gen = make_generator(seed)
    total = num_probes * min(num_steps, D) + (range_steps if method == "kpm" and spectral_range is None else 0)
    bar = make_progress(total, progress, f"{method} density")
    try:
        if method == "slq":
            out = runs.run_slq(W, A, num_probes, num_steps, gen, probe, block_size, storage, bar, checkpoint)
        else:
            out = runs.run_kpm(W, num_probes, num_steps, gen, probe, spectral_range, margin, range_steps,
                               block_size, bar)  # fmt: skip
    finally:
        bar.close()
    return Density(**out, wall_time=time.perf_counter() - t0, noise_floor=measured_noise_floor(A), work_dtype=str(wd))
