"""Sharded linear algebra in one process: a 1-rank gloo group and a permuted ``ShardedSpace``.

The multi-rank FSDP tests (``test_fsdp.py``) use small, full-rank, float64 problems; these cover
what they cannot: dependent and zero columns in the sharded QR, a large ``‖A‖`` in float32, and the
rows of the test matrices at an arbitrary index set.
"""

import pytest
import torch
import torch.distributed as dist

from curvscope import sketched_eigh, trace
from curvscope.linalg.sketch_recovery import TestMatrix
from curvscope.linalg.space import ShardedSpace
from curvscope.operators import DenseOperator

D = 300


@pytest.fixture
def group():
    if dist.is_initialized():  # another test left one: reuse it
        yield None
        return
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield None
    dist.destroy_process_group()


def _perm():
    return torch.randperm(D, generator=torch.Generator().manual_seed(3))


class _Sharded:
    """``M`` seen through a permuted sharded space (this rank holds every row, in another order)."""

    def __init__(self, M, perm):
        self.M, self.perm, self.space = M, perm, ShardedSpace(D, perm)
        self.shape, self.dtype, self.device = M.shape, M.dtype, M.device

    def __matmul__(self, X):
        full = torch.zeros(D, X.shape[1], dtype=X.dtype).index_copy_(0, self.perm, X)
        return (self.M @ full)[self.perm]


def _matrix(lam, dtype=torch.float64):
    Q = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    return (Q @ torch.diag(lam.double()) @ Q.T).to(dtype)


def test_sharded_qr_of_dependent_and_zero_columns(group):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(D, 6, generator=g, dtype=torch.float64)
    X[:, 2] = X[:, 0] - 2 * X[:, 1]  # dependent
    X[:, 4] = 0.0  # zero
    Q, R = ShardedSpace(D, _perm()).qr(X)
    assert torch.allclose(Q @ R, X, atol=1e-13) and torch.equal(R, R.triu())
    zero = R.diagonal() == 0
    assert zero.tolist() == [False, False, True, False, True, False]
    assert bool((Q[:, zero] == 0).all())
    good = Q[:, ~zero]
    assert torch.allclose(good.T @ good, torch.eye(4, dtype=torch.float64), atol=1e-14)


def test_test_matrix_rows_at_an_index_equal_the_full_matrix_rows():
    perm = _perm()[:123]
    full = TestMatrix("gaussian", D, 11, seed=5, stream="omega", dtype=torch.float64, block_size=4)
    part = TestMatrix("gaussian", D, 11, seed=5, stream="omega", dtype=torch.float64, block_size=4, index=perm)
    for j in range(len(full)):
        assert torch.equal(part.block(j), full.block(j)[perm])


@pytest.mark.parametrize("dtype,scale", [(torch.float64, 1.0), (torch.float32, 1e6)])
def test_sharded_block_krylov_equals_whole_vectors_at_any_scale(group, dtype, scale):
    """The drop rule is relative: a large ‖A‖ (float32, 1e6) must not erase the basis."""
    lam = scale * torch.cat([torch.tensor([10.0, -6, 4, 3]), torch.linspace(-0.5, 1, D - 4)])
    M = _matrix(lam, dtype)
    ref = sketched_eigh(DenseOperator(M), 4, num_matvecs=40, block_size=4, seed=0, work_dtype=dtype)
    got = sketched_eigh(_Sharded(M, _perm()), 4, num_matvecs=40, block_size=4, seed=0, work_dtype=dtype)
    tol = (1e-12 if dtype == torch.float64 else 1e-4) * scale * 10
    assert (got.eigenvalues - ref.eigenvalues).abs().max() <= tol, (got.eigenvalues, ref.eigenvalues)
    assert got.residuals.max() <= 100 * ref.residuals.max() + tol


def test_sharded_low_rank_sketches_and_traces_equal_whole_vectors(group):
    """Rank 10 with 40 Krylov vectors: restarts with random directions; XTrace exact; Hutch++ runs."""
    lam = torch.zeros(D)
    lam[:10] = torch.linspace(1, 10, 10)
    M = _matrix(lam)
    A, S = DenseOperator(M), _Sharded(M, _perm())
    ref = sketched_eigh(A, 6, num_matvecs=40, block_size=4, seed=0)
    got = sketched_eigh(S, 6, num_matvecs=40, block_size=4, seed=0)
    assert (got.eigenvalues - ref.eigenvalues).abs().max() <= 1e-12
    xt, xs = trace(A, "xtrace", 30, seed=0), trace(S, "xtrace", 30, seed=0)
    assert xt.status == xs.status and abs(xs.estimate - 55.0) <= 1e-9
    hp = trace(S, "hutch++", 9, seed=0)  # a rank-deficient sketch: Gram–Schmidt, not a Cholesky that fails
    assert abs(hp.estimate - trace(A, "hutch++", 9, seed=0).estimate) <= 1e-9


def test_sharded_overlap_of_a_dependent_basis_equals_the_whole_vector_one(group):
    """Dependent columns are dropped, as orthonormal_basis drops small singular directions."""
    from curvscope.metrics import subspace_overlap

    g = torch.Generator().manual_seed(2)
    A, B = torch.randn(D, 4, generator=g, dtype=torch.float64), torch.randn(D, 3, generator=g, dtype=torch.float64)
    A[:, 3] = A[:, 0] + A[:, 1]  # spans 3 dimensions
    perm = _perm()
    got = subspace_overlap(A[perm], B[perm], space=ShardedSpace(D, perm))
    want = subspace_overlap(A, B)
    assert got.k1 == want.k1 == 3 and abs(got.value - want.value) <= 1e-12
