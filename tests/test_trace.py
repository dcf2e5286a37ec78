"""Trace and diagonal estimators: statistical calibration over a fixed seed list, exact cases."""

from __future__ import annotations

import pytest
import torch

from curvscope.linalg.trace import DiagonalResult, TraceResult, diagonal, trace
from curvscope.operators import DenseOperator
from spectra import MatmulOnly, make

DT = torch.float64
SEEDS = range(40)

# (spectrum, method, least fraction of seeds within 3 SE). XTrace's error estimate
# (std of exchangeable estimates / √n, Epperly et al.) is slightly optimistic.
CASES = [
    ("bulk_outliers", "hutchinson", 0.95),
    ("bulk_outliers", "hutch++", 0.95),
    ("bulk_outliers", "xtrace", 0.9),
    ("negative", "hutchinson", 0.95),
    ("negative", "hutch++", 0.95),
    ("negative", "xtrace", 0.9),
    ("rank_deficient", "hutch++", 0.95),
    ("rank_deficient", "xtrace", 0.85),
]


def runs(op, method, m=60):
    return [trace(op, method, m, seed=s) for s in SEEDS]


@pytest.mark.parametrize(("name", "method", "least"), CASES)
def test_trace_within_three_standard_errors(name, method, least):
    tm = make(name, 200, seed=0)
    exact = float(tm.eigenvalues.sum())
    out = runs(DenseOperator(tm.A), method)
    err = torch.tensor([r.estimate - exact for r in out], dtype=DT)
    se = torch.tensor([r.stderr for r in out], dtype=DT)
    assert all(r.num_matvecs == 60 for r in out)
    assert float(((err.abs() <= 3 * se).double()).mean()) >= least
    # unbiased: the mean error over seeds is within 4 standard errors of that mean
    assert abs(float(err.mean())) <= 4 * float(err.std()) / len(SEEDS) ** 0.5
    # calibrated: the reported SE matches the spread over seeds (a huge SE could not pass this)
    assert 0.5 <= float(se.mean()) / float(err.std()) <= 2.0


def test_sketching_beats_hutchinson_on_a_decaying_spectrum():
    tm = make("spiked", 200, seed=0)
    exact = float(tm.eigenvalues.sum())
    spread = {
        m: float(torch.tensor([r.estimate - exact for r in runs(DenseOperator(tm.A), m)]).std())
        for m in ("hutchinson", "hutch++", "xtrace")
    }
    assert max(spread["hutch++"], spread["xtrace"]) < spread["hutchinson"] / 10


def test_xtrace_is_exact_when_the_sketch_spans_the_range():
    lam = torch.cat([torch.zeros(90, dtype=DT), torch.arange(1.0, 11.0, dtype=DT)])
    Q = torch.linalg.qr(torch.randn(100, 100, dtype=DT, generator=torch.Generator().manual_seed(0))).Q
    r = trace(DenseOperator((Q * lam) @ Q.T), "xtrace", 40, seed=0)
    assert r.status == "exact" and r.stderr == 0.0
    assert r.estimate == pytest.approx(55.0, abs=1e-10)


def test_block_products_and_bare_protocol():
    tm = make("negative", 150, seed=0)
    op = MatmulOnly(tm.A)
    r = trace(op, "hutchinson", 30, seed=0, block_size=8)
    assert op.calls == 4 and r.num_matvecs == 30
    op2 = MatmulOnly(tm.A)
    trace(op2, "xtrace", 30, seed=0)
    assert op2.calls == 2  # A Ω and A Q: two block products


# (method, least fraction of entries within 3 SE, SE calibration window)
DIAG_CASES = [("hutchinson", 0.97, (0.8, 1.25)), ("xdiag", 0.95, (0.6, 1.25))]


@pytest.mark.parametrize(("method", "least", "window"), DIAG_CASES)
def test_diagonal_calibration(method, least, window):
    tm = make("bulk_outliers", 150, seed=1)
    exact = torch.diagonal(tm.A)
    out = [diagonal(DenseOperator(tm.A), method, 40, seed=s) for s in range(30)]
    est = torch.stack([r.estimate for r in out])
    se = torch.stack([r.stderr for r in out])
    assert float(((est - exact).abs() <= 3 * se).double().mean()) >= least
    lo, hi = window
    assert lo <= float(se.mean() / est.std(0).mean()) <= hi
    assert float((est.mean(0) - exact).abs().max()) <= 4 * float(est.std(0).max()) / 30**0.5


def test_xdiag_beats_hutchinson_on_a_low_rank_plus_small_matrix():
    tm = make("spiked", 150, seed=0)
    exact = torch.diagonal(tm.A)
    err = {
        m: torch.stack([diagonal(DenseOperator(tm.A), m, 40, seed=s).estimate - exact for s in range(10)]).norm()
        for m in ("hutchinson", "xdiag")
    }
    assert err["xdiag"] < err["hutchinson"] / 5


def test_errors_and_roundtrip(tmp_path):
    A = DenseOperator(torch.eye(10, dtype=DT))
    with pytest.raises(ValueError, match="valid"):
        trace(A, "girard")
    with pytest.raises(ValueError, match="num_matvecs"):
        trace(A, "xtrace", 2)
    r = trace(A, "hutch++", 9, seed=0)
    r.save(tmp_path / "t.safetensors")
    back_t = TraceResult.load(tmp_path / "t.safetensors")
    assert (back_t.estimate, back_t.stderr, back_t.method) == (r.estimate, r.stderr, r.method)
    assert torch.equal(back_t.samples, r.samples)
    d = diagonal(A, "xdiag", 6)
    d.save(tmp_path / "d.safetensors")
    back = DiagonalResult.load(tmp_path / "d.safetensors")
    assert torch.equal(back.estimate, d.estimate) and back.status == d.status


def test_trace_of_a_tiny_model_hessian():
    from curvscope.operators import Hessian
    from curvscope.operators.dense import dense_hessian
    from tiny_models import make_case

    case = make_case("mlp_tanh")
    H = Hessian(case.model, case.loss_fn, case.batches)
    exact = float(torch.trace(dense_hessian(case.model, case.loss_fn, case.full)))
    out = [trace(H, "hutch++", 30, seed=s) for s in range(10)]
    assert sum(abs(r.estimate - exact) <= 3 * r.stderr for r in out) >= 9
