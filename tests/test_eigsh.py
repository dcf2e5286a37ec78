"""eigsh: exact recovery on prescribed spectra, certificates, restarts, deflation, budget, interruption."""

from __future__ import annotations

import pytest
import torch

from curvscope.linalg.eigsh import EigshResult, eigsh, priority
from curvscope.linalg.power import power_iteration
from curvscope.operators import DenseOperator
from spectra import MatmulOnly, make

DT = torch.float64
TOL = 1e-10


def reference(lam: torch.Tensor, k: int, which: str) -> torch.Tensor:
    """The k wanted exact eigenvalues, as a sorted set."""
    return torch.sort(lam[priority(lam, which)[:k]]).values


def check_certified(A: torch.Tensor, res: EigshResult) -> None:
    """Every pair flagged converged has a true residual ≤ tol·anorm; reported residuals are true ones."""
    V, lam = res.eigenvectors, res.eigenvalues
    true_res = (A @ V - V * lam).norm(dim=0)
    assert torch.allclose(res.residuals, true_res, rtol=1e-6, atol=1e-14 * res.anorm)
    assert bool((true_res[res.converged] <= res.tol * res.anorm * (1 + 1e-6)).all())
    assert float((V.T @ V - torch.eye(V.shape[1], dtype=DT)).abs().max()) <= 1e-10


# (spectrum, which, k): top, bottom, magnitude and both ends on every spectrum kind
CASES = [
    ("spiked", "LA", 5),
    ("spiked", "SA", 6),
    ("bulk_outliers", "LA", 10),
    ("bulk_outliers", "LM", 12),
    ("clustered", "LA", 9),
    ("clustered", "SA", 8),
    ("repeated", "LA", 3),  # multiplicity 3 at the top
    ("repeated", "SA", 2),  # multiplicity 2 at the bottom
    ("repeated", "BE", 7),
    ("negative", "SA", 4),
    ("negative", "LM", 6),
    ("negative", "BE", 6),
    ("rank_deficient", "LA", 10),
    ("rank_deficient", "SA", 5),  # inside the exact null space
]


@pytest.mark.parametrize(("name", "which", "k"), CASES)
def test_recovers_prescribed_eigenvalues(name, which, k):
    tm = make(name, 300, seed=0)
    res = eigsh(MatmulOnly(tm.A), k, which, tol=TOL, seed=1, progress=False)
    assert res.status == "converged", res.message
    assert res.converged.all() and res.residual_kind == "true"
    err = (torch.sort(res.eigenvalues).values - reference(tm.eigenvalues, k, which)).abs().max()
    assert float(err) <= TOL * tm.norm  # relative to ‖A‖
    check_certified(tm.A, res)


def test_k200_with_bounded_basis_needs_restarts():
    tm = make("bulk_outliers", 800, seed=0)
    res = eigsh(DenseOperator(tm.A), 200, "LA", tol=TOL, ncv=260, progress=False)
    assert res.status == "converged" and res.num_restarts >= 3
    assert res.basis_nbytes == 261 * 800 * 8  # (ncv + 1) · D · itemsize, never more
    err = (res.eigenvalues - tm.eigenvalues.flip(0)[:200]).abs().max()
    assert float(err) <= TOL * tm.norm
    check_certified(tm.A, res)


@pytest.mark.parametrize("storage", ["host", "disk"])
def test_storage_media_give_the_same_pairs(storage):
    tm = make("negative", 200, seed=3)
    ref = eigsh(DenseOperator(tm.A), 6, "BE", tol=TOL, ncv=20, progress=False)
    res = eigsh(DenseOperator(tm.A), 6, "BE", tol=TOL, ncv=20, storage=storage, progress=False)
    assert res.num_matvecs == ref.num_matvecs and res.num_restarts == ref.num_restarts > 0
    assert torch.allclose(res.eigenvalues, ref.eigenvalues, atol=1e-12, rtol=0)


def test_deflation_finds_the_next_eigenvalues():
    tm = make("spiked", 200, seed=0)
    known = tm.eigenvectors[:, -3:]
    res = eigsh(DenseOperator(tm.A), 2, "LA", tol=TOL, deflate=known, progress=False)
    assert torch.allclose(res.eigenvalues, tm.eigenvalues[-5:-3].flip(0), atol=TOL * tm.norm, rtol=0)
    assert float((known.T @ res.eigenvectors).abs().max()) <= 1e-12


