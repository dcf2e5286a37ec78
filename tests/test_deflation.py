"""Deflated densities (curvscope.linalg.deflation): exact against dense eigendecompositions, float64."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from curvscope.common import make_generator
from curvscope.linalg import eigsh, spectral_density
from curvscope.linalg.deflation import DeflatedDensity, ProjectedOperator, complement_probes, deflated_density
from curvscope.operators import DenseOperator

F64 = torch.float64


def rotated(lam: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``U diag(lam) Uᵀ`` with a random orthogonal ``U`` (the spectrum is exactly ``lam``)."""
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(lam.numel(), lam.numel(), generator=g, dtype=F64)).Q
    return (U * lam) @ U.T


def bulk_outliers(D: int = 300, k: int = 8, seed: int = 0) -> torch.Tensor:
    """A Hessian-like spectrum: a skewed bulk in [-0.1, 1] and ``k`` outliers in [10, 50]."""
    g = torch.Generator().manual_seed(seed)
    bulk = torch.rand(D - k, generator=g, dtype=F64) ** 3 * 1.1 - 0.1
    return torch.cat([bulk, torch.linspace(10.0, 50.0, k, dtype=F64)])


CASES = [  # (name, spectrum, k, probes, steps)
    ("bulk+8 outliers", bulk_outliers(), 8, 3, 12),
    (
        "two-sided",
        torch.cat([torch.linspace(-0.3, 0.3, 117, dtype=F64), torch.tensor([-4.0, 2.0, 3.0], dtype=F64)]),
        3,
        2,
        9,
    ),
]


@pytest.mark.parametrize(("name", "lam", "k", "P", "m"), CASES, ids=[c[0] for c in CASES])
def test_point_masses_exact_and_rows_sum_to_one(name, lam, k, P, m):
    A = DenseOperator(rotated(lam))
    which = "BE" if name == "two-sided" else "LA"
    rho = deflated_density(A, k, P, m, which=which, seed=1, eigsh_tol=1e-12)
    D = lam.numel()
    assert isinstance(rho, DeflatedDensity) and rho.num_outliers == k
    top = torch.sort(rho.outlier_eigenvalues).values
    expect = torch.sort(lam).values
    expect = torch.cat([expect[:1], expect[-2:]]) if which == "BE" else expect[-k:]
    assert torch.allclose(top, expect, atol=1e-10)
    assert torch.all(rho.weights[:, -k:] == 1.0 / D)
    assert torch.allclose(rho.weights.sum(1), torch.ones(P, dtype=F64), atol=1e-13)
    assert rho.num_matvecs == rho.eigsh_matvecs + rho.slq_matvecs and rho.slq_matvecs == P * m
    assert str(rho.status) == "completed"


@pytest.mark.parametrize(("name", "lam", "k", "P", "m"), CASES, ids=[c[0] for c in CASES])
def test_moments_equal_the_probes_quadratic_forms(name, lam, k, P, m):
    """Per probe, Gauss quadrature is exact to degree 2m−1: the combined measure's moments are
    (1/D) Σ λ_out^j + ((D−k)/D) · mean_p v_pᵀ A^j v_p (v_p in the complement), to 1e-8."""
    D = lam.numel()
    M = rotated(lam)
    A = DenseOperator(M)
    ev = eigsh(A, k, "BE" if name == "two-sided" else "LA", tol=1e-12, seed=0)
    rho = deflated_density(A, k, P, m, seed=5, outliers=ev)
    V = complement_probes(ev.eigenvectors.to(F64), P, make_generator(5))  # the same probes
    x, w = rho.nodes, rho.weights
    scale = float(lam.abs().max())
    Mj = torch.eye(D, dtype=F64)
    for j in range(2 * m):
        combined = ((w * (x / scale) ** j).sum(1)).mean()
        outl = (ev.eigenvalues / scale).pow(j).sum() / D
        forms = torch.einsum("dp,de,ep->p", V, Mj, V).mean()
        assert abs(float(combined - outl - (D - k) / D * forms)) <= 1e-8, j
        Mj = Mj @ (M / scale)
    assert rho.eigsh_matvecs == 0  # outliers given: their products are not spent again


