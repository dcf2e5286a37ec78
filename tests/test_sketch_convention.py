"""sketched_eigh: keyword convention (seed generator, checkpoint, work_dtype), block store fingerprints, precision."""

from __future__ import annotations

import pytest
import torch

from curvscope.common import Status
from curvscope.linalg import blockstore as bs
from curvscope.linalg.sketch import SketchResult, sketch_measurements, sketched_eigh
from curvscope.operators import DenseOperator
from curvscope.operators.fingerprint import StaleStateError
from spectra import random_orthogonal

DT = torch.float64


def matrix(D: int = 120, seed: int = 0) -> torch.Tensor:
    lam = torch.cat([torch.tensor([10.0, -6.0, 4.0, 3.0, 2.0]), 0.01 * torch.linspace(-1, 1, D - 5)]).to(DT)
    Q = random_orthogonal(D, seed)
    return (Q * lam) @ Q.T


@pytest.mark.parametrize("method", ["block_krylov", "core"])
def test_store_of_another_operator_is_refused(tmp_path, method):
    A = matrix()
    args = {"method": method, "num_matvecs": 40, "block_size": 8, "seed": 1, "error_probes": 4}
    first = sketched_eigh(DenseOperator(A), 4, store=tmp_path, **args)
    again = sketched_eigh(DenseOperator(A), 4, store=tmp_path, **args)  # same operator: resumes
    assert again.matvecs["sketch"] == 0 and torch.equal(again.eigenvalues, first.eigenvalues)
    with pytest.raises(StaleStateError, match="matrix"):
        sketched_eigh(DenseOperator(A + 1e-3 * torch.eye(120, dtype=DT)), 4, store=tmp_path, **args)
    if method == "core":
        args.pop("error_probes")
        with pytest.raises(StaleStateError, match="matrix"):
            sketch_measurements(DenseOperator(2 * A), 4, store=tmp_path, **args)


def test_store_without_fingerprint_is_refused(tmp_path):
    A = matrix()
    args = {"method": "core", "num_matvecs": 40, "block_size": 8, "seed": 1, "error_probes": 0}
    res = sketched_eigh(DenseOperator(A), 4, store=tmp_path, **args)
    manifest = bs.read_json(tmp_path / "manifest.json")
    assert "fingerprint" in manifest and res.status == Status.COMPLETED
    del manifest["fingerprint"]
    bs.atomic_write_json(tmp_path / "manifest.json", manifest)
    with pytest.raises(StaleStateError, match="no fingerprint"):
        sketched_eigh(DenseOperator(A), 4, store=tmp_path, **args)


def test_checkpoint_is_the_store():
    A = DenseOperator(matrix())
    with pytest.raises(ValueError, match="two places"):
        sketched_eigh(A, 4, store="a", checkpoint="b")


def test_checkpoint_keyword_resumes(tmp_path):
    A = matrix()
    args = {"num_matvecs": 40, "block_size": 8, "seed": 1, "error_probes": 0}
    sketched_eigh(DenseOperator(A), 4, checkpoint=tmp_path, **args)
    again = sketched_eigh(DenseOperator(A), 4, store=tmp_path, **args)
    assert again.matvecs["sketch"] == 0


def test_seed_generator():
    A = DenseOperator(matrix())
    a = sketched_eigh(A, 4, num_matvecs=40, seed=torch.Generator().manual_seed(3))
    b = sketched_eigh(A, 4, num_matvecs=40, seed=torch.Generator().manual_seed(3))
    assert torch.equal(a.eigenvalues, b.eigenvalues) and a.config["seed"] == b.config["seed"]
    with pytest.raises(TypeError, match="seed"):
        sketched_eigh(A, 4, num_matvecs=40, seed="3")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ["block_krylov", "core", "subspace"])
def test_low_precision_operators_end_to_end(dtype, method):
    M = matrix().to(dtype)
    exact = torch.linalg.eigvalsh(M.double())
    top = exact[exact.abs().argsort(descending=True)][:3]
    res = sketched_eigh(DenseOperator(M), 3, method=method, num_matvecs=48, block_size=8)
    assert res.status == Status.COMPLETED and res.config["work_dtype"] == "torch.float64"
    assert res.eigenvectors.dtype == DT
    rel = 10 * torch.finfo(dtype).eps ** 0.5 if method == "core" else 10 * torch.finfo(dtype).eps
    assert torch.allclose(res.eigenvalues, top, atol=rel * 10, rtol=0), (res.eigenvalues, top)


def test_nystrom_on_a_float32_psd_operator_is_not_called_indefinite():
    lam = torch.cat([torch.tensor([5.0, 3.0, 1.0]), torch.zeros(97)]).double()
    Q = random_orthogonal(100, 1)
    M = ((Q * lam) @ Q.T).float()
    res = sketched_eigh(DenseOperator(M), 3, method="nystrom", num_matvecs=20)
    assert res.status in (Status.COMPLETED, Status.RANK_DEFICIENT), res.message


def test_old_ok_status_loads(tmp_path):
    res = sketched_eigh(DenseOperator(matrix()), 3, num_matvecs=24)
    res.save(tmp_path / "r.safetensors")
    back = SketchResult.load(tmp_path / "r.safetensors")
    assert back.status is Status.COMPLETED
