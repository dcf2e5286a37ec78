"""trace/diagonal: the keyword convention (block_size, checkpoint, work_dtype, progress), fingerprints, precision."""

from __future__ import annotations

import pytest
import torch

from curvscope.common import Status
from curvscope.linalg.trace import diagonal, trace
from curvscope.operators import DenseOperator
from curvscope.operators.fingerprint import StaleStateError
from spectra import MatmulOnly, make

DT = torch.float64


class Failing(MatmulOnly):
    """Raises after ``budget`` block products (a killed run); ``None``: never."""

    def __init__(self, M, budget=None):
        super().__init__(M)
        self.budget = budget

    def __matmul__(self, X):
        if self.budget is not None and self.calls >= self.budget:
            raise RuntimeError("killed")
        return super().__matmul__(X)


@pytest.mark.parametrize("method", ["hutchinson", "hutch++", "xtrace"])
def test_block_size_applies_to_every_product(method):
    tm = make("negative", 120, seed=0)
    whole = trace(DenseOperator(tm.A), method, 30, seed=2)
    widths = []

    class Recording(MatmulOnly):
        def __matmul__(self, X):
            widths.append(1 if X.ndim == 1 else X.shape[1])
            return super().__matmul__(X)

    blocked = trace(Recording(tm.A), method, 30, seed=2, block_size=4)
    assert blocked.estimate == pytest.approx(whole.estimate, rel=1e-10, abs=1e-10)
    assert widths and max(widths) <= 4 and sum(widths) >= 30  # every product in blocks of at most 4 columns


@pytest.mark.parametrize(("fn", "method"), [(trace, "hutchinson"), (trace, "hutch++"), (trace, "xtrace"),
                                            (diagonal, "hutchinson"), (diagonal, "xdiag")])  # fmt: skip
def test_checkpoint_resumes_a_killed_run(tmp_path, fn, method):
    tm = make("bulk_outliers", 100, seed=0)
    ckpt = tmp_path / "t.ckpt"
    whole = fn(DenseOperator(tm.A), method, 24, seed=torch.Generator().manual_seed(5), block_size=4)
    with pytest.raises(RuntimeError, match="killed"):
        fn(Failing(tm.A, 3), method, 24, seed=torch.Generator().manual_seed(5), block_size=4, checkpoint=ckpt)
    op = Failing(tm.A)
    resumed = fn(op, method, 24, seed=torch.Generator().manual_seed(5), block_size=4, checkpoint=ckpt)
    assert op.calls == 6 - 3  # the three finished blocks were not recomputed
    assert torch.equal(torch.as_tensor(resumed.estimate), torch.as_tensor(whole.estimate))
    assert resumed.status == whole.status


def test_checkpoint_of_another_operator_is_refused(tmp_path):
    tm = make("negative", 80, seed=0)
    ckpt = tmp_path / "t.ckpt"
    trace(DenseOperator(tm.A), "xtrace", 20, seed=0, checkpoint=ckpt)
    again = trace(DenseOperator(tm.A), "xtrace", 20, seed=0, checkpoint=ckpt)  # same operator: resumes
    assert again.num_matvecs == 20
    with pytest.raises(StaleStateError, match="matrix"):
        trace(DenseOperator(tm.A + 1e-3 * torch.eye(80, dtype=DT)), "xtrace", 20, seed=0, checkpoint=ckpt)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_operators(dtype):
    tm = make("bulk_outliers", 100, seed=0)
    A = DenseOperator(tm.A.to(dtype))
    exact = float(torch.trace(A.matrix.double()))
    for method in ("hutchinson", "hutch++", "xtrace"):
        r = trace(A, method, 60, seed=0)
        assert r.status in (Status.COMPLETED, Status.EXACT) and r.samples.dtype == DT
        assert abs(r.estimate - exact) <= 5 * r.stderr + 1e-2 * abs(exact), method
    d = diagonal(A, "xdiag", 40, seed=0)
    assert torch.isfinite(d.estimate).all()


def test_keywords_are_checked():
    A = DenseOperator(torch.eye(10, dtype=DT))
    with pytest.raises(ValueError, match="block_size"):
        trace(A, "hutchinson", 10, block_size=0)
    with pytest.raises(ValueError, match="work_dtype"):
        trace(A, "hutchinson", 10, work_dtype="double")
    r = trace(A, "hutchinson", 4, progress=False, seed=torch.Generator().manual_seed(0))
    assert r.estimate == 10.0 and r.status is Status.COMPLETED
