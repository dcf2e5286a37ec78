"""eigsh, lanczos, power_iteration: one keyword convention, statuses, precision, noise floors, checkpoints."""

from __future__ import annotations

import inspect

import pytest
import torch

import curvscope.memory as memory
from curvscope.common import Status
from curvscope.linalg import power as power_module
from curvscope.linalg.checkpoint import save_state
from curvscope.linalg.eigsh import eigsh
from curvscope.linalg.lanczos import lanczos
from curvscope.linalg.power import power_iteration
from curvscope.linalg.precision import NOISE_FACTOR
from curvscope.operators import DenseOperator
from curvscope.operators.fingerprint import StaleStateError
from spectra import MatmulOnly, make

DT = torch.float64
ALGORITHMS = {
    "eigsh": lambda A, **kw: eigsh(A, 3, **kw),
    "lanczos": lambda A, **kw: lanczos(A, 20, **kw),
    "power_iteration": lambda A, **kw: power_iteration(A, 2, **kw),
}
SHARED = ("seed", "progress", "block_size", "work_dtype", "checkpoint")


# ------------------------------------------------------------------ one convention
@pytest.mark.parametrize("fn", [eigsh, lanczos, power_iteration])
def test_every_algorithm_takes_the_shared_keywords(fn):
    params = inspect.signature(fn).parameters
    for name in SHARED:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    assert params["progress"].default is None and params["work_dtype"].default == "auto"
    assert params["checkpoint"].default is None


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"block_size": 0}, ValueError, "block_size must be a positive int"),
        ({"work_dtype": torch.bfloat16}, ValueError, "cannot keep a Krylov basis orthogonal"),
        ({"work_dtype": "fast"}, ValueError, "work_dtype must be 'auto'"),
        ({"seed": 1.5}, TypeError, "seed must be an int or a torch.Generator"),
    ],
)
def test_meaningless_values_are_refused(name, kwargs, error, match):
    A = DenseOperator(make("spiked", 40, seed=0).A)
    with pytest.raises(error, match=match):
        ALGORITHMS[name](A, progress=False, **kwargs)


def test_lanczos_refuses_a_checkpoint_it_cannot_honour(tmp_path):
    with pytest.raises(ValueError, match=r"lanczos does not checkpoint.*spectral_density"):
        lanczos(DenseOperator(torch.eye(5, dtype=DT)), 3, checkpoint=tmp_path / "c")


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_results_carry_status_values_and_progress_follows_the_flag(name, capsys):
    A = DenseOperator(make("spiked", 60, seed=0).A)
    res = ALGORITHMS[name](A, progress=True, seed=torch.Generator().manual_seed(2))
    assert isinstance(res.status, Status) and res.status.trusted and res.message
    assert "%|" in capsys.readouterr().err  # a bar was drawn
    ALGORITHMS[name](A, progress=False)
    assert capsys.readouterr().err == ""


class Recording(MatmulOnly):
    """Records how many vectors each product multiplies."""

    def __init__(self, M):
        super().__init__(M)
        self.widths = []

    def __matmul__(self, X):
        self.widths.append(1 if X.ndim == 1 else X.shape[1])
        return super().__matmul__(X)