def test_single_valued_complement_is_recovered_exactly():
    """A complement with one distinct eigenvalue: the deflated density is the exact spectrum (W1 = 0);
    plain SLQ at more products is not (its outlier weights are random)."""
    lam = torch.cat([torch.full((96,), 0.5, dtype=F64), torch.tensor([3.0, 5.0, 8.0, 13.0], dtype=F64)])
    A = DenseOperator(rotated(lam, 3))
    rho = deflated_density(A, 4, 3, 5, seed=0, eigsh_tol=1e-12)
    assert rho.wasserstein(lam) < 1e-9
    assert spectral_density(A, "slq", 3, 30, seed=0).wasserstein(lam) > 1e-3


def test_expectation_matches_trace_statistically():
    """Over many Gaussian probes the combined moments j = 1, 2 match tr(A^j)/D within 4 standard errors."""
    lam = bulk_outliers(200, 5, 1)
    A = DenseOperator(rotated(lam, 1))
    ev = eigsh(A, 5, tol=1e-12, seed=0)
    rho = deflated_density(A, 5, 400, 4, seed=2, probe="gaussian", outliers=ev)
    D = lam.numel()
    for j in (1, 2):
        per_probe = (rho.weights * rho.nodes**j).sum(1)
        err = float(per_probe.std()) / math.sqrt(per_probe.numel())
        assert abs(float(per_probe.mean()) - float((lam**j).sum()) / D) < 4 * err


def test_w1_beats_plain_slq_at_equal_products():
    lam = bulk_outliers(400, 8, 2)
    A = DenseOperator(rotated(lam, 2))
    plain, defl = [], []
    for s in range(4):
        rho = deflated_density(A, 8, 4, 20, seed=s, eigsh_tol=1e-8)
        budget = rho.num_matvecs
        P = 4
        plain.append(spectral_density(A, "slq", P, math.ceil(budget / P), seed=s).wasserstein(lam))
        defl.append(rho.wasserstein(lam))
    assert sum(defl) < 0.5 * sum(plain), (defl, plain)


def test_only_certified_pairs_are_deflated():
    lam = bulk_outliers(150, 4, 3)
    A = DenseOperator(rotated(lam, 4))
    ev = eigsh(A, 4, tol=1e-12, seed=0)
    half = dataclasses.replace(ev, converged=torch.tensor([True, True, False, False]))
    rho = deflated_density(A, 4, 2, 30, seed=0, outliers=half)
    assert rho.num_outliers == 2 and "2 of 4" in rho.message and "uncertified" in rho.message
    assert torch.allclose(rho.weights.sum(1), torch.ones(2, dtype=F64), atol=1e-13)
    assert float(rho.nodes[:, :30].max()) == pytest.approx(float(lam[-3]), abs=1e-8)  # left in the SLQ


def test_resolution_uses_the_complement_range():
    lam = bulk_outliers(300, 8, 0)
    A = DenseOperator(rotated(lam))
    rho = deflated_density(A, 8, 2, 20, seed=0)
    lo, hi = rho.complement_range
    assert hi < 1.2 < rho.spectral_range[1]
    expect = (2 / 19) / math.sqrt(8 * math.log(3)) * 0.5 * (hi - lo) * 1.1
    assert rho.kernel_width == pytest.approx(expect, rel=1e-12)
    assert rho.resolution < spectral_density(A, "slq", 2, 20, seed=0).resolution / 10
    assert rho.negative_mass().value == pytest.approx(float((lam < -rho.resolution).double().mean()), abs=0.15)


def test_projected_operator_is_p_a_p():
    M = rotated(bulk_outliers(50, 2, 5), 5)
    Q = torch.linalg.qr(torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=F64)).Q
    Pm = torch.eye(50, dtype=F64) - Q @ Q.T
    X = torch.randn(50, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    op = ProjectedOperator(DenseOperator(M), Q)
    assert torch.allclose(op @ X, Pm @ M @ Pm @ X, atol=1e-12)
    assert op.shape == (50, 50) and op.dtype == F64


@pytest.mark.parametrize("kw", [dict(num_probes=0), dict(num_steps=0), dict(num_outliers=0)])
def test_refuses_non_positive_sizes(kw):
    A = DenseOperator(torch.eye(5, dtype=F64))
    with pytest.raises(ValueError, match="must be positive"):
        deflated_density(A, **{"num_outliers": 1, "num_probes": 1, "num_steps": 2, **kw})
