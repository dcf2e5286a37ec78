"""Lanczos and basis storage: the Lanczos relation, orthonormality, breakdown, block runs, storage media."""

from __future__ import annotations

import os

import pytest
import torch

from curvscope.linalg.lanczos import LanczosResult, lanczos
from curvscope.linalg.storage import DeviceStorage, DiskStorage, HostStorage, make_storage
from curvscope.operators import DenseOperator
from spectra import MatmulOnly, make

DT = torch.float64
TOL = 1e-12

# (spectrum, storage, steps): every spectrum once, every storage medium at least twice
RELATION_CASES = [
    ("spiked", "device", 60),
    ("bulk_outliers", "host", 80),
    ("clustered", "disk", 60),
    ("repeated", "device", 100),
    ("negative", "disk", 80),
    ("rank_deficient", "host", 90),  # breaks down at the Krylov dimension
]


def relation_error(A: torch.Tensor, res: LanczosResult, run: int = 0) -> tuple[float, float]:
    Q, T = res.basis_matrix(run), res.tridiagonal(run)
    m = Q.shape[1]
    e_m = torch.zeros(m, dtype=DT)
    e_m[-1] = 1
    R = A @ Q - Q @ T - torch.outer(res.residual(run), e_m)
    scale = torch.linalg.matrix_norm(A, 2)
    return float(R.abs().max() / scale), float((Q.T @ Q - torch.eye(m, dtype=DT)).abs().max())


@pytest.mark.parametrize(("name", "storage", "steps"), RELATION_CASES)
def test_relation_and_orthonormality(name, storage, steps):
    tm = make(name, 200, seed=1)
    res = lanczos(MatmulOnly(tm.A), steps, seed=3, storage=storage)
    rel, orth = relation_error(tm.A, res)
    assert rel <= TOL and orth <= TOL
    m = int(res.lengths[0])
    assert res.num_matvecs == m
    # the new direction is orthogonal to the basis and Ritz values interlace the spectrum
    assert float((res.basis_matrix().T @ res.residual()).abs().max()) <= TOL * tm.norm
    theta = res.ritz()[0]
    assert theta.min() >= tm.eigenvalues[0] - TOL * tm.norm and theta.max() <= tm.eigenvalues[-1] + TOL * tm.norm


def test_invariant_subspace_stops_with_exact_ritz_values():
    # 4 distinct eigenvalues: the Krylov space of any start vector has dimension 4
    lam = torch.tensor([-2.0, 1.0, 3.0, 7.0], dtype=DT).repeat_interleave(25)
    Q = torch.linalg.qr(torch.randn(100, 100, dtype=DT, generator=torch.Generator().manual_seed(0))).Q
    A = (Q * lam) @ Q.T
    res = lanczos(DenseOperator(A), 30, seed=0)
    assert res.status == "invariant_subspace" and int(res.lengths[0]) == 4
    assert torch.allclose(res.ritz()[0], torch.tensor([-2.0, 1.0, 3.0, 7.0], dtype=DT), atol=1e-12, rtol=0)
    assert float(res.residual_norm[0]) <= 1e-12 * 7
    # restart mode continues with fresh directions, T block diagonal, relation intact
    res2 = lanczos(DenseOperator(A), 30, seed=0, breakdown="restart")
    assert res2.status == "completed" and int(res2.lengths[0]) == 30
    assert float(res2.beta[3]) == 0.0
    rel, orth = relation_error(A, res2)
    assert rel <= TOL and orth <= TOL


def test_block_runs_match_single_runs_with_one_product_per_step():
    tm = make("negative", 150, seed=2)
    V = torch.randn(150, 4, dtype=DT, generator=torch.Generator().manual_seed(5))
    op = MatmulOnly(tm.A)
    block = lanczos(op, 40, V)
    assert op.calls == 40 and block.num_matvecs == 160  # one [D, 4] product per step
    assert block.alpha.shape == (4, 40)
    for b in range(4):
        single = lanczos(MatmulOnly(tm.A), 40, V[:, b])
        assert torch.allclose(block.alpha[b], single.alpha, atol=1e-12, rtol=0)
        assert torch.allclose(block.beta[b], single.beta, atol=1e-12, rtol=0)
        rel, orth = relation_error(tm.A, block, b)
        assert rel <= TOL and orth <= TOL


