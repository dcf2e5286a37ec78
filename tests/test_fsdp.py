"""FSDP2-sharded curvature on 2 and 3 gloo ranks equals the single-process float64 values.

Exact products: to 1e-10. Finite-difference products: within the error the operator states
(``fd_error``; the margin is the ``NOISE_FACTOR`` = 10 the default tolerance uses). Scalars are
bitwise identical on every rank, the Krylov basis per rank is ``1/W`` of the single-process one,
and a rank that dies gives the survivors a ``DistributedError``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fsdp_cases import make_problem, probe_vectors, single
from test_cli import ANALYZE, cli
from test_distributed import launch

pytest.importorskip("torch.distributed.fsdp")

CASES = [("mlp", "exact", 2), ("mlp", "fd", 3), ("gpt2", "exact", 3), ("gpt2", "fd", 2)]
REPLICATED = (
    "eig",
    "res",
    "converged",
    "anorm",
    "tol",
    "slq_nodes",
    "slq_weights",
    "trace",
    "fd_error",
    "fd_error_top",
    "power_eig",
    "power_res",
    "sketch_eig",
    "sketch_res",
    "sketch_err",
    "core_eig",
    "core_res",
    "metrics",
    "xtrace",
    "defl_nodes",
    "defl_weights",
)


def run(tmp_path, name, method, world, mode="ok", timeout=400):
    if name == "gpt2":
        pytest.importorskip("transformers")
    codes, outs, elapsed = launch(tmp_path, mode, timeout, world, "fsdp_worker.py", (name, method))
    return codes, outs, elapsed


def close(got, want, tol) -> float:
    err = (got - want).abs().max().item()
    assert err <= tol * max(want.abs().max().item(), 1.0), f"{err:.2e}"
    return err


@pytest.mark.parametrize("name,method,world", CASES, ids=[f"{n}-{m}-{w}ranks" for n, m, w in CASES])
def test_sharded_equals_single_process(tmp_path, name, method, world):
    codes, outs, _ = run(tmp_path, name, method, world)
    assert codes == [0] * world, outs
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    for r in range(1, world):  # the same scalars on every rank, bit for bit
        for key in (*REPLICATED, "hv", "vectors", "xdiag"):
            assert torch.equal(torch.as_tensor(got[r][key]), torch.as_tensor(got[0][key])), (r, key)
    g, want = got[0], single(name)
    assert g["method"] == method and g["restored"] and g["grads_untouched"]
    assert int(g["defl_k"]) == int(want["defl_k"]) == 4  # every outlier certified and deflated
    sign = torch.sign((g["vectors"] * want["vectors"]).sum(0))
    if method == "exact":
        keys = ("hv", "eig", "slq_nodes", "slq_weights", "trace", "power_eig", "sketch_eig", "sketch_err", "metrics",
                "xtrace", "xdiag", "defl_nodes", "defl_weights")  # fmt: skip
        for key in keys:
            close(g[key], want[key], 1e-10)
        close(g["core_eig"], want["core_eig"], 1e-8)  # least-squares core solves: cond(ΨQ)·round-off
        close(g["core_res"], want["core_res"], 1e-8)
        close(g["sketch_res"], want["sketch_res"], 1e-8)
        close(g["power_res"], want["power_res"], 1e-8)  # residuals of unconverged iterates: ‖A‖-relative
        close(g["vectors"] * sign, want["vectors"], 1e-8)  # eigenvectors: residual/gap
        assert bool(g["converged"].all()) and bool((g["res"] <= g["tol"] * g["anorm"]).all())
    else:
        from curvscope.operators.finite_difference import fd_step

        model = make_problem(name)[0]
        v = probe_vectors(want["hv"].shape[0])[:, 0]
        sizes = [p.numel() for p in model.parameters()]
        step = fd_step(dict(model.named_parameters()), dict(enumerate(v.split(sizes))), torch.float64)
        assert abs(float(g["fd_step"]) - step) <= 1e-12 * step  # the single-process step (RMS of θ, not ‖θ‖)
        fe = float(g["fd_error"])
        assert 0 < fe < 1e-6 and 0 < float(g["fd_error_top"][0]) <= fe  # the recorded error is the largest seen
        noise = 10 * fe  # NOISE_FACTOR: the default tolerance's margin over the estimate
        rel = (g["hv"] - want["hv"]).norm(dim=0) / want["hv"].norm(dim=0)
        assert bool((rel <= noise).all()), (rel / fe).tolist()
        anorm = float(want["anorm"])
        assert bool(((g["eig"] - want["eig"]).abs() <= g["res"] + noise * anorm).all())
        # power iteration: 20 block steps from the same start; each step's Ritz values move by ≤ noise·‖A‖
        assert bool(((g["power_eig"] - want["power_eig"]).abs() <= 20 * noise * anorm).all())
        for j in (1, 2, 3):  # quadrature moments q^T A^j q: stable under product errors (nodes alone are not)
            # deflated: its point masses are eigsh values (tol 1e-5), which move by ≤ 1e-5·‖A‖ + noise
            for key, shift in (("slq", 0.0), ("defl", 1e-5 * anorm)):
                mu = (g[f"{key}_weights"] * g[f"{key}_nodes"] ** j).sum(1)
                ref = (want[f"{key}_weights"] * want[f"{key}_nodes"] ** j).sum(1)
                assert bool(((mu - ref).abs() <= j * (noise * anorm + shift) * anorm ** (j - 1)).all()), (key, j)
        # sketches: Ritz values of a perturbed Krylov space; each eigenvalue within its residual plus noise·‖A‖
        for key in ("sketch", "core"):
            gap = (g[f"{key}_eig"] - want[f"{key}_eig"]).abs()
            assert bool((gap <= g[f"{key}_res"] + want[f"{key}_res"] + 40 * noise * anorm).all()), (key, gap)
        # overlaps of fd eigenvectors (perturbed by ~noise·‖A‖/gap): a regression bound measured here (≤ 1e-6 seen)
        assert (g["metrics"] - want["metrics"]).abs().max() <= 1e-4
        # Hutch++: 9 products of unit-scale vectors, each off by at most noise·‖A‖·‖z‖² (‖z‖² ≤ D)
        assert abs(float(g["trace"] - want["trace"])) <= noise * anorm * want["hv"].shape[0]
        # XTrace/XDiag: 12 products of unit-norm columns (Q) or probes of norm² = D, the same bound
        assert abs(float(g["xtrace"][0] - want["xtrace"][0])) <= noise * anorm * want["hv"].shape[0]
        assert (g["xdiag"] - want["xdiag"]).abs().max() <= noise * anorm * want["hv"].shape[0]
    # memory: the k=20 Krylov basis per rank is this rank's share of the single-process basis
    nbytes = [int(x["basis_nbytes"]) for x in got]
    D = want["hv"].shape[0]
    assert sum(int(x["local_dim"]) for x in got) == D
    for x in got:
        assert int(x["basis_nbytes"]) * D == int(want["basis_nbytes"]) * int(x["local_dim"])
    assert max(nbytes) <= (1 / world + 0.15) * int(want["basis_nbytes"])


def test_a_dead_rank_gives_survivors_a_distributed_error(tmp_path):
    codes, outs, elapsed = run(tmp_path, "mlp", "fd", 3, mode="die", timeout=120)
    assert codes == [2, 2, 3], outs
    for r in range(2):
        message = (tmp_path / f"error{r}.txt").read_text()
        assert "DistributedError" in message and "Another rank probably died" in message, message
    assert elapsed < 90


def test_exact_over_budget_is_refused_and_auto_falls_back_to_fd(tmp_path):
    codes, outs, _ = run(tmp_path, "mlp", "auto", 2, mode="budget", timeout=120)
    assert codes == [0, 0], outs
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt", weights_only=False)
        assert "method='fd'" in got["refused"] and got["auto"] == "fd", got
        assert got["exact_bytes"] > 1000  # the recorded estimate: replica + full vectors of a block


@pytest.mark.skipif(not (Path(sys.executable).parent / "torchrun").exists(), reason="torchrun not installed")
def test_cli_shard_fsdp_equals_one_process(tmp_path):
    from safetensors.torch import save_file

    from cli_models import small_mlp

    checkpoint = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in small_mlp().state_dict().items()}, checkpoint)
    one, two = tmp_path / "one", tmp_path / "two"
    res = cli(*ANALYZE, "--checkpoint", str(checkpoint), "--out", str(one), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__), "OMP_NUM_THREADS": "1"}
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc-per-node=2", "--standalone", "-m", "curvscope",
           *ANALYZE, "--checkpoint", str(checkpoint), "--shard", "fsdp", "--out", str(two)]  # fmt: skip
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    b = json.loads((two / "results.json").read_text())
    assert b["metrics"]["product_method"] == "exact" and b["metrics"]["num_samples"] == 200
    from curvscope.io import load_tensors

    ta, tb = load_tensors(one / "arrays" / "top.safetensors")[0], load_tensors(two / "arrays" / "top.safetensors")[0]
    torch.testing.assert_close(tb["eigenvalues"], ta["eigenvalues"], rtol=1e-9, atol=1e-12)
    assert "eigenvectors" not in tb  # sharded: not kept by the run