def test_budget_exhausted_is_reported_and_never_overclaimed():
    tm = make("bulk_outliers", 300, seed=0)
    res = eigsh(DenseOperator(tm.A), 8, "SA", tol=TOL, num_matvecs=60, progress=False)
    assert res.status == "max_matvecs" and not res.converged.all()
    assert "raise num_matvecs" in res.message
    check_certified(tm.A, res)


class InterruptAfter(MatmulOnly):
    def __init__(self, M, n):
        super().__init__(M)
        self.n = n

    def __matmul__(self, X):
        if self.calls >= self.n:
            raise KeyboardInterrupt
        return super().__matmul__(X)


def test_ctrl_c_returns_partial_with_honest_flags():
    tm = make("negative", 300, seed=0)  # needs 4 restarts: interrupt after the first
    res = eigsh(InterruptAfter(tm.A, 60), 5, "LA", tol=1e-8, ncv=30, progress=False)
    assert res.status == "interrupted" and res.partial and res.residual_kind == "ritz"
    assert res.num_converged == 0 and 0 < int(res.within_tol.sum()) < 5  # estimates certify nothing
    V, lam = res.eigenvectors, res.eigenvalues
    true_res = (tm.A @ V - V * lam).norm(dim=0)
    assert bool((true_res[res.within_tol] <= 1e-8 * res.anorm * 1.01).all())
    # interrupted during the final certificate product: Lanczos estimates, still flagged honestly
    full = eigsh(MatmulOnly(tm.A), 5, "LA", tol=1e-8, ncv=30, progress=False)
    late = eigsh(InterruptAfter(tm.A, full.num_matvecs - 5), 5, "LA", tol=1e-8, ncv=30, progress=False)
    assert late.status == "interrupted" and late.residual_kind == "ritz"
    assert late.num_converged == 0 and bool(late.within_tol.all()) and not late.status.trusted
    assert torch.allclose(late.eigenvalues, full.eigenvalues, atol=1e-12, rtol=0)


class Noisy(MatmulOnly):
    """Not deterministic: every product carries fresh noise of size 1e-7 (a GPU reduction, dropout on)."""

    def __init__(self, M):
        super().__init__(M)
        self.g = torch.Generator().manual_seed(0)

    def __matmul__(self, X):
        return super().__matmul__(X) + 1e-7 * torch.randn(X.shape, generator=self.g, dtype=X.dtype)


@pytest.mark.parametrize(("kind", "extra", "status"), [("true", 3, "converged"), ("estimated", 2, "unverified")])
def test_certificates_catch_a_nondeterministic_operator(kind, extra, status):
    tm = make("spiked", 300, seed=0)
    clean = eigsh(MatmulOnly(tm.A), 3, tol=TOL, residuals=kind, progress=False)
    ritz = eigsh(MatmulOnly(tm.A), 3, tol=TOL, residuals="ritz", progress=False)
    # only a measured residual certifies: an estimate meeting tol is "unverified", never "converged"
    assert clean.status == status and clean.num_matvecs == ritz.num_matvecs + extra
    assert clean.within_tol.all() and bool(clean.converged.all()) == (kind == "true")
    assert clean.status.trusted == (kind == "true") and "residuals='true'" in (
        clean.message if kind != "true" else "residuals='true'"
    )
    # measured residuals equal the Lanczos estimates to round-off; the estimate never undercuts them
    assert torch.allclose(clean.residuals, ritz.residuals, rtol=0, atol=1e-12 * clean.anorm)
    assert kind == "true" or bool((clean.residuals >= ritz.residuals).all())
    noisy = eigsh(Noisy(tm.A), 3, tol=TOL, residuals=kind, progress=False)
    assert noisy.status == "unverified" and not noisy.converged.any() and "deterministic" in noisy.message
    lazy = eigsh(Noisy(tm.A), 3, tol=TOL, residuals="ritz", progress=False)  # why "ritz" is opt-in:
    assert lazy.within_tol.all() and not lazy.converged.any() and lazy.status == "unverified"


def test_verified_is_the_deprecated_name_of_estimated():
    tm = make("spiked", 100, seed=0)
    with pytest.warns(DeprecationWarning, match="residuals='estimated'"):
        old = eigsh(MatmulOnly(tm.A), 2, tol=TOL, residuals="verified", progress=False)
    new = eigsh(MatmulOnly(tm.A), 2, tol=TOL, residuals="estimated", progress=False)
    assert old.residual_kind == new.residual_kind == "estimated" and old.status == new.status == "unverified"
    assert torch.equal(old.residuals, new.residuals)