def test_block_run_with_one_early_breakdown():
    # run 0 starts inside a 3-dimensional invariant subspace, run 1 does not
    tm = make("spiked", 120, seed=0)
    V = torch.randn(120, 2, dtype=DT, generator=torch.Generator().manual_seed(1))
    V[:, 0] = tm.eigenvectors[:, -3:] @ torch.tensor([1.0, 2.0, 3.0], dtype=DT)
    res = lanczos(DenseOperator(tm.A), 20, V)
    assert res.lengths.tolist() == [3, 20] and res.status == "invariant_subspace"
    assert res.num_matvecs == 3 + 20
    assert torch.allclose(res.ritz(0)[0], tm.eigenvalues[-3:], atol=1e-12, rtol=0)
    for b in range(2):
        rel, orth = relation_error(tm.A, res, b)
        assert rel <= TOL and orth <= TOL


def test_steps_clamped_to_dimension_and_exact():
    tm = make("clustered", 30, seed=0)
    with pytest.warns(UserWarning, match="clamped"):
        res = lanczos(DenseOperator(tm.A), 50, seed=0)
    assert int(res.lengths[0]) == 30
    assert torch.allclose(res.ritz()[0], tm.eigenvalues, atol=1e-12, rtol=0)


class InterruptAfter(MatmulOnly):
    def __init__(self, M, n):
        super().__init__(M)
        self.n = n

    def __matmul__(self, X):
        if self.calls >= self.n:
            raise KeyboardInterrupt
        return super().__matmul__(X)


def test_interrupt_returns_completed_steps():
    tm = make("spiked", 100, seed=0)
    res = lanczos(InterruptAfter(tm.A, 12), 40, seed=0)
    assert res.status == "interrupted" and int(res.lengths[0]) == 12 and res.alpha.shape == (12,)
    rel, orth = relation_error(tm.A, res)
    assert rel <= TOL and orth <= TOL


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        ([[1.0, 0.0], [0.0, 1.0]], TypeError, "not an operator"),
        (torch.zeros(3, 2, dtype=DT), ValueError, "square"),
        (DenseOperator(torch.eye(3, dtype=DT)), ValueError, "zero"),
    ],
)
def test_errors_say_what_to_do(bad, error, match):
    with pytest.raises(error, match=match):
        lanczos(bad, 3, v0=torch.zeros(3, dtype=DT))


def test_save_load_roundtrip(tmp_path):
    tm = make("negative", 60, seed=0)
    res = lanczos(DenseOperator(tm.A), 10, torch.randn(60, 2, dtype=DT))
    res.save(tmp_path / "l.safetensors", include_basis=True)
    back = LanczosResult.load(tmp_path / "l.safetensors")
    assert torch.equal(back.alpha, res.alpha) and torch.equal(back.beta, res.beta)
    assert back.status == res.status and back.num_matvecs == res.num_matvecs
    assert torch.equal(back.basis_matrix(1), res.basis_matrix(1))


# ------------------------------------------------------------------ storage media
STORAGES = ["device", "host", "disk"]


