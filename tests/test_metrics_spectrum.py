"""Bulk/outlier split, logit-gradient clustering, Goldilocks measure."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from curvscope.metrics import (
    GoldilocksResult,
    LogitClustering,
    SpectrumSplit,
    goldilocks,
    logit_gradient_clustering,
    random_orthonormal,
    split_spectrum,
)
from curvscope.operators import DenseOperator, Hessian
from curvscope.operators.dense import dense_hessian
from spectra import MatmulOnly, random_orthogonal

DT = torch.float64


def _t(*x):
    return torch.tensor(x, dtype=DT)


SPLIT_CASES = [  # (name, eigenvalues, outliers, bulk edge)
    ("C-1 outliers", torch.cat([_t(20, 15, 11, 9), torch.linspace(1.0, 0.0, 50, dtype=DT)]), 4, 1.0),
    ("one spike", torch.cat([_t(50), torch.linspace(2.0, -0.5, 30, dtype=DT)]), 1, 2.0),
    ("no gap (geometric 0.8)", 0.8 ** torch.arange(40, dtype=DT), 0, 1.0),
    ("unsorted input", _t(0.5, 8.0, 0.1, 7.0, -0.2, 0.3), 2, 0.5),
]


@pytest.mark.parametrize("name,lam,outliers,edge", SPLIT_CASES, ids=[c[0] for c in SPLIT_CASES])
def test_split_by_largest_gap(name, lam, outliers, edge):
    s = split_spectrum(lam)
    assert s.num_outliers == outliers == s.num_outliers_gap
    assert s.bulk_edge == pytest.approx(edge)
    assert torch.equal(s.outliers, torch.sort(lam, descending=True).values[:outliers])


def test_spectrum_statistics():
    s = split_spectrum(_t(4, -2, 1, 1, 0))
    assert s.negative_fraction == pytest.approx(1 / 5)
    assert s.negative_mass == pytest.approx(2 / 8)
    assert s.negative_ratio == pytest.approx(0.5)
    assert s.bulk_width == pytest.approx(3.0)  # bulk = {1, 1, 0, -2} after the outlier 4
    assert split_spectrum(torch.ones(7, dtype=DT)).effective_rank == pytest.approx(7.0)
    assert split_spectrum(_t(1.0, 0, 0)).effective_rank == pytest.approx(1.0)
    assert split_spectrum(_t(5, 1, 0.9), max_outliers=1).num_outliers == 1
    with pytest.raises(ValueError, match="no eigenvalues"):
        split_spectrum(torch.zeros(0))


def test_split_with_density():
    grid = torch.linspace(-1, 12, 2601, dtype=DT)
    bulk = torch.exp(-0.5 * ((grid - 0.5) / 0.25) ** 2)  # bulk centred at 0.5, width ~ ±1.5
    phi = bulk + 0.001 * (torch.exp(-0.5 * ((grid - 10) / 0.05) ** 2))
    phi = phi / torch.trapezoid(phi, grid)
    lam = _t(10.0, 9.9, 1.2, 0.8, 0.3)
    s = split_spectrum(lam, density=(grid, phi), edge_threshold=1e-3)
    assert 1.3 < s.bulk_edge < 1.5 and s.num_outliers == 2  # φ/φmax = 1e-3 at 0.5 + 0.25·√(2 ln 1000)
    assert s.bulk_width == pytest.approx(2 * (s.bulk_edge - 0.5), rel=1e-2)
    assert s.negative_fraction == pytest.approx(0.5 * math.erfc(0.5 / 0.25 / math.sqrt(2)), rel=1e-2)
    with pytest.raises(ValueError, match="density must be"):
        split_spectrum(lam, density=(grid, phi[:-1]))


def test_logit_gradient_clustering_finds_clusters():
    g = torch.Generator().manual_seed(0)
    n, C, D = 12, 3, 40
    centres = torch.randn(C, D, generator=g, dtype=DT) * 3
    labels = torch.arange(n) % C
    grads = centres[None] + torch.randn(n, C, D, generator=g, dtype=DT)
    r = logit_gradient_clustering(grads, labels)
    assert r.cosine.shape == (n * C, n * C) and torch.allclose(r.cosine.diagonal(), torch.ones(n * C, dtype=DT))
    assert (r.logit[1:] >= r.logit[:-1]).all()  # grouped by logit, then class
    assert r.same_logit > 0.8 and abs(r.cross_logit) < 0.3
    assert r.group_means.shape == (C * C, C * C)
    assert r.group_means[0, 0] > r.group_means[0, C]  # (logit 0, class 0) vs (logit 1, class 0)


def test_logit_clustering_class_effect_and_errors():
    # same logit, different classes → orthogonal; same class → parallel
    grads = torch.zeros(4, 1, 2, dtype=DT)
    grads[:2, 0, 0] = 1.0
    grads[2:, 0, 1] = 1.0
    r = logit_gradient_clustering(grads, torch.tensor([0, 0, 1, 1]))
    assert r.same_logit_same_class == pytest.approx(1.0) and r.same_logit_cross_class == pytest.approx(0.0)
    assert math.isnan(r.cross_logit)
    with pytest.raises(ValueError, match="exactly zero"):
        logit_gradient_clustering(torch.zeros(2, 2, 3, dtype=DT), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"grads \[n, C, D\]"):
        logit_gradient_clustering(torch.zeros(2, 3, dtype=DT), torch.tensor([0, 1]))


GOLDILOCKS_IDENTITY = [(3.0, 16), (0.01, 25), (-2.0, 9)]


@pytest.mark.parametrize("c,d", GOLDILOCKS_IDENTITY)
def test_goldilocks_multiple_of_identity(c, d):
    r = goldilocks(DenseOperator(c * torch.eye(60, dtype=DT)), d, seed=1)
    assert r.trace_ratio == pytest.approx(math.copysign(math.sqrt(d), c), rel=1e-10)
    assert r.positive_fraction == (1.0 if c > 0 else 0.0)
    assert r.num_matvecs == d and r.status == "exact"


def test_goldilocks_random_symmetric_is_order_one():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 300, generator=g, dtype=DT)
    ratios, fracs = [], []
    for seed in range(5):
        r = goldilocks(DenseOperator((X + X.T) / 2), 40, seed=seed)
        ratios.append(r.trace_ratio)
        fracs.append(r.positive_fraction)
    assert max(abs(x) for x in ratios) < 1.0 < math.sqrt(40) / 3  # O(1) (≈ √(2/d)), far below √d
    assert 0.3 < sum(fracs) / 5 < 0.7


def test_goldilocks_matches_dense_restriction():
    Q = random_orthogonal(50, 1)
    lam = torch.linspace(-1, 4, 50, dtype=DT)
    A = (Q * lam) @ Q.T
    M = random_orthonormal(50, 12, seed=3)
    Hd = M.T @ A @ M
    r = goldilocks(MatmulOnly((A + A.T) / 2), 12, seed=3)
    assert r.trace_ratio == pytest.approx((Hd.trace() / torch.linalg.matrix_norm(Hd)).item(), rel=1e-10)
    assert torch.allclose(r.eigenvalues, torch.linalg.eigvalsh((Hd + Hd.T) / 2), atol=1e-12)
    with pytest.raises(ValueError, match="need 1 <= d <= D"):
        goldilocks(DenseOperator(A), 51)


class NoisyFloor(MatmulOnly):
    """A dense operator that declares a measured relative rounding noise of its products."""

    noise_floor = 1e-6


def test_goldilocks_positive_fraction_respects_the_noise_band():
    # rank 4 in D = 40: on a d = 20 subspace H_d has 16 eigenvalues that are exactly zero up to
    # round-off, whose sign the products cannot resolve; they must not count as positive.
    Q = random_orthogonal(40, 5)
    lam = torch.zeros(40, dtype=DT)
    lam[:4] = torch.tensor([3.0, 2.0, 1.0, 0.5], dtype=DT)
    A = (Q * lam) @ Q.T
    A = (A + A.T) / 2 + 1e-9 * torch.diag(torch.linspace(-1, 1, 40, dtype=DT))  # tiny, inside the band
    r = goldilocks(NoisyFloor(A), 20, seed=0)
    M = random_orthonormal(40, 20, seed=0)
    assert r.noise_band == pytest.approx(10 * 1e-6 * torch.linalg.matrix_norm(A @ M).item(), rel=1e-12)
    assert r.unresolved_fraction == pytest.approx(16 / 20) and r.positive_fraction == pytest.approx(4 / 20)
    assert int((r.eigenvalues > 0).sum()) > 4  # the unresolved ones do straddle zero in sign
    exact = goldilocks(MatmulOnly(A), 20, seed=0)  # float64, no declared floor: band = 10·eps·‖AM‖_F
    assert exact.noise_band < 1e-13 and exact.unresolved_fraction == 0.0


def test_goldilocks_on_tiny_model_hessian():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(DT)
    data = [(torch.randn(30, 5, generator=g, dtype=DT), torch.randint(0, 3, (30,), generator=g))]
    H, Hd = Hessian(model, nn.CrossEntropyLoss(), data), dense_hessian(model, nn.CrossEntropyLoss(), data)
    r = goldilocks(H, 10, seed=4)
    M = random_orthonormal(Hd.shape[0], 10, seed=4)
    R = M.T @ Hd @ M
    assert r.trace_ratio == pytest.approx((R.trace() / torch.linalg.matrix_norm(R)).item(), rel=1e-8)


def test_results_save_load(tmp_path):
    s = split_spectrum(_t(9, 1, 0.5))
    s.save(tmp_path / "s.safetensors")
    back_s = SpectrumSplit.load(tmp_path / "s.safetensors")
    assert torch.equal(back_s.outliers, s.outliers) and back_s.num_outliers == s.num_outliers
    assert back_s.rule == s.rule and back_s.effective_rank == s.effective_rank
    r = goldilocks(DenseOperator(torch.eye(10, dtype=DT)), 4)
    r.save(tmp_path / "g.safetensors")
    back = GoldilocksResult.load(tmp_path / "g.safetensors")
    assert back.trace_ratio == r.trace_ratio and torch.equal(back.eigenvalues, r.eigenvalues)
    c = logit_gradient_clustering(torch.randn(3, 2, 4, dtype=DT), torch.tensor([0, 1, 0]))
    c.save(tmp_path / "c.safetensors")
    assert LogitClustering.load(tmp_path / "c.safetensors").same_logit == c.same_logit
