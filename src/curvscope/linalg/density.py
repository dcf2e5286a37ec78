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
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from curvscope.io import load_tensors, save_tensors
from curvscope.linalg.checkpoint import jsonable, load_state, save_state
from curvscope.linalg.eigsh import make_progress
from curvscope.linalg.lanczos import check_operator, lanczos
from curvscope.linalg.sampling import SeedLike, make_generator, probes
from curvscope.linalg.storage import StorageFactory

METHODS = ("slq", "kpm")
SLQ_BROADENINGS = ("papyan", "pyhessian", "gaussian")
KPM_KERNELS = ("jackson", "lorentz", "none")

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


def _jackson(M: int) -> Tensor:
    k = torch.arange(M, dtype=F64)
    q = math.pi / (M + 1)
    return ((M - k + 1) * torch.cos(q * k) + torch.sin(q * k) / math.tan(q)) / (M + 1)


def _kernel(name: str, M: int) -> Tensor:
    if name == "jackson":
        return _jackson(M)
    if name == "lorentz":
        lam = 4.0
        return torch.sinh(lam * (1 - torch.arange(M, dtype=F64) / M)) / math.sinh(lam)
    if name == "none":
        return torch.ones(M, dtype=F64)
    raise ValueError(f"unknown KPM kernel {name!r}; valid: {KPM_KERNELS}")


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
        status: ``"completed"``, ``"interrupted"`` or ``"range_exceeded"`` (KPM).
        message: what happened.
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
    status: str
    message: str

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
            mu = self.moments.mean(0) * _kernel(broadening or "jackson", self.moments.shape[1])
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
            mu = self.moments.mean(0) * _kernel(broadening or "jackson", self.moments.shape[1])
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
                raise ValueError("a log grid needs a positive spectrum; this one ends at {hi:.3g}: use scale='linear'")
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
        keys = ("method", "dim", "spectral_range", "num_steps", "num_matvecs", "wall_time", "status", "message")
        save_tensors(path, tensors, {k: getattr(self, k) for k in keys})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Density:
        """Read a file written by :meth:`save`."""
        t, meta = load_tensors(path)
        meta["spectral_range"] = tuple(meta["spectral_range"])
        return cls(**{k: t.get(k) for k in ("nodes", "weights", "node_residuals", "moments")}, **meta)


def _unit_probes(kind: str, D: int, P: int, gen: torch.Generator, dtype, device) -> Tensor:
    V = probes(kind, D, P, gen, dtype, device)
    return V / V.norm(dim=0, keepdim=True)


def _slq(A, D, dtype, device, num_probes, num_steps, gen, probe, block_size, storage, bar, checkpoint=None):
    V = _unit_probes(probe, D, num_probes, gen, dtype, device)
    m = min(num_steps, D)
    nodes, weights, resid = (torch.zeros(num_probes, m, dtype=F64) for _ in range(3))
    matvecs, status, msgs = 0, "completed", []
    bs = num_probes if block_size is None else max(1, int(block_size))
    config = {"D": D, "num_probes": num_probes, "num_steps": m, "probe": probe, "block_size": bs,
              "dtype": jsonable(dtype)}  # fmt: skip
    start = 0
    state = load_state(checkpoint, config, gen)  # finished probe blocks are never recomputed
    if state is not None:
        tensors, values = state
        start, matvecs = int(values["done"]), int(values["matvecs"])
        nodes[:start], weights[:start], resid[:start] = tensors["nodes"], tensors["weights"], tensors["resid"]
        bar.update(matvecs)
    for s in range(start, num_probes, bs):
        base = matvecs
        res = lanczos(
            A, m, V[:, s : s + bs], seed=gen, storage=storage, breakdown="stop", keep_basis=False,
            callback=lambda step, mv, base=base: bar.update(base + mv - bar.n),
        )  # fmt: skip
        matvecs += res.num_matvecs
        for b in range(res.num_runs):
            theta, S, r = res.ritz(b)
            n = theta.numel()
            nodes[s + b, :n], weights[s + b, :n], resid[s + b, :n] = theta, S[0] ** 2, r
        if res.status == "interrupted":
            status = "interrupted"
            msgs.append(f"interrupted in probes {s}..{s + bs - 1}; later probes were not run")
            nodes, weights, resid = nodes[: s + res.num_runs], weights[: s + res.num_runs], resid[: s + res.num_runs]
            break
        if res.status == "invariant_subspace":
            msgs.append(res.message)
        if checkpoint is not None:
            done = min(s + bs, num_probes)
            save_state(checkpoint, config, gen, {"nodes": nodes[:done], "weights": weights[:done],
                       "resid": resid[:done]}, {"done": done, "matvecs": matvecs})  # fmt: skip
    valid = weights > 0
    lo, hi = float(nodes[valid].min()), float(nodes[valid].max())
    msg = "; ".join(msgs) or f"{nodes.shape[0]} probes x {m} Lanczos steps"
    return Density("slq", D, (lo, hi), nodes, weights, resid, None, m, matvecs, 0.0, status, msg)