def test_block_size_bounds_the_vectors_per_product():
    tm = make("spiked", 120, seed=0)
    ref = eigsh(Recording(tm.A), 5, tol=1e-10, progress=False)
    op = Recording(tm.A)
    res = eigsh(op, 5, tol=1e-10, block_size=2, progress=False)
    assert max(op.widths) == 2 and res.num_matvecs == ref.num_matvecs == sum(op.widths)
    torch.testing.assert_close(res.residuals, ref.residuals, rtol=1e-6, atol=1e-13)
    starts = torch.randn(120, 4, generator=torch.Generator().manual_seed(0), dtype=DT)
    op = Recording(tm.A)
    lz = lanczos(op, 10, starts, block_size=3)
    assert set(op.widths) == {3, 1} and lz.num_matvecs == 40
    torch.testing.assert_close(lz.alpha, lanczos(tm.A, 10, starts).alpha, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ power iteration
def test_power_iteration_returns_unit_vectors_with_their_measured_residuals_when_the_budget_runs_out():
    tm = make("clustered", 200, seed=0)  # gaps 1e-3: the budget runs out long before convergence
    for block_size in (1, 3):
        res = power_iteration(DenseOperator(tm.A), 3, num_matvecs=40, tol=1e-10, block_size=block_size)
        assert res.status == "max_matvecs" and 0 < res.eigenvalues.numel() <= 3
        V, lam = res.eigenvectors, res.eigenvalues
        torch.testing.assert_close(V.norm(dim=0), torch.ones(V.shape[1], dtype=DT), rtol=0, atol=1e-12)
        true = (tm.A @ V - V * lam).norm(dim=0)
        torch.testing.assert_close(res.residuals, true, rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(lam, ((V * (tm.A @ V)).sum(0)), rtol=0, atol=1e-12)  # Rayleigh quotients


def test_power_iteration_blocks_find_the_top_pairs():
    tm = make("spiked", 150, seed=0)
    for block_size in (1, 2, None):
        res = power_iteration(DenseOperator(tm.A), 4, tol=1e-9, num_matvecs=4000, block_size=block_size)
        assert res.status == "converged", (block_size, res.message)
        torch.testing.assert_close(res.eigenvalues, tm.eigenvalues[-4:].flip(0), rtol=0, atol=1e-8)


class Bare(MatmulOnly):
    """The bare protocol (no fingerprint: opaque), optionally interrupted (Ctrl-C) after ``n`` products."""

    def __init__(self, M, n=None):
        super().__init__(M)
        self.n = n

    def __matmul__(self, X):
        if self.n is not None and self.calls >= self.n:
            raise KeyboardInterrupt
        return super().__matmul__(X)


def test_power_iteration_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(power_module, "CHECKPOINT_SECONDS", 0.0)  # save after every product
    tm = make("spiked", 100, seed=0)
    kw = {"num_matvecs": 500, "tol": 1e-9, "block_size": 2, "seed": 4}
    ref = power_iteration(DenseOperator(tm.A), 4, **kw)
    assert ref.status == "converged"
    path = tmp_path / "power.ckpt"
    cut = power_iteration(Bare(tm.A, 30), 4, checkpoint=path, **kw)
    assert cut.status == "interrupted" and cut.num_matvecs == 60
    rest = Bare(tm.A)
    with pytest.warns(UserWarning, match="cannot be fingerprinted"):  # only type, shape and dtype checked
        res = power_iteration(rest, 4, checkpoint=path, **kw)
    assert torch.equal(res.eigenvalues, ref.eigenvalues) and torch.equal(res.eigenvectors, ref.eigenvectors)
    assert res.num_matvecs == ref.num_matvecs and 2 * rest.calls == ref.num_matvecs - 60  # nothing redone
    with pytest.raises(StaleStateError, match="kind: 'Bare' -> 'DenseOperator'"):
        power_iteration(DenseOperator(tm.A), 4, checkpoint=path, **kw)


# ------------------------------------------------------------------ checkpoints
def _slow_problem():
    tm = make("negative", 150, seed=0)
    return tm.A, {"k": 5, "which": "LA", "tol": 1e-10, "ncv": 14, "seed": 3, "progress": False}


def test_eigsh_resumes_its_own_checkpoint_bitwise(tmp_path):
    M, kw = _slow_problem()
    ref = eigsh(DenseOperator(M), **kw)
    path = tmp_path / "e.ckpt"
    first = eigsh(DenseOperator(M), checkpoint=path, **kw)
    assert path.exists() and first.num_restarts > 2
    op = Recording(M)
    op.fingerprint = DenseOperator(M).fingerprint  # same operator, counted products
    again = eigsh(op, checkpoint=path, **kw)  # continues from the last saved restart
    for a, b in ((first, ref), (again, ref)):
        assert torch.equal(a.eigenvalues, b.eigenvalues) and torch.equal(a.eigenvectors, b.eigenvectors)
        assert a.num_matvecs == b.num_matvecs and a.status == "converged"
    assert 0 < sum(op.widths) < ref.num_matvecs // 2  # only the last cycle and the certificate were redone


def test_eigsh_refuses_a_checkpoint_of_another_operator(tmp_path):
    M, kw = _slow_problem()
    path = tmp_path / "e.ckpt"
    eigsh(DenseOperator(M), checkpoint=path, **kw)
    changed = M.clone()
    changed[3, 7] += 1e-3
    changed[7, 3] += 1e-3
    with pytest.raises(StaleStateError, match=r"what changed: matrix: '[0-9a-f]+' -> '[0-9a-f]+'"):
        eigsh(DenseOperator(changed), checkpoint=path, **kw)
    with pytest.raises(StaleStateError, match="dtype"), pytest.warns(UserWarning, match="below what"):
        eigsh(DenseOperator(M.float()), checkpoint=path, **{**kw, "work_dtype": DT})  # float32: another computation


def test_eigsh_refuses_a_checkpoint_without_a_fingerprint(tmp_path):
    M, kw = _slow_problem()
    path = tmp_path / "old.ckpt"
    eigsh(DenseOperator(M), checkpoint=path, **kw)
    from curvscope.io import load_tensors

    tensors, meta = load_tensors(path)  # rewrite it as an older curvscope did: no fingerprint
    gen = torch.Generator()
    gen.set_state(tensors.pop("_gen_state"))
    save_state(path, meta["config"], gen, tensors, meta["values"])
    with pytest.raises(StaleStateError, match="carries no fingerprint"):
        eigsh(DenseOperator(M), checkpoint=path, **kw)


# ------------------------------------------------------------------ precision and noise
class NoisyDense:
    """A dense operator whose every product carries random noise of relative size ``rel`` (and says so)."""

    def __init__(self, M: torch.Tensor, rel: float, seed: int = 0):
        self.M, self.noise_floor = M, rel
        self.shape, self.dtype, self.device = tuple(M.shape), M.dtype, M.device
        self.anorm = float(torch.linalg.matrix_norm(M, 2))
        self.g = torch.Generator().manual_seed(seed)

    def __matmul__(self, X):
        Y = self.M @ X
        E = torch.randn(Y.shape, generator=self.g, dtype=Y.dtype)
        return Y + E * (self.noise_floor * self.anorm * X.norm(dim=0) / E.norm(dim=0))


def test_default_tol_follows_a_measured_noise_floor():
    tm = make("spiked", 200, seed=0)
    A = NoisyDense(tm.A, 1e-5)
    res = eigsh(A, 3, progress=False)
    assert res.status == "converged", res.message
    assert res.tol == pytest.approx(NOISE_FACTOR * 1e-5) and "noise floor" in res.tol_reason
    torch.testing.assert_close(res.eigenvalues, tm.eigenvalues[-3:].flip(0), rtol=0, atol=1e-3)
    with pytest.warns(UserWarning, match=r"tol=1\.0e-12 is below what the products can resolve"):
        clamped = eigsh(A, 3, tol=1e-12, progress=False)
    assert clamped.tol == pytest.approx(NOISE_FACTOR * 1e-5) and clamped.status == "converged"
    assert clamped.num_matvecs < 200 and "raised" in clamped.tol_reason


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_operators_run_with_float64_krylov_arithmetic(dtype):
    tm = make("spiked", 100, seed=0)
    Mh = tm.A.to(dtype)
    exact = torch.linalg.eigvalsh(Mh.double())[-3:].flip(0)  # of the rounded matrix
    res = eigsh(DenseOperator(Mh), 3, progress=False)
    assert res.status == "converged" and res.eigenvectors.dtype == DT
    assert res.tol == pytest.approx(torch.finfo(dtype).eps ** 0.5)
    torch.testing.assert_close(res.eigenvalues, exact, rtol=0, atol=0.05 * float(exact[0]))
    pw = power_iteration(DenseOperator(Mh), 1, tol=1e-2)
    assert pw.eigenvectors.dtype == DT and abs(float(pw.eigenvalues[0]) - float(exact[0])) < 0.1


def test_auto_work_dtype_falls_back_with_a_warning_when_float64_cannot_fit(monkeypatch):
    tm = make("spiked", 200, seed=0)
    f32_basis = memory.vectors_bytes(200, 12, torch.float32)
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": int(1.5 * f32_basis))
    with pytest.warns(UserWarning, match="float64 basis .* does not fit.*certification is limited"):
        res = eigsh(DenseOperator(tm.A.float()), 3, ncv=11, progress=False)
    assert res.eigenvectors.dtype == torch.float32 and res.status == "converged"
    res = eigsh(DenseOperator(tm.A.float()), 3, ncv=11, storage="disk", progress=False)  # disk keeps float64
    assert res.eigenvectors.dtype == DT


def test_a_float32_hessian_gets_its_tolerance_from_its_measured_noise():
    from curvscope.operators import Hessian
    from curvscope.operators.dense import dense_hessian
    from tiny_models import make_case

    case = make_case("mlp_tanh")
    exact = torch.linalg.eigvalsh(dense_hessian(case.model, case.loss_fn, case.full)).flip(0)[:3]
    batches = [tuple(t.float() if t.is_floating_point() else t for t in b) for b in case.batches]
    H = Hessian(case.model.float(), case.loss_fn, batches)
    res = eigsh(H, 3, progress=False)
    assert res.status == "converged" and res.tol == pytest.approx(NOISE_FACTOR * H.noise_floor)
    assert res.tol < torch.finfo(torch.float32).eps ** 0.5  # tighter than the unmeasured float32 default
    torch.testing.assert_close(res.eigenvalues, exact, rtol=1e-5, atol=0)


def test_lanczos_draws_no_bar_of_its_own_under_a_callers_callback(capsys):
    A = DenseOperator(make("spiked", 50, seed=0).A)
    steps = []
    lanczos(A, 10, callback=lambda step, mv: steps.append(mv))  # progress=None: the caller reports
    assert steps == list(range(1, 11)) and capsys.readouterr().err == ""
