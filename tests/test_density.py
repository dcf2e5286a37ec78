"""Spectral densities: SLQ and KPM against exact spectra (synthetic and a trained 3k-parameter MLP)."""

from __future__ import annotations

import math

import pytest
import torch

from curvscope.linalg.density import Density, spectral_density, wasserstein1
from curvscope.operators import DenseOperator
from spectra import SPECTRA, MatmulOnly, make

DT = torch.float64


def span(lam: torch.Tensor) -> float:
    return float(lam.max() - lam.min())


# (method, num_probes, num_steps, W1 bound relative to the spectral span)
METHOD_CASES = [("slq", 10, 60, 1e-2), ("kpm", 10, 60, 2e-2)]


@pytest.mark.parametrize("name", list(SPECTRA))
@pytest.mark.parametrize(("method", "probes", "steps", "bound"), METHOD_CASES)
def test_density_close_to_exact_spectrum(name, method, probes, steps, bound):
    tm = make(name, 400, seed=0)
    rho = spectral_density(MatmulOnly(tm.A), method, probes, steps, seed=0, progress=False)
    assert rho.status == "completed", rho.message
    assert rho.wasserstein(tm.eigenvalues) <= bound * span(tm.eigenvalues)
    g = rho.grid(4000)
    assert abs(float(torch.trapezoid(rho.pdf(g), g)) - 1) < 5e-3
    c = rho.cdf(g)
    assert bool((c[1:] >= c[:-1] - 1e-3).all()) and float(c[0]) < 1e-2 and float(c[-1]) > 0.99
    lo, hi = rho.spectral_range
    if method == "kpm":  # the rescaling interval must contain the spectrum
        assert lo <= float(tm.eigenvalues[0]) and hi >= float(tm.eigenvalues[-1])


def test_slq_ritz_extremes_and_top_eigenvalues():
    tm = make("bulk_outliers", 400, seed=0)
    rho = spectral_density(DenseOperator(tm.A), "slq", 5, 60, seed=1, progress=False)
    vals, bounds = rho.top_eigenvalues(5)
    assert torch.allclose(vals, tm.eigenvalues.flip(0)[:5], atol=1e-10, rtol=0)
    assert bool((bounds <= 1e-8).all())
    _, hi = rho.spectral_range
    assert hi == pytest.approx(float(tm.eigenvalues[-1]), abs=1e-10)


def test_block_slq_is_one_product_per_step_and_matches_sequential():
    tm = make("negative", 200, seed=0)
    op = MatmulOnly(tm.A)
    block = spectral_density(op, "slq", 6, 30, seed=4, progress=False)
    assert op.calls == 30 and block.num_matvecs == 180
    seq = spectral_density(DenseOperator(tm.A), "slq", 6, 30, seed=4, block_size=1, progress=False)
    assert torch.allclose(block.nodes, seq.nodes, atol=1e-12) and torch.allclose(block.weights, seq.weights, atol=1e-12)


def test_breakdown_gives_exact_quadrature():
    lam = torch.tensor([0.0, 1.0, 5.0], dtype=DT).repeat_interleave(40)
    Q = torch.linalg.qr(torch.randn(120, 120, dtype=DT, generator=torch.Generator().manual_seed(0))).Q
    rho = spectral_density(DenseOperator((Q * lam) @ Q.T), "slq", 8, 50, seed=0, progress=False)
    assert rho.num_matvecs == 8 * 3 and "invariant subspace" in rho.message
    assert rho.mass_below(0.5) == pytest.approx(1 / 3, abs=0.1) and rho.mass_above(4.0) == pytest.approx(1 / 3, abs=0.1)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("papyan", lambda lo, hi, m: (2 / (m - 1)) / math.sqrt(8 * math.log(3)) * 0.5 * (hi - lo) * 1.1),
        ("pyhessian", lambda lo, hi, m: math.sqrt(1e-5 * max(1.0, hi - lo + 0.02))),
    ],
)
def test_broadening_conventions(rule, expected):
    tm = make("spiked", 200, seed=0)
    rho = spectral_density(DenseOperator(tm.A), "slq", 3, 40, seed=0, progress=False)
    lo, hi = rho.spectral_range
    assert rho.sigma(rule) == pytest.approx(expected(lo, hi, 40), rel=1e-12)
    g = rho.grid(20000, margin=0.2)
    assert float(torch.trapezoid(rho.pdf(g, rule), g)) == pytest.approx(1.0, abs=2e-3)
    wide = rho.pdf(g, sigma=1.0)  # re-smoothing is free: no products
    assert float(torch.trapezoid(wide, g)) == pytest.approx(1.0, abs=2e-2)
    with pytest.raises(ValueError, match="needs sigma"):
        rho.pdf(g, "gaussian")