def _kpm(A, D, dtype, device, num_probes, num_steps, gen, probe, spectral_range, margin, range_steps, bar):
    matvecs = 0
    if spectral_range is None:
        res = lanczos(A, min(range_steps, D), seed=gen, keep_basis=False)
        matvecs += res.num_matvecs
        theta, _, r = res.ritz()
        lo, hi = float(theta[0] - r[0]), float(theta[-1] + r[-1])
        pad = margin * max(hi - lo, 1e-12 * max(abs(hi), 1.0))
        lo, hi = lo - pad, hi + pad
    else:
        lo, hi = map(float, spectral_range)
    a, b = 0.5 * (hi + lo), 0.5 * (hi - lo)
    V = _unit_probes(probe, D, num_probes, gen, dtype, device)

    def apply(X):
        return (A @ X - a * X) / b

    M = 2 * num_steps + 1
    mu = torch.zeros(M, num_probes, dtype=dtype, device=device)
    T0, T1 = V, apply(V)
    matvecs += num_probes
    bar.update(num_probes)
    mu[0] = (T0 * T0).sum(0)
    mu[1] = (T1 * T0).sum(0)
    growth = 1.0
    for k in range(1, num_steps):
        mu[2 * k] = 2 * (T1 * T1).sum(0) - mu[0]
        T2 = 2 * apply(T1) - T0
        matvecs += num_probes
        bar.update(num_probes)
        mu[2 * k + 1] = 2 * (T2 * T1).sum(0) - mu[1]
        T0, T1 = T1, T2
        growth = max(growth, float(T1.norm(dim=0).max()))
    mu[2 * num_steps] = 2 * (T1 * T1).sum(0) - mu[0]
    growth = max(growth, float(mu.abs().max()))
    status, msg = "completed", f"{num_probes} probes x {num_steps} Chebyshev products ({M} moments)"
    if growth > 10.0:
        status = "range_exceeded"
        msg = (
            f"Chebyshev vectors grew to {growth:.3g}: the spectrum leaves [{lo:.4g}, {hi:.4g}]; pass a wider "
            f"spectral_range, a larger margin, or more range_steps"
        )
    return Density("kpm", D, (lo, hi), None, None, None, mu.T.to("cpu", F64), num_steps, matvecs, 0.0, status, msg)


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
) -> Density:
    """Estimate the spectral density of a symmetric operator.

    Args:
        A: symmetric operator (``@``, ``shape``, ``dtype``, ``device``).
        method: ``"slq"`` (Lanczos quadrature, full reorthogonalisation) or ``"kpm"``.
        num_probes: random unit probes ``P`` (normalised Rademacher by default).
        num_steps: Lanczos steps (SLQ) or Chebyshev products (KPM, ``2·num_steps + 1``
            moments) per probe; the cost is ``P · num_steps`` products.
        seed: seed or generator for the probes.
        probe: ``"rademacher"``, ``"gaussian"`` or ``"sphere"`` (all normalised to unit length).
        block_size: SLQ probes per block product (default all): memory is
            ``block_size · (num_steps + 1) · D`` numbers in ``storage``.
        storage: SLQ basis storage (``"device"``, ``"host"``, ``"disk"`` or a factory).
        spectral_range: KPM rescaling interval; default: a ``range_steps``-step Lanczos run
            (Ritz bounds ± residuals) plus ``margin``.
        margin: relative KPM margin.
        range_steps: Lanczos steps for the KPM range.
        progress: show a progress bar (default: only on a terminal).
        checkpoint: SLQ only: a file where finished probe blocks are saved (atomically) after
            each block; a killed run called again with the same file skips them and gives the
            result of an uninterrupted run. Use ``block_size`` to set the granularity.

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
    D, dtype, device = check_operator(A)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if num_probes < 1 or num_steps < 1:
        raise ValueError(f"num_probes and num_steps must be positive, got {num_probes} and {num_steps}")
    gen = make_generator(seed)
    total = num_probes * min(num_steps, D) + (range_steps if method == "kpm" and spectral_range is None else 0)
    bar = make_progress(total, progress, f"{method} density")
    try:
        if method == "slq":
            out = _slq(A, D, dtype, device, num_probes, num_steps, gen, probe, block_size, storage, bar, checkpoint)
        else:
            out = _kpm(A, D, dtype, device, num_probes, num_steps, gen, probe, spectral_range, margin, range_steps, bar)
    finally:
        bar.close()
    return Density(**{**out.__dict__, "wall_time": time.perf_counter() - t0})