@pytest.mark.parametrize("kind", STORAGES)
@pytest.mark.parametrize("batch", [1, 3])
def test_storage_operations_agree_with_dense(kind, batch):
    g = torch.Generator().manual_seed(0)
    D, n = 37, 6
    s = make_storage(kind, D, n + 1, batch, DT, "cpu")
    if isinstance(s, (HostStorage, DiskStorage)):
        s.working_bytes = 3 * (batch + 1) * (n + 1) * 8  # force many coordinate chunks
    vecs = torch.randn(n, D, batch, dtype=DT, generator=g)
    for j in range(n):
        s.append(vecs[j] if batch > 1 else vecs[j, :, 0])
    assert s.nbytes == batch * (n + 1) * D * 8
    X = torch.randn(D, batch if batch > 1 else 4, dtype=DT, generator=g)
    if batch == 1:
        Q = vecs[:, :, 0].T  # [D, n]
        assert torch.allclose(s.project(X), Q.T @ X, atol=1e-12)
        C = torch.randn(n, 4, dtype=DT, generator=g)
        assert torch.allclose(s.combine(C), Q @ C, atol=1e-12)
        Y = torch.randn(n, 4, dtype=DT, generator=g)
        s.rotate(Y)
        s.truncate(4)
        assert torch.allclose(s.matrix(), Q @ Y, atol=1e-12)
    else:
        proj = s.project(X)
        for b in range(batch):
            assert torch.allclose(proj[:, b], vecs[:, :, b] @ X[:, b], atol=1e-12)
        C = torch.randn(n, batch, dtype=DT, generator=g)
        comb = s.combine(C)
        for b in range(batch):
            assert torch.allclose(comb[:, b], vecs[:, :, b].T @ C[:, b], atol=1e-12)
    path = getattr(s, "path", None)
    s.close()
    if path is not None:
        assert not os.path.exists(path)


def test_storage_refuses_overflow_and_unknown_names():
    s = DeviceStorage(4, 1, 1, DT, "cpu")
    s.append(torch.ones(4, dtype=DT))
    with pytest.raises(MemoryError, match="larger capacity"):
        s.append(torch.ones(4, dtype=DT))
    with pytest.raises(ValueError, match="valid names"):
        make_storage("gpu-ish", 4, 1, 1, DT, "cpu")


def test_operators_without_a_space_work_on_whole_vectors():
    from curvscope.linalg.precision import Promoted
    from curvscope.linalg.space import LocalSpace, space_of

    A = DenseOperator(torch.eye(3, dtype=torch.float64))
    s = space_of(A)
    assert isinstance(s, LocalSpace) and not s.sharded and s.dim == s.local_dim == 3
    X = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s.inner(X, X), X.T @ X) and torch.equal(s.colnorms(X), X.norm(dim=0))
    assert Promoted(torch.eye(2), torch.float64).space is None  # forwarded: a sharded operator stays sharded


@pytest.mark.parametrize("algorithm", ["sketch_store", "power_ckpt", "xtrace_ckpt", "eigsh_checkpoint", "slq_ckpt"])
def test_algorithms_needing_whole_vectors_refuse_a_sharded_operator(tmp_path, algorithm):
    from curvscope import eigsh, sketched_eigh, spectral_density, trace
    from curvscope.linalg.power import power_iteration
    from curvscope.linalg.space import LocalSpace

    class Sharded(LocalSpace):  # what a sharded operator announces (reductions are identities here)
        sharded = True

    A = DenseOperator(torch.diag(torch.arange(1.0, 9.0, dtype=torch.float64)))
    A.space = Sharded(8)
    calls = {
        "sketch_store": lambda: sketched_eigh(A, k=2, store=tmp_path / "s"),  # runs sharded in RAM, not stored
        "power_ckpt": lambda: power_iteration(A, k=1, checkpoint=tmp_path / "p"),  # runs sharded, not checkpointed
        "xtrace_ckpt": lambda: trace(A, "xtrace", 8, checkpoint=tmp_path / "t"),  # runs sharded, not checkpointed
        "eigsh_checkpoint": lambda: eigsh(A, k=1, checkpoint=tmp_path / "c"),
        "slq_ckpt": lambda: spectral_density(A, "slq", num_probes=2, num_steps=4, checkpoint=tmp_path / "d"),
    }
    with pytest.raises(ValueError, match="shard"):
        calls[algorithm]()
