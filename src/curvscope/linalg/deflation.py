"""Deflated spectral densities: certified outliers as exact point masses, SLQ on the rest.

A Hessian spectrum is a bulk near zero plus a few outliers far from it (Sagun et al. 2016;
Papyan 2019). Plain SLQ spends its Lanczos nodes on the whole range ``[λmin, λmax]`` and
gives each outlier the random weight ``(vᵀu_i)²`` (mean ``1/D``, relative spread ~1 for one
probe), so the outliers' far positions turn a small weight error into a large ``W₁`` error.

:func:`deflated_density` instead

1. computes the ``k`` extreme eigenpairs ``(Λ, V)`` with :func:`~curvscope.linalg.eigsh`
   (residual certificates); only *certified* pairs are deflated;
2. enters each certified eigenvalue as an exact point mass of weight ``1/D``;
3. runs SLQ on the deflated operator ``P A P``, ``P = I − V Vᵀ``, from probes projected onto
   the orthogonal complement of ``V`` and normalised (``E[v vᵀ] ∝ P``), so each probe's Gauss
   quadrature estimates the spectral measure of ``A`` restricted to ``range(P)``, whose range
   is the bulk only (fewer Lanczos steps for the same resolution);
4. returns the honest combination

       φ̂ = (1/D) Σ_{i≤k} δ(t − λ_i) + ((D − k)/D) · (1/P) Σ_p Σ_l τ_{pl}² δ(t − θ_{pl}).

The result is a :class:`DeflatedDensity` (a :class:`~curvscope.linalg.density.Density`):
every row of ``nodes``/``weights`` holds one probe's complement quadrature (weights scaled by
``(D − k)/D``) followed by the ``k`` point masses (``1/D`` each), so each row sums to one and
``cdf``, ``wasserstein``, ``negative_mass`` and ``top_eigenvalues`` (outliers with their
measured residuals) work unchanged. Its :attr:`~DeflatedDensity.kernel_width` is Papyan's
width on the *complement's* Ritz range (the point masses need no kernel), so ``resolution``
keeps its meaning: eigenvalues of the complement closer than it to 0 cannot be told from 0.
``save`` writes a plain ``Density`` (a reloaded file uses the full range for the kernel
width: wider, i.e. conservative).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from curvscope.common import SeedLike, Status, make_generator
from curvscope.linalg.density import Density
from curvscope.linalg.eigsh import EigshResult, eigsh
from curvscope.linalg.lanczos import check_operator, lanczos
from curvscope.linalg.precision import measured_noise_floor
from curvscope.linalg.products import check_finite
from curvscope.linalg.space import LocalSpace, space_of

__all__ = ["DeflatedDensity", "ProjectedOperator", "complement_probes", "deflated_density"]

F64 = torch.float64


class ProjectedOperator:
    """``P A P`` with ``P = I − Q Qᵀ``: ``A`` restricted to the orthogonal complement of ``Q``.

    Each product costs one product of ``A`` (per column). Vectors in ``range(Q)`` map to 0.
    The projection runs in ``Q``'s dtype (the work dtype); ``A`` sees its own dtype. On a
    sharded ``A`` (``A.space``) ``Q`` holds this rank's rows and ``Qᵀx`` is summed over the ranks.

    Args:
        A: symmetric operator (``@``, ``shape``, ``dtype``, ``device``), ``D x D``.
        Q: ``[D, k]`` orthonormal columns (orthonormalised here by QR when they are not).

    Example:
        >>> import torch
        >>> from curvscope.operators import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.tensor([5.0, 2.0, 1.0], dtype=torch.float64)))
        >>> P = ProjectedOperator(A, torch.eye(3, dtype=torch.float64)[:, :1])
        >>> (P @ torch.ones(3, dtype=torch.float64)).tolist()
        [0.0, 2.0, 1.0]
    """

    def __init__(self, A: Any, Q: Tensor) -> None:
        D, _, device = check_operator(A)
        self.space = space = space_of(A)
        if Q.ndim != 2 or Q.shape[0] != space.local_dim:
            raise ValueError(f"Q must be [{space.local_dim}, k], got {tuple(Q.shape)}")
        eye = torch.eye(Q.shape[1], dtype=Q.dtype, device=Q.device)
        if Q.shape[1] and float((space.inner(Q, Q) - eye).abs().max()) > 1e3 * torch.finfo(Q.dtype).eps:
            Q = space.qr(Q)[0]
        self.A, self.Q = A, Q.to(device)
        self.shape, self.dtype, self.device = (D, D), Q.dtype, device
        nf = measured_noise_floor(A)
        if nf is not None:
            self.noise_floor = nf

    def project(self, X: Tensor) -> Tensor:
        """``P X`` for ``[D]`` or ``[D, K]``."""
        if self.Q.shape[1] == 0:
            return X
        return X - self.Q @ self.space.inner(self.Q, X)

    def __matmul__(self, X: Tensor) -> Tensor:
        Y = self.A @ self.project(X).to(self.A.dtype)
        return self.project(Y.to(self.dtype))


def complement_probes(
    Q: Tensor, num: int, gen: torch.Generator, kind: str = "rademacher", space: LocalSpace | None = None
) -> Tensor:
    """``num`` probes ``[D, num]`` of the named kind projected onto ``range(Q)^⊥`` and normalised.

    Gaussian probes give ``E[v vᵀ] = P/(D − k)`` exactly; Rademacher probes (the default, as in
    :func:`~curvscope.linalg.spectral_density`) have a smaller variance of ``vᵀ f(A) v``. With a
    sharded ``space``, ``Q`` and the probes are this rank's rows (the rows of the single-process probes).
    """
    space = LocalSpace(Q.shape[0]) if space is None else space
    V = space.probes(kind, num, gen, Q.dtype, Q.device)
    for _ in range(2):  # twice is enough (Kahan): no component along Q survives round-off
        V = V - Q @ space.inner(Q, V)
    return V / space.colnorms(V)[None, :]


@dataclass(frozen=True)
class DeflatedDensity(Density):
    """A :class:`~curvscope.linalg.density.Density` made of exact point masses plus a complement SLQ.

    Attributes (beyond ``Density``'s):
        outliers: the :class:`~curvscope.linalg.eigsh.EigshResult` whose certified pairs were deflated.
        num_outliers: ``k``, the point masses (certified pairs) in the density.
        eigsh_matvecs: products spent by ``eigsh`` (including its certificate).
        slq_matvecs: products spent by the complement SLQ (``num_probes · num_steps``).
        complement_range: Ritz range ``(lo, hi)`` of the complement's quadrature nodes.
    """

    outliers: EigshResult | None = None
    num_outliers: int = 0
    eigsh_matvecs: int = 0
    slq_matvecs: int = 0
    complement_range: tuple[float, float] = (0.0, 0.0)

    def sigma(self, broadening: str = "papyan", kappa: float = 3.0, margin: float = 0.05) -> float:
        """As :meth:`Density.sigma`; ``"papyan"`` is computed on the complement's Ritz range."""
        if broadening != "papyan":
            return super().sigma(broadening, kappa, margin)
        lo, hi = self.complement_range
        half = 0.5 * (hi - lo) * (1 + 2 * margin)
        return (2.0 / max(self.num_steps - 1, 1)) / math.sqrt(8 * math.log(kappa)) * max(half, 1e-300)

    @property
    def outlier_eigenvalues(self) -> Tensor:
        """The point masses' locations ``[k]`` (certified eigenvalues), as in ``nodes[0, -k:]``."""
        k = self.num_outliers
        return self.nodes[0, self.nodes.shape[1] - k :].clone()


def deflated_density(
    A: Any,
    num_outliers: int = 10,
    num_probes: int = 10,
    num_steps: int = 40,
    *,
    which: str = "LA",
    seed: SeedLike = 0,
    probe: str = "rademacher",
    eigsh_tol: float | None = None,
    eigsh_matvecs: int | None = None,
    outliers: EigshResult | None = None,
    block_size: int | None = None,
    storage: str = "device",
    progress: bool | None = None,
) -> DeflatedDensity:
    """Spectral density with the ``num_outliers`` extreme eigenvalues deflated as exact point masses.

    Args:
        A: symmetric operator (``@``, ``shape``, ``dtype``, ``device``), ``D x D``; sharded
            operators (FSDP) too: the outliers' eigenvectors and the probes are then each rank's rows.
        num_outliers: ``k`` eigenpairs asked of :func:`~curvscope.linalg.eigsh`; only the
            certified ones (measured residual ``≤ tol·‖A‖``) become point masses, the others stay
            in the complement SLQ (the message says how many).
        num_probes: SLQ probes ``P`` on the complement.
        num_steps: Lanczos steps ``m`` per probe (``P · m`` products).
        which: ``"LA"`` (top outliers, the Hessian case), ``"SA"`` or ``"BE"`` (both ends).
        seed: int or generator: eigsh's start vector, then the probes.
        probe: ``"rademacher"``, ``"gaussian"`` or ``"sphere"`` (projected and normalised).
        eigsh_tol: eigsh's relative residual tolerance (default: eigsh's, ``sqrt(eps)``). A
            looser one (1e-6) saves products; an eigenvalue error ``δ`` moves ``W₁`` by ``≤ δ/D``.
        eigsh_matvecs: eigsh's product budget (default: eigsh's).
        outliers: an :class:`~curvscope.linalg.eigsh.EigshResult` of ``A`` already computed
            (its products are then not spent again and ``eigsh_matvecs`` is 0).
        block_size: most vectors per product in the SLQ (default: all probes at once).
        storage: SLQ basis storage (``"device"``, ``"host"``, ``"disk"``).
        progress: progress bars (default ``None``: only on a terminal).

    Returns:
        A :class:`DeflatedDensity`; ``num_matvecs = eigsh_matvecs + slq_matvecs``.

    Example:
        >>> import torch
        >>> from curvscope.operators import DenseOperator
        >>> lam = torch.cat([torch.linspace(0.0, 1.0, 97), torch.tensor([20.0, 40.0, 80.0])]).double()
        >>> rho = deflated_density(DenseOperator(torch.diag(lam)), num_outliers=3, num_probes=4, num_steps=20)
        >>> rho.outlier_eigenvalues.round(decimals=8).tolist(), rho.num_outliers
        ([80.0, 40.0, 20.0], 3)
        >>> rho.wasserstein(lam) < 0.02
        True
    """
    t0 = time.perf_counter()
    D, _, device = check_operator(A)
    if num_probes < 1 or num_steps < 1 or num_outliers < 1:
        raise ValueError(
            f"num_outliers, num_probes and num_steps must be positive, got {num_outliers}, {num_probes}, {num_steps}"
        )
    gen = make_generator(seed)
    if outliers is None:
        outliers = eigsh(A, num_outliers, which, tol=eigsh_tol, num_matvecs=eigsh_matvecs, seed=gen,
                         storage=storage, progress=progress)  # fmt: skip
        spent_eigsh = outliers.num_matvecs
    else:
        spent_eigsh = 0
    keep = outliers.converged.to(torch.bool)
    lam = outliers.eigenvalues[keep].to(F64)
    Q = outliers.eigenvectors[:, keep.to(outliers.eigenvectors.device)].to(dtype=F64, device=device)
    k = int(lam.numel())
    if k >= D:
        raise ValueError(f"all {D} eigenpairs were deflated: nothing is left for SLQ; use eigsh alone")
    op = ProjectedOperator(A, Q)
    m = min(int(num_steps), D - k)
    V0 = complement_probes(op.Q, num_probes, gen, probe, op.space)
    bs = num_probes if block_size is None else max(1, int(block_size))
    nodes_c, weights_c, resid_c = (torch.zeros(num_probes, m, dtype=F64) for _ in range(3))
    spent_slq, status, notes = 0, Status.COMPLETED, []
    for s in range(0, num_probes, bs):
        res = lanczos(op, m, V0[:, s : s + bs], seed=gen, storage=storage, breakdown="stop", keep_basis=False,
                      progress=progress, work_dtype=op.dtype)  # fmt: skip
        check_finite(torch.cat([res.alpha.reshape(-1), res.beta.reshape(-1)]), "deflated_density (SLQ)")
        spent_slq += res.num_matvecs
        for b in range(res.num_runs):
            theta, S, r = res.ritz(b)
            n = theta.numel()
            nodes_c[s + b, :n], weights_c[s + b, :n], resid_c[s + b, :n] = theta, S[0] ** 2, r
        if res.status == "interrupted":
            status = Status.INTERRUPTED
            notes.append(f"interrupted in probes {s}..{s + bs - 1}; later probes were not run")
            nodes_c, weights_c, resid_c = (x[: s + res.num_runs] for x in (nodes_c, weights_c, resid_c))
            break
        if res.status == "invariant_subspace":
            notes.append(res.message)
    P = nodes_c.shape[0]
    valid = weights_c > 0
    lo_c, hi_c = float(nodes_c[valid].min()), float(nodes_c[valid].max())
    nodes = torch.cat([nodes_c, lam.expand(P, k)], 1)
    weights = torch.cat([weights_c * ((D - k) / D), torch.full((P, k), 1.0 / D, dtype=F64)], 1)
    resid = torch.cat([resid_c, outliers.residuals[keep].to(F64).expand(P, k)], 1)
    lo, hi = min([lo_c, *lam.tolist()]), max([hi_c, *lam.tolist()])
    cert = f"{k} of {outliers.eigenvalues.numel()} eigsh pairs certified and deflated ({spent_eigsh} products)"
    if k < outliers.eigenvalues.numel():
        cert += f"; the {outliers.eigenvalues.numel() - k} uncertified stay in the SLQ ({outliers.message})"
    msg = "; ".join([cert, f"SLQ on the complement: {P} probes x {m} steps ({spent_slq} products)", *notes])
    return DeflatedDensity(
        method="slq", dim=D, spectral_range=(lo, hi), nodes=nodes, weights=weights, node_residuals=resid,
        moments=None, num_steps=m, num_matvecs=spent_eigsh + spent_slq, wall_time=time.perf_counter() - t0,
        status=status, message=msg, noise_floor=measured_noise_floor(A), work_dtype=str(op.dtype),
        outliers=outliers, num_outliers=k, eigsh_matvecs=spent_eigsh, slq_matvecs=spent_slq,
        complement_range=(lo_c, hi_c),
    )  # fmt: skip