def test_log_grid_and_kpm_options():
    tm = make("rank_deficient", 200, seed=0)
    rho = spectral_density(DenseOperator(tm.A), "kpm", 4, 40, seed=0, progress=False)
    g = rho.grid(100, scale="log")
    assert float(g[0]) > 0 and bool((g[1:] > g[:-1]).all())
    for kernel in ("jackson", "lorentz"):
        lin = rho.grid(4000)
        assert float(torch.trapezoid(rho.pdf(lin, kernel), lin)) == pytest.approx(1.0, abs=1e-2)
    with pytest.raises(ValueError, match="damping kernel"):
        rho.pdf(g, sigma=0.1)
    with pytest.raises(ValueError, match="needs an SLQ"):
        rho.top_eigenvalues()


def test_kpm_reports_a_too_narrow_range():
    tm = make("spiked", 200, seed=0)
    rho = spectral_density(DenseOperator(tm.A), "kpm", 2, 40, spectral_range=(0.0, 5.0), progress=False)
    assert rho.status == "range_exceeded" and "wider" in rho.message


@pytest.mark.parametrize("method", ["slq", "kpm"])
def test_save_load_roundtrip(tmp_path, method):
    tm = make("negative", 100, seed=0)
    rho = spectral_density(DenseOperator(tm.A), method, 3, 20, progress=False)
    rho.save(tmp_path / "d.safetensors")
    back = Density.load(tmp_path / "d.safetensors")
    g = rho.grid(50)
    assert torch.equal(back.pdf(g), rho.pdf(g)) and back.spectral_range == rho.spectral_range
    assert (back.method, back.num_matvecs, back.status) == (rho.method, rho.num_matvecs, rho.status)


def test_wasserstein_of_shifted_atoms():
    lam = torch.linspace(0, 1, 11, dtype=DT)
    assert wasserstein1(lam + 0.25, torch.ones(11), lam) == pytest.approx(0.25, abs=1e-12)


# --------------------------------------------------------------- model level
@pytest.fixture(scope="module")
def trained_digits_mlp():
    """MLP 64-32-32-10 (3466 parameters) trained 5 epochs on digits in float64; exact spectrum on 512 samples."""
    from sklearn.datasets import load_digits
    from torch import nn

    from curvscope.operators import Hessian
    from curvscope.operators.dense import dense_hessian

    X, y = load_digits(return_X_y=True)
    X, y = torch.tensor(X / 16.0, dtype=DT), torch.tensor(y)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 10)).to(DT)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(5):
        perm = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
    data = [(X[:256], y[:256]), (X[256:512], y[256:512])]
    H = Hessian(model, nn.CrossEntropyLoss(), data)
    lam = torch.linalg.eigvalsh(dense_hessian(model, nn.CrossEntropyLoss(), data))
    return H, lam


def test_slq_on_trained_mlp_matches_exact_spectrum(trained_digits_mlp):
    H, lam = trained_digits_mlp
    assert H.shape[0] == 3466
    rho = spectral_density(H, "slq", num_probes=10, num_steps=80, seed=0, progress=False)
    assert rho.num_matvecs == 800
    assert rho.wasserstein(lam) <= 1e-2 * span(lam)
    top, bound = rho.top_eigenvalues(1)
    assert abs(float(top[0]) - float(lam[-1])) <= 1e-6 and float(bound[0]) <= 1e-6
    for t in (0.01, 0.05):  # mass outside the bulk (exact: 2.9% and 0.8%)
        exact = float((lam > t * lam[-1]).double().mean())
        assert rho.mass_above(t * float(lam[-1])) == pytest.approx(exact, abs=0.003)