def test_full_space_and_tiny_operators():
    tm = make("negative", 12, seed=0)
    res = eigsh(tm.A, 12, "LA", tol=TOL, progress=False)  # a plain tensor speaks the protocol too
    assert res.status == "converged"
    assert torch.allclose(res.eigenvalues, tm.eigenvalues.flip(0), atol=TOL * tm.norm, rtol=0)


def test_float32_meets_its_default_tolerance():
    tm = make("spiked", 200, seed=0)
    A32 = tm.A.float()
    res = eigsh(A32, 3, "LA", progress=False)  # work_dtype="auto": float64 Krylov arithmetic
    assert res.status == "converged" and res.tol == pytest.approx(torch.finfo(torch.float32).eps ** 0.5)
    assert res.eigenvectors.dtype == DT and "does not measure its noise" in res.tol_reason
    assert torch.allclose(res.eigenvalues.double(), tm.eigenvalues[-3:].flip(0), rtol=1e-5)
    # float64 Krylov arithmetic on the float32 operator: products stay float32, vectors come back float64
    op = MatmulOnly(A32)
    wide = eigsh(op, 3, "LA", tol=1e-6, work_dtype=DT, progress=False)
    assert wide.status == "converged" and wide.eigenvectors.dtype == DT and wide.tol == 1e-6
    exact32 = torch.linalg.eigvalsh(A32.double())[-3:].flip(0)
    assert torch.allclose(wide.eigenvalues, exact32, rtol=1e-7, atol=0)


def test_progress_bar_only_when_asked(capsys):
    tm = make("spiked", 100, seed=0)
    eigsh(DenseOperator(tm.A), 2, progress=True)
    assert "matvec" in capsys.readouterr().err
    eigsh(DenseOperator(tm.A), 2, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"which": "XX"}, "which must be one of"), ({"k": 0}, "k must be between"), ({"k": 5, "ncv": 4}, "ncv=4")],
)
def test_errors_say_what_to_do(kwargs, match):
    with pytest.raises(ValueError, match=match):
        eigsh(DenseOperator(torch.eye(20, dtype=DT)), **kwargs)


def test_save_load_roundtrip(tmp_path):
    tm = make("clustered", 100, seed=0)
    res = eigsh(DenseOperator(tm.A), 3, progress=False)
    res.save(tmp_path / "e.safetensors")
    back = EigshResult.load(tmp_path / "e.safetensors")
    assert torch.equal(back.eigenvalues, res.eigenvalues) and torch.equal(back.converged, res.converged)
    assert (back.status, back.num_matvecs, back.which) == (res.status, res.num_matvecs, res.which)


def test_power_iteration_baseline_is_slower_and_honest():
    tm = make("clustered", 200, seed=0)  # top gap 1e-3 relative: power iteration crawls
    pw = power_iteration(DenseOperator(tm.A), 1, num_matvecs=300, tol=1e-10)
    lz = eigsh(DenseOperator(tm.A), 1, tol=1e-10, progress=False)
    assert lz.status == "converged" and lz.num_matvecs < 100
    assert pw.status == "max_matvecs" and not pw.converged[0]
    assert float(pw.residuals[0]) > 1e-10 * pw.anorm


# --------------------------------------------------------------- model level
@pytest.mark.parametrize("name", ["mlp_tanh", "cnn_bn"])
@pytest.mark.parametrize("which", ["LA", "SA"])
def test_dense_hessian_of_tiny_models(name, which):
    from curvscope.operators import Hessian
    from curvscope.operators.dense import dense_hessian
    from tiny_models import make_case

    case = make_case(name)
    H = Hessian(case.model, case.loss_fn, case.batches)
    Hd = dense_hessian(case.model, case.loss_fn, case.full)
    lam = torch.linalg.eigvalsh(Hd)
    res = eigsh(H, 4, which, tol=TOL, progress=False)
    assert res.status == "converged", res.message
    err = (torch.sort(res.eigenvalues).values - reference(lam, 4, which)).abs().max()
    assert float(err) <= TOL * float(lam.abs().max())
    check_certified(Hd, res)
