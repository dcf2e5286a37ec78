"""Typed metric results (still usable as numbers) and the zero band of split_spectrum / goldilocks conventions."""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch

from curvscope.common import Status
from curvscope.linalg.density import spectral_density
from curvscope.metrics import (
    ChanceOverlap,
    Confinement,
    MaskOverlapChance,
    Overlap,
    chance_overlap,
    goldilocks,
    gradient_confinement,
    mask_overlap,
    random_mask_overlap,
    split_spectrum,
    subspace_overlap,
)
from curvscope.operators import DenseOperator
from spectra import random_orthogonal

DT = torch.float64


def test_scalar_results_are_typed_and_still_floats():
    e = torch.eye(6, dtype=DT)
    ov = mask_overlap(torch.tensor([0, 2]), e[:, :2])
    assert isinstance(ov, Overlap) and ov == 0.5 and ov / ov.chance == pytest.approx(0.5 / (2 / 6))
    assert ov.ratio_to_chance == pytest.approx(1.5) and (ov.k1, ov.k2, ov.dim) == (2, 2, 6)
    assert json.loads(json.dumps({"ov": ov})) == {"ov": 0.5}
    assert torch.tensor([ov, subspace_overlap(e[:, :2], e[:, :2])], dtype=DT).tolist() == [0.5, 1.0]
    back = pickle.loads(pickle.dumps(ov))
    assert back == ov and back.chance == ov.chance and round(back, 3) == 0.5
    conf = gradient_confinement(torch.tensor([3.0, 0, 4.0, 0, 0, 0], dtype=DT), e[:, :2])
    assert isinstance(conf, Confinement) and conf == pytest.approx(0.36) and conf.chance == 2 / 6


def test_tuple_results_unpack_as_before():
    c = chance_overlap(40, 3, num_samples=20, seed=0)
    assert isinstance(c, ChanceOverlap) and tuple(c) == (c.expected, c.mean, c.std) and c.num_samples == 20
    Q = torch.linalg.qr(torch.randn(50, 4, generator=torch.Generator().manual_seed(0), dtype=DT))[0]
    r = random_mask_overlap(Q, 4, num_samples=50, seed=1)
    mean, _ = r
    assert isinstance(r, MaskOverlapChance) and r.samples.shape == (50,) and mean == r.mean
    assert r.expected == pytest.approx(4 / 50) and not r.layer_matched


# ------------------------------------------------------------------------------ the zero band
def noisy_spectrum():
    """Ten outliers, a bulk, and 300 round-off eigenvalues of both signs at |λ| ≤ 1e-6·λmax."""
    g = torch.Generator().manual_seed(0)
    out = torch.linspace(20.0, 11.0, 10, dtype=DT)
    bulk = torch.linspace(2.0, 0.05, 60, dtype=DT)
    noise = 1e-5 * (2 * torch.rand(300, generator=g, dtype=DT) - 1)
    real_neg = torch.tensor([-0.5, -0.3], dtype=DT)
    return torch.cat([out, bulk, noise, real_neg])


def test_split_spectrum_counts_the_band_as_zero():
    lam = noisy_spectrum()
    raw = split_spectrum(lam)
    banded = split_spectrum(lam, noise_floor=1e-4)  # band 2e-3
    assert raw.negative_fraction > 0.3  # half the round-off cluster counted as negative curvature
    assert banded.negative_fraction == pytest.approx(2 / lam.numel())
    assert banded.band == pytest.approx(2e-3) and "noise floor" in banded.band_note
    assert banded.negative_ratio == pytest.approx(0.5 / 20)
    assert banded.effective_rank < raw.effective_rank
    assert split_spectrum(lam, band=0.4).negative_fraction == pytest.approx(1 / lam.numel())


def test_split_spectrum_gap_ignores_round_off_ratios():
    lam = torch.tensor([5.0, 2.5, 2.0, 1.9, 1e-9, 1e-15], dtype=DT)
    assert split_spectrum(lam).num_outliers == 4  # the "gap" 1.9 / 1e-9 is round-off
    banded = split_spectrum(lam, noise_floor=1e-6)
    assert banded.num_outliers == 1 and banded.gap_ratio == pytest.approx(2.0)


def test_split_spectrum_with_a_density_object():
    Q = random_orthogonal(300, 0)
    lam = torch.cat([torch.tensor([30.0, 25.0, 20.0]), -1e-6 * torch.ones(250), torch.linspace(0.1, 2, 47)]).to(DT)
    rho = spectral_density(DenseOperator((Q * lam) @ Q.T), "slq", 20, 40, seed=0, progress=False)
    s = split_spectrum(lam, density=rho)
    assert s.band == pytest.approx(rho.resolution) and "resolution" in s.band_note
    assert s.negative_fraction == pytest.approx(rho.negative_mass().value) and s.negative_fraction < 0.05
    assert s.num_outliers == 3


# ------------------------------------------------------------------------------ goldilocks
def test_goldilocks_keywords():
    A = DenseOperator(2.0 * torch.eye(40, dtype=DT))
    whole = goldilocks(A, 12, seed=torch.Generator().manual_seed(1))
    blocked = goldilocks(A, 12, seed=torch.Generator().manual_seed(1), block_size=5, progress=False)
    assert torch.allclose(whole.eigenvalues, blocked.eigenvalues, atol=1e-12) and whole.seed is None
    assert whole.status is Status.EXACT and whole.trace_ratio == pytest.approx(math.sqrt(12))
    with pytest.raises(ValueError, match="checkpoint"):
        goldilocks(A, 4, checkpoint="x")
    zero = goldilocks(DenseOperator(torch.zeros(10, 10, dtype=DT)), 3)
    assert zero.status is Status.ZERO and math.isnan(zero.trace_ratio) and "undefined" in zero.message


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_goldilocks_low_precision(dtype):
    lam = torch.linspace(-1, 3, 60, dtype=DT)
    Q = random_orthogonal(60, 2)
    A = ((Q * lam) @ Q.T).to(dtype)
    r = goldilocks(DenseOperator(A), 10, seed=3)
    ref = goldilocks(DenseOperator(A.double()), 10, seed=3)
    tol = 10 * torch.finfo(dtype).eps
    assert r.trace_ratio == pytest.approx(ref.trace_ratio, rel=tol, abs=tol)
