"""Out-of-core blocks: atomic store, streamed orthonormalisation, out-of-core == in-core, SIGKILL + resume, merge."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from curvscope.linalg import blockstore as bs
from curvscope.linalg import streamed
from curvscope.linalg.sketch import sketch_measurements, sketched_eigh
from curvscope.operators import DenseOperator
from spectra import random_orthogonal

DT = torch.float64
HERE = Path(__file__).resolve().parent


def _matrix(D: int, seed: int = 0) -> torch.Tensor:
    i = torch.arange(1, D + 1, dtype=DT)
    lam = 5 * i**-0.8 * torch.where(i % 5 == 3, -1.0, 1.0)
    Q = random_orthogonal(D, seed)
    A = (Q * lam) @ Q.T
    return (A + A.T) / 2


class Counting(DenseOperator):
    """A dense operator that counts its product columns (and can be slowed down).

    The counter and the delay are private: bookkeeping, not part of what the operator measures (its fingerprint).
    """

    def __init__(self, M: torch.Tensor, delay: float = 0.0) -> None:
        super().__init__(M)
        self._columns, self._delay = 0, delay

    @property
    def columns(self) -> int:
        return self._columns

    def _matmat(self, X):
        self._columns += X.shape[1]
        time.sleep(self._delay)
        return super()._matmat(X)


# (method, kwargs): n = 60 products, blocks of 6 -> 10 measurement blocks / Krylov steps
RESUMABLE = [("core", {}), ("block_krylov", {}), ("nystrom", {}), ("subspace", {"power_iters": 1})]
RUN = {"num_matvecs": 60, "block_size": 6, "seed": 2, "error_probes": 10}


def _worker(store: str, method: str) -> None:  # run by the subprocess of test_sigkill_then_resume
    kw = dict(RESUMABLE)[method]
    sketched_eigh(Counting(_matrix(200), delay=0.25), 8, method=method, store=store, **RUN, **kw)


# --------------------------------------------------------------------------------- the store
def test_store_roundtrip_rows_and_names(tmp_path):
    store = bs.BlockStore(tmp_path, dim=5, dtype=DT, spec={"seed": 1, "method": "core"})
    X = torch.arange(15, dtype=DT).reshape(5, 3)
    store.save("y_00001", X)
    store.save("k_00000", {"data": X, "c": torch.ones(2, 2)})
    (tmp_path / "blocks" / ".y_00002.safetensors.123.tmp").write_bytes(b"half a block")
    assert store.names() == ["k_00000", "y_00001"] and store.names("y") == ["y_00001"]
    assert torch.equal(store.load("y_00001"), X) and torch.equal(store.rows("y_00001", 1, 3), X[1:3])
    assert torch.equal(store.load_all("k_00000")["c"], torch.ones(2, 2))
    assert bs.BlockStore.open(tmp_path).manifest == store.manifest


@pytest.mark.parametrize("change", [{"dim": 6}, {"dtype": torch.float32}, {"spec": {"seed": 2, "method": "core"}}])
def test_store_refuses_another_computation(tmp_path, change):
    bs.BlockStore(tmp_path, dim=5, dtype=DT, spec={"seed": 1, "method": "core"})
    kw = {"dim": 5, "dtype": DT, "spec": {"seed": 1, "method": "core"}, **change}
    with pytest.raises(ValueError, match="another computation"):
        bs.BlockStore(tmp_path, **kw)


def test_store_rejects_wrong_block_shape(tmp_path):
    store = bs.BlockStore(tmp_path, dim=5, dtype=DT)
    with pytest.raises(ValueError, match=r"expected data \[5, b\]"):
        store.save("y_00000", torch.zeros(4, 2, dtype=DT))


# ------------------------------------------------------------------------- streamed algebra
@pytest.fixture(params=["ram", "disk"])
def blocks(request, tmp_path):
    g = torch.Generator().manual_seed(0)
    Y = torch.randn(300, 24, dtype=DT, generator=g) @ torch.diag(10.0 ** (-torch.arange(24.0, dtype=DT) / 6))
    Y[:, 20] = Y[:, 3] - 2 * Y[:, 7]  # an exactly dependent column
    store = bs.BlockStore(tmp_path, 300, DT) if request.param == "disk" else None
    cb = bs.ColumnBlocks(300, DT, store)
    for j, part in enumerate(Y.split(7, dim=1)):
        if store is None:
            cb.append(part)
        else:
            store.save(f"y_{j:05d}", part.contiguous())
            cb.append(f"y_{j:05d}", part.shape[1])
    return Y, cb


@pytest.mark.parametrize("budget", [None, 20_000])
def test_orthonormalize_streamed(blocks, budget):
    Y, cb = blocks
    assert torch.equal(cb.rows(0, 300), Y) and torch.allclose(
        streamed.gram(cb, budget), Y.T @ Y, rtol=1e-12, atol=1e-12
    )
    M = streamed.orthonormalize(cb, memory_budget=budget)
    assert M.shape[1] == 23  # the dependent column is dropped
    Q = streamed.apply_right(cb, M, memory_budget=budget)
    assert torch.allclose(Q.T @ Q, torch.eye(23, dtype=DT), atol=1e-12)
    assert torch.allclose(Q @ (Q.T @ Y), Y, atol=1e-10 * Y.norm())  # same range


def test_apply_right_to_disk_and_to_blocks(blocks, tmp_path):
    Y, cb = blocks
    M = torch.randn(24, 9, dtype=DT, generator=torch.Generator().manual_seed(1))
    V = streamed.apply_right(cb, M, out=tmp_path / "v.safetensors", memory_budget=30_000)
    assert isinstance(V, bs.DiskMatrix) and V.shape == (300, 9)
    assert torch.allclose(V.load(), Y @ M, atol=1e-12)
    X = torch.randn(9, 2, dtype=DT)
    assert torch.allclose(V.matmul(X, 10_000), Y @ M @ X) and torch.allclose(V.rmatmul(Y, 10_000), (Y @ M).T @ Y)
    streamed.apply_right(cb, M, out=[(tmp_path / "a.safetensors", 4), (tmp_path / "b.safetensors", 5)])
    parts = [bs.DiskMatrix(tmp_path / f).load() for f in ("a.safetensors", "b.safetensors")]
    assert torch.allclose(torch.cat(parts, 1), Y @ M, atol=1e-12)


def test_budget_too_small_raises_before_work(blocks):
    _, cb = blocks
    with pytest.raises(MemoryError, match="too small"):
        streamed.orthonormalize(cb, memory_budget=1000)


# ----------------------------------------------------------------- out of core == in core
@pytest.mark.parametrize("method,kw", [*RESUMABLE, ("subspace", {"power_iters": 2})])
def test_out_of_core_equals_in_core(tmp_path, method, kw):
    A = DenseOperator(_matrix(1000))
    b = 1 if method == "block_krylov" else 3  # Krylov holds ~8 blocks at once
    args = {"method": method, "num_matvecs": 48, "block_size": b, "error_probes": 8, **kw}
    ram = sketched_eigh(A, 8, **args)
    disk = sketched_eigh(A, 8, store=tmp_path / "s", memory_budget=120_000, **args)  # V (64 kB) goes to disk
    assert isinstance(disk.eigenvectors, bs.DiskMatrix)
    assert torch.allclose(disk.eigenvalues, ram.eigenvalues, rtol=1e-10, atol=1e-12)
    Vd, Vr = disk.eigenvectors.load(), ram.eigenvectors
    Vd = Vd * torch.sign((Vd * Vr).sum(0))
    assert torch.allclose(Vd, Vr, atol=1e-8)
    assert disk.matvecs == ram.matvecs
    assert abs(disk.error_fro - ram.error_fro) <= 1e-8 * ram.norm_fro


# ------------------------------------------------------------------- SIGKILL, resume, merge
@pytest.mark.parametrize("method", [m for m, _ in RESUMABLE])
def test_sigkill_then_resume(tmp_path, method):
    kw = dict(RESUMABLE)[method]
    store = tmp_path / "store"
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_blockstore as t; "
    code += f"t._worker({str(store)!r}, {method!r})"
    # the same intra-op threads as this process: bitwise equality needs the same matmul reductions
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    prefix = "k" if method == "block_krylov" else ("w0" if method == "subspace" else "y0")
    while time.time() < deadline and proc.poll() is None:
        if (store / "blocks").exists() and len(list((store / "blocks").glob(f"{prefix}_*.safetensors"))) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the worker ended early: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = bs.BlockStore.open(store).names()
    before = {n: bs.BlockStore.open(store).mtime_ns(n) for n in done}
    finished_products = 6 * (len([n for n in done if n[0] in "ykw"]) - (prefix == "k"))
    assert 0 < finished_products < 60

    A = Counting(_matrix(200))
    resumed = sketched_eigh(A, 8, method=method, store=store, **RUN, **kw)
    assert resumed.matvecs["sketch"] == 60 - finished_products  # no finished block recomputed
    assert all(bs.BlockStore.open(store).mtime_ns(n) == t for n, t in before.items())
    clean = sketched_eigh(Counting(_matrix(200)), 8, method=method, store=tmp_path / "clean", **RUN, **kw)
    assert torch.equal(resumed.eigenvalues, clean.eigenvalues)
    assert torch.equal(resumed.eigenvectors, clean.eigenvectors)
    ram = sketched_eigh(Counting(_matrix(200)), 8, method=method, **RUN, **kw)
    assert torch.allclose(resumed.eigenvalues, ram.eigenvalues, rtol=1e-10)
    again = sketched_eigh(Counting(_matrix(200)), 8, method=method, store=store, **RUN, **kw)
    assert again.matvecs["sketch"] == 0


def test_processes_compute_block_ranges_then_merge(tmp_path):
    A = _matrix(200)
    args = {"method": "core", "num_matvecs": 60, "block_size": 6}
    assert sketch_measurements(Counting(A), 8, store=tmp_path / "p0", blocks=range(0, 4), **args) == 24
    assert sketch_measurements(Counting(A), 8, store=tmp_path / "p1", blocks=range(4, 10), **args) == 36
    merged = bs.BlockStore.open(tmp_path / "p0")
    assert len(merged.merge(tmp_path / "p1")) == 6
    res = sketched_eigh(Counting(A), 8, store=tmp_path / "p0", **args)
    assert res.matvecs["sketch"] == 0
    assert torch.allclose(res.eigenvalues, sketched_eigh(DenseOperator(A), 8, **args).eigenvalues, rtol=1e-12)
    with pytest.raises(ValueError, match="depend on each other"):
        sketch_measurements(DenseOperator(A), 8, store=tmp_path / "x", method="block_krylov")
    other = bs.BlockStore(tmp_path / "other", 200, DT, {"seed": 9})
    with pytest.raises(ValueError, match="different computations"):
        merged.merge(other)


def test_krylov_store_extends_a_finished_run(tmp_path):
    A = _matrix(200)
    first = Counting(A)
    sketched_eigh(first, 4, num_matvecs=24, block_size=6, store=tmp_path, error_probes=0)
    more = Counting(A)
    res = sketched_eigh(more, 4, num_matvecs=48, block_size=6, store=tmp_path, error_probes=0)
    assert first.columns == 24 and more.columns == 24
    assert torch.allclose(res.eigenvalues, sketched_eigh(DenseOperator(A), 4, num_matvecs=48, block_size=6).eigenvalues)
