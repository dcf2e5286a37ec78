"""Density resolution and banded masses, the keyword convention, fingerprints and precision of spectral_density."""

from __future__ import annotations

import math

import pytest
import torch

from curvscope.common import Status
from curvscope.linalg.density import Density, spectral_density
from curvscope.operators import DenseOperator
from curvscope.operators.fingerprint import StaleStateError
from spectra import make, random_orthogonal

DT = torch.float64


def rotated(lam: torch.Tensor, seed: int = 0) -> torch.Tensor:
    Q = random_orthogonal(lam.numel(), seed)
    return (Q * lam) @ Q.T


def cluster_spectrum(D: int = 400) -> torch.Tensor:
    """90% of the eigenvalues in a tiny negative cluster (|λ| ~ 1e-6·λmax), 5% real negatives, 5% positive."""
    g = torch.Generator().manual_seed(0)
    n_neg, n_pos = D // 20, D // 20
    cluster = -1e-5 * (1 + torch.rand(D - n_neg - n_pos, generator=g, dtype=DT))
    negatives = -0.3 - 0.2 * torch.rand(n_neg, generator=g, dtype=DT)
    positives = 0.1 + 9.9 * torch.rand(n_pos, generator=g, dtype=DT)
    return torch.cat([cluster, negatives, positives])


@pytest.mark.parametrize("method", ["slq", "kpm"])
def test_negative_mass_ignores_a_cluster_inside_the_resolution(method):
    lam = cluster_spectrum()
    rho = spectral_density(DenseOperator(rotated(lam)), method, 30, 40, seed=0, progress=False)
    band = rho.resolution
    assert 1e-4 < band < 0.3  # wider than the cluster, narrower than the real negatives
    true = float((lam < -band).double().mean())  # 5%
    neg = rho.negative_mass()
    assert neg.value == pytest.approx(true, abs=0.03), neg.note
    assert neg.band == band and "resolution" in neg.note
    assert neg.within_band > 0.7  # the cluster is reported as inside the band
    if method == "slq":  # the raw mass below zero counts the cluster as negative curvature
        assert neg.raw > 0.5
    assert float(neg) == neg.value and neg * 2 == 2 * neg.value  # also a float


def test_fraction_below_counts_the_band_as_zero():
    lam = cluster_spectrum()
    rho = spectral_density(DenseOperator(rotated(lam)), "slq", 30, 40, seed=0, progress=False)
    band = rho.resolution
    inside = rho.fraction_below(-band / 2)
    assert inside.value == pytest.approx(rho.negative_mass().value, abs=1e-12)
    assert rho.fraction_below(0.0).value == pytest.approx(rho.mass_below(band), abs=1e-12)
    assert rho.fraction_below(-1.0).value == pytest.approx(rho.mass_below(-1.0), abs=1e-12)
    assert rho.negative_mass(band=1e-12).value == pytest.approx(rho.mass_below(-1e-12), abs=1e-12)


class Noisy(DenseOperator):
    noise_floor = 0.05


def test_resolution_formulas_and_noise_floor():
    tm = make("spiked", 200, seed=0)
    slq = spectral_density(DenseOperator(tm.A), "slq", 3, 40, seed=0, progress=False)
    assert slq.resolution == pytest.approx(slq.sigma("papyan"), rel=1e-12) and slq.noise_floor is None
    kpm = spectral_density(DenseOperator(tm.A), "kpm", 3, 40, seed=0, progress=False)
    lo, hi = kpm.spectral_range
    assert kpm.resolution == pytest.approx(math.pi * (hi - lo) / 2 / (2 * 40 + 1 + 1), rel=1e-12)
    noisy = spectral_density(Noisy(tm.A), "slq", 3, 40, seed=0, progress=False)
    assert noisy.noise_floor == 0.05
    assert noisy.resolution == pytest.approx(math.hypot(noisy.kernel_width, 0.05 * noisy.norm), rel=1e-12)
    assert "noise floor" in noisy.negative_mass().note


def test_save_load_keeps_noise_floor_and_status(tmp_path):
    tm = make("negative", 100, seed=0)
    rho = spectral_density(Noisy(tm.A), "slq", 3, 20, progress=False)
    rho.save(tmp_path / "d.safetensors")
    back = Density.load(tmp_path / "d.safetensors")
    assert back.noise_floor == 0.05 and back.resolution == rho.resolution
    assert back.status is Status.COMPLETED and back.work_dtype == "torch.float64"


# ------------------------------------------------------------------ keyword convention
def test_kpm_block_size_gives_the_same_moments():
    tm = make("negative", 150, seed=0)
    full = spectral_density(DenseOperator(tm.A), "kpm", 6, 20, seed=3, progress=False)
    blocks = spectral_density(DenseOperator(tm.A), "kpm", 6, 20, seed=3, block_size=4, progress=False)
    assert torch.allclose(full.moments, blocks.moments, atol=1e-12) and full.num_matvecs == blocks.num_matvecs


@pytest.mark.parametrize(
    ("method", "kwargs", "match"),
    [
        ("kpm", {"checkpoint": "x.ckpt"}, "not resumable"),
        ("kpm", {"storage": "host"}, "storage"),
        ("slq", {"spectral_range": (0.0, 1.0)}, "KPM"),
        ("slq", {"work_dtype": "float64"}, "work_dtype"),
    ],
)
def test_meaningless_keywords_are_refused(method, kwargs, match):
    A = DenseOperator(torch.eye(10, dtype=DT))
    with pytest.raises(ValueError, match=match):
        spectral_density(A, method, 2, 5, progress=False, **kwargs)


def test_seed_generator_is_the_same_as_its_int():
    tm = make("negative", 100, seed=0)
    a = spectral_density(DenseOperator(tm.A), "slq", 3, 10, seed=7, progress=False)
    b = spectral_density(DenseOperator(tm.A), "slq", 3, 10, seed=torch.Generator().manual_seed(7), progress=False)
    assert torch.equal(a.nodes, b.nodes)


# ------------------------------------------------------------------ fingerprints
def test_slq_checkpoint_refuses_another_operator(tmp_path):
    tm = make("negative", 100, seed=0)
    ckpt = tmp_path / "slq.ckpt"
    first = spectral_density(DenseOperator(tm.A), "slq", 4, 10, seed=1, block_size=2, checkpoint=ckpt, progress=False)
    again = spectral_density(DenseOperator(tm.A), "slq", 4, 10, seed=1, block_size=2, checkpoint=ckpt, progress=False)
    assert torch.equal(first.nodes, again.nodes)  # same operator: resumes (nothing left to do)
    changed = DenseOperator(tm.A * 1.001)
    with pytest.raises(StaleStateError, match="matrix"):
        spectral_density(changed, "slq", 4, 10, seed=1, block_size=2, checkpoint=ckpt, progress=False)


# ------------------------------------------------------------------ precision
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ["slq", "kpm"])
def test_low_precision_operators_work_end_to_end(dtype, method):
    lam = torch.linspace(-1.0, 4.0, 120, dtype=DT)
    A = DenseOperator(rotated(lam).to(dtype))
    rho = spectral_density(A, method, 6, 30, seed=0, progress=False)
    assert rho.status == Status.COMPLETED and rho.work_dtype == "torch.float64"
    exact = torch.linalg.eigvalsh(A.matrix.double())
    assert rho.wasserstein(exact) < 0.05 * 5
    assert rho.negative_mass().value == pytest.approx(float((exact < -rho.resolution).double().mean()), abs=0.1)
