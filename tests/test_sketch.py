"""sketched_eigh against exact eigendecompositions (float64): synthetic spectra and a tiny-model Hessian."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from curvscope.linalg.sketch import SketchResult, TestMatrix, sketched_eigh, tail_factor
from curvscope.operators import DenseOperator, Hessian
from curvscope.operators.dense import dense_hessian
from spectra import MatmulOnly, make, random_orthogonal

DT = torch.float64
D = 160


def _from_spectrum(lam: torch.Tensor, seed: int = 3) -> torch.Tensor:
    Q = random_orthogonal(len(lam), seed)
    A = (Q * lam) @ Q.T
    return (A + A.T) / 2


def _fast(n):  # geometric decay, both signs
    i = torch.arange(n, dtype=DT)
    return 10 * 0.75**i * torch.where(i % 3 == 1, -1.0, 1.0)


def _slow(n):  # λ_i = i^(-1/2): a flat spectrum, hard for any sketch
    i = torch.arange(1, n + 1, dtype=DT)
    return i**-0.5 * torch.where(i % 4 == 2, -1.0, 1.0)


def _psd_fast(n):
    return 5 * 0.7 ** torch.arange(n, dtype=DT)


MATRICES = {
    "fast": lambda: _from_spectrum(_fast(D)),
    "slow": lambda: _from_spectrum(_slow(D)),
    "psd_fast": lambda: _from_spectrum(_psd_fast(D)),
    "negative": lambda: make("negative", D, seed=1).A,
    "rank_deficient": lambda: make("rank_deficient", D, seed=2).A,
    "bulk_outliers": lambda: make("bulk_outliers", D, seed=4).A,
}
PSD = {"psd_fast", "rank_deficient", "bulk_outliers"}
# (method, extra kwargs) at 60 sketch products for k = 10
METHODS = [
    ("block_krylov", {"block_size": 4}),
    ("core", {}),
    ("subspace", {"power_iters": 2}),
    ("nystrom", {}),
    ("nystrom", {"power_iters": 1}),
]
CASES = [(m, name, kw) for m, kw in METHODS for name in MATRICES if m != "nystrom" or name in PSD]


@pytest.fixture(scope="module")
def matrices():
    return {name: f() for name, f in MATRICES.items()}


def _check_certificates(A: torch.Tensor, res: SketchResult):
    """Rigorous checks of everything the result claims about itself."""
    lam, V = res.eigenvalues, res.eigenvectors
    k = len(lam)
    exact = torch.linalg.eigvalsh(A)
    scale = exact.abs().max().item()
    # orthonormal eigenvectors
    assert torch.allclose(V.T @ V, torch.eye(k, dtype=DT), atol=1e-10)
    # reported residuals are the true ones; Bauer–Fike: an eigenvalue of A within each residual
    true_res = (A @ V - V * lam).norm(dim=0)
    checked = ~res.residuals.isnan()
    assert checked.any()
    assert torch.allclose(res.residuals[checked], true_res[checked], atol=1e-9 * scale)
    gaps = (lam[:, None] - exact[None, :]).abs().min(dim=1).values
    assert (gaps[checked] <= res.residuals[checked] + 1e-10 * scale).all()
    # the a-posteriori error bounds hold; Weyl: every eigenvalue error of Â is below ‖A − Â‖₂
    E = A - (V * lam) @ V.T
    fro, two = torch.linalg.matrix_norm(E).item(), torch.linalg.matrix_norm(E, 2).item()
    assert fro <= res.error_fro_bound and two <= res.error_2_bound
    assert fro / 2.5 <= res.error_fro <= 2.5 * fro + 1e-12 * scale
    ahat = torch.sort(torch.cat([lam, torch.zeros(A.shape[0] - k, dtype=DT)])).values
    assert (ahat - exact).abs().max().item() <= res.error_2_bound + 1e-10 * scale


@pytest.mark.parametrize("method,name,kw", CASES, ids=[f"{m}-{n}-{len(kw)}" for m, n, kw in CASES])
def test_against_exact(matrices, method, name, kw):
    A = matrices[name]
    res = sketched_eigh(DenseOperator(A), 10, method=method, num_matvecs=60, seed=5, **kw)
    assert res.matvecs["sketch"] == 60 and res.matvecs["error_probes"] == 30
    assert res.num_matvecs == sum(res.matvecs.values())
    assert res.status == "completed", res.message
    _check_certificates(A, res)
    if method == "nystrom":  # Nyström of a PSD operator is PSD
        assert (res.eigenvalues >= 0).all()


@pytest.mark.parametrize("name,outliers", [("fast", 10), ("psd_fast", 10), ("negative", 6)])
def test_block_krylov_converges_on_fast_decay(matrices, name, outliers):
    A = matrices[name]
    exact = torch.linalg.eigvalsh(A)
    top = exact[torch.argsort(exact.abs(), descending=True)][:outliers]
    res = sketched_eigh(DenseOperator(A), 10, num_matvecs=60, block_size=4)
    assert torch.allclose(res.eigenvalues[:outliers], top, rtol=1e-8, atol=0)
    assert res.num_certified(1e-6) >= outliers


def test_krylov_beats_single_pass_on_slow_decay(matrices):
    A = matrices["slow"]
    exact = torch.linalg.eigvalsh(A)
    top = exact[torch.argsort(exact.abs(), descending=True)][:20]

    def within(res):
        return int(((res.eigenvalues - top).abs() <= 1e-2 * top.abs()).sum())

    kry = sketched_eigh(DenseOperator(A), 20, num_matvecs=80, block_size=2, error_probes=0)
    core = sketched_eigh(DenseOperator(A), 20, method="core", num_matvecs=80, error_probes=0)
    assert within(kry) >= 3 * max(1, within(core))


@pytest.mark.parametrize("sort", ["magnitude", "value"])
def test_sort_orders(matrices, sort):
    A = matrices["negative"]
    exact = torch.linalg.eigvalsh(A)
    res = sketched_eigh(DenseOperator(A), 3, num_matvecs=80, block_size=4, sort=sort, error_probes=0)
    key = exact.abs() if sort == "magnitude" else exact
    assert torch.allclose(res.eigenvalues, exact[torch.argsort(key, descending=True)][:3], rtol=1e-8)


def test_nystrom_flags_indefinite(matrices):
    res = sketched_eigh(DenseOperator(matrices["negative"]), 5, method="nystrom", num_matvecs=30)
    assert res.status == "not_psd" and "method='core'" in res.message


@pytest.mark.parametrize("method", ["block_krylov", "core", "subspace", "nystrom"])
def test_exact_recovery_of_low_rank(method):
    lam = torch.cat([torch.tensor([4.0, 3.0, 2.0, 1.5, 1.0, 0.5], dtype=DT), torch.zeros(D - 6, dtype=DT)])
    A = _from_spectrum(lam)
    res = sketched_eigh(DenseOperator(A), 6, method=method, num_matvecs=30)
    assert torch.allclose(res.eigenvalues, lam[:6], atol=1e-10)
    assert res.error_fro < 1e-9


def test_block_krylov_restarts_when_krylov_space_is_exhausted():
    lam = torch.cat([torch.linspace(1, 3, 12, dtype=DT), torch.zeros(D - 12, dtype=DT)])
    A = _from_spectrum(lam)
    res = sketched_eigh(DenseOperator(A), 12, num_matvecs=40, block_size=4, error_probes=0)
    assert res.status == "completed"
    assert torch.allclose(res.eigenvalues, lam[:12].flip(0), atol=1e-10)
    V = res.eigenvectors
    assert torch.allclose(V.T @ V, torch.eye(12, dtype=DT), atol=1e-10)


def test_tiny_model_hessian():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 10), nn.Tanh(), nn.Linear(10, 4)).to(DT)
    X, y = torch.randn(40, 6, dtype=DT, generator=g), torch.randint(0, 4, (40,), generator=g)
    data = [(X[:25], y[:25]), (X[25:], y[25:])]
    H = Hessian(model, nn.CrossEntropyLoss(), data)
    Hd = dense_hessian(model, nn.CrossEntropyLoss(), [(X, y)])
    exact = torch.linalg.eigvalsh(Hd)
    top = exact[torch.argsort(exact.abs(), descending=True)][:8]
    res = sketched_eigh(H, 8, num_matvecs=64, block_size=4, seed=1)
    _check_certificates(Hd, res)
    good = res.residuals <= 1e-3 * res.eigenvalues.abs()
    assert good[:4].all()
    assert torch.allclose(res.eigenvalues[good], top[good], rtol=1e-3)
    core = sketched_eigh(H, 8, method="core", num_matvecs=64, seed=1)
    _check_certificates(Hd, core)


def test_seeded_and_block_size_independent(matrices):
    A = DenseOperator(matrices["slow"])
    a = sketched_eigh(A, 5, method="core", num_matvecs=40, block_size=7, seed=3)
    b = sketched_eigh(A, 5, method="core", num_matvecs=40, block_size=40, seed=3)
    c = sketched_eigh(A, 5, method="core", num_matvecs=40, seed=4)
    assert torch.allclose(a.eigenvalues, b.eigenvalues, rtol=1e-12)
    assert not torch.allclose(a.eigenvalues, c.eigenvalues, rtol=1e-6)
    again = sketched_eigh(A, 5, num_matvecs=40, seed=3)
    assert torch.equal(again.eigenvalues, sketched_eigh(A, 5, num_matvecs=40, seed=3).eigenvalues)


def test_rademacher_and_protocol_only_operator(matrices):
    op = MatmulOnly(matrices["fast"])
    res = sketched_eigh(op, 5, num_matvecs=40, test_vectors="rademacher", block_size=4, error_probes=0)
    exact = torch.linalg.eigvalsh(matrices["fast"])
    assert torch.allclose(res.eigenvalues, exact[torch.argsort(exact.abs(), descending=True)][:5], rtol=1e-8)
    assert op.calls == 10  # one product per block


BAD_ARGS = [
    ({"k": 0}, ValueError, "k=0"),
    ({"k": D + 1}, ValueError, "k="),
    ({"method": "lanczos"}, ValueError, "valid:"),
    ({"sort": "abs"}, ValueError, "valid:"),
    ({"test_vectors": "sobol"}, ValueError, "valid:"),
    ({"method": "core", "num_matvecs": 15}, ValueError, "raise num_matvecs"),
    ({"method": "core", "power_iters": 2}, ValueError, "single-pass"),
    ({"method": "subspace", "power_iters": 0}, ValueError, "power_iters >= 1"),
    ({"method": "block_krylov", "power_iters": 2}, ValueError, "no power iterations"),
    ({"method": "core", "block_size": 4, "memory_budget": 30_000}, MemoryError, "store="),
    ({"method": "core", "block_size": 64, "memory_budget": 30_000}, MemoryError, "block_size"),
    ({"error_probes": -1}, ValueError, "error_probes"),
]


@pytest.mark.parametrize("kwargs,err,match", BAD_ARGS)
def test_errors_raised_before_any_product(matrices, kwargs, err, match):
    op = MatmulOnly(matrices["fast"])
    kwargs = {"k": 10, **kwargs}
    with pytest.raises(err, match=match):
        sketched_eigh(op, **kwargs)
    assert op.calls == 0


def test_save_load_roundtrip(tmp_path, matrices):
    res = sketched_eigh(DenseOperator(matrices["fast"]), 4, num_matvecs=24, block_size=4)
    res.save(tmp_path / "r.safetensors")
    back = SketchResult.load(tmp_path / "r.safetensors")
    assert torch.equal(back.eigenvalues, res.eigenvalues) and torch.equal(back.eigenvectors, res.eigenvectors)
    assert back.matvecs == res.matvecs and back.status == res.status and back.config == res.config


def test_test_matrix_tiles_are_consistent():
    Om = TestMatrix("gaussian", 20_000, 20, seed=1, stream="x", dtype=DT, block_size=6)
    full = Om.rows(0, 20_000)
    assert torch.equal(Om.rows(8000, 8500, 3, 17), full[8000:8500, 3:17])
    assert torch.equal(torch.cat([Om.block(j) for j in range(len(Om))], 1), full)
    assert abs(full.std().item() - 1) < 0.01


@pytest.mark.parametrize("p,delta", [(10, 1e-2), (30, 1e-3)])
def test_tail_factor_solves_the_chernoff_equation(p, delta):
    f = tail_factor(p, delta)
    eps = 1 - 1 / f
    assert math.isclose((math.exp(eps) * (1 - eps)) ** (p / 2), delta, rel_tol=1e-6)
