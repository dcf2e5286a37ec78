"""eigsh and SLQ killed with SIGKILL midway resume from their checkpoint: same result, finished work not redone."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from curvscope.linalg import eigsh, spectral_density

HERE = Path(__file__).resolve().parent

WORKER = r"""
import sys, time, torch
sys.path.insert(0, {here!r})
from curvscope.linalg import eigsh, spectral_density
from test_linalg_resume import SlowCounting, problem
A = SlowCounting(problem(), delay=float(sys.argv[2]), log=sys.argv[3])
if sys.argv[1] == "eigsh":
    res = eigsh(A, k=6, which="LA", tol=1e-10, ncv=14, seed=3, checkpoint=sys.argv[4])
    torch.save({{"values": res.eigenvalues, "vectors": res.eigenvectors, "matvecs": res.num_matvecs}}, sys.argv[5])
else:
    d = spectral_density(A, num_probes=6, num_steps=15, block_size=1, seed=3, checkpoint=sys.argv[4])
    torch.save({{"nodes": d.nodes, "weights": d.weights, "matvecs": d.num_matvecs}}, sys.argv[5])
"""


def problem():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(200, 200, generator=g, dtype=torch.float64))
    lam = torch.linspace(1, 10, 200, dtype=torch.float64)  # slow convergence: ~30 thick restarts
    return (Q * lam) @ Q.T


class SlowCounting:
    """A dense operator that logs each product (to count redone work) and can be slowed down."""

    def __init__(self, A, delay=0.0, log=None):
        self.A, self.delay, self.log = A, delay, log
        self.shape, self.dtype, self.device = A.shape, A.dtype, A.device

    def __matmul__(self, X):
        if self.log:
            with open(self.log, "a") as fh:
                fh.write(f"{X.shape[1] if X.ndim == 2 else 1}\n")
        time.sleep(self.delay)
        return self.A @ X


def products(log: Path) -> int:
    return sum(int(x) for x in log.read_text().split()) if log.exists() else 0


def run_killed_then_resumed(tmp_path, kind, kill_after):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(here=str(HERE)))
    ckpt, log, out = tmp_path / f"{kind}.ckpt", tmp_path / f"{kind}.log", tmp_path / f"{kind}.pt"
    # the same intra-op threads as this process: bitwise equality needs the same matmul reductions
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONPATH": str(HERE)}
    proc = subprocess.Popen([sys.executable, str(script), kind, "0.01", str(log), str(ckpt), str(out)], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and (not ckpt.exists() or products(log) < kill_after):
        assert proc.poll() is None, "the run finished before it could be killed"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not out.exists()
    before = products(log)
    done = subprocess.run([sys.executable, str(script), kind, "0", str(log), str(ckpt), str(out)], env=env, timeout=300)
    assert done.returncode == 0
    return torch.load(out), before, products(log)


def test_eigsh_resumes_from_its_last_restart(tmp_path):
    got, before, total = run_killed_then_resumed(tmp_path, "eigsh", kill_after=80)
    ref = eigsh(SlowCounting(problem()), k=6, which="LA", tol=1e-10, ncv=14, seed=3)
    torch.testing.assert_close(got["values"], ref.eigenvalues, rtol=0, atol=0)  # bitwise: same path
    torch.testing.assert_close(got["vectors"], ref.eigenvectors, rtol=0, atol=0)
    assert got["matvecs"] == ref.num_matvecs
    # work redone after the kill is at most what ran since the last checkpoint (< one restart cycle)
    assert total - ref.num_matvecs <= 14, (before, total, ref.num_matvecs)


def test_slq_resumes_finished_probes(tmp_path):
    got, before, total = run_killed_then_resumed(tmp_path, "slq", kill_after=40)
    ref = spectral_density(SlowCounting(problem()), num_probes=6, num_steps=15, block_size=1, seed=3)
    torch.testing.assert_close(got["nodes"], ref.nodes, rtol=0, atol=0)
    torch.testing.assert_close(got["weights"], ref.weights, rtol=0, atol=0)
    assert got["matvecs"] == ref.num_matvecs == 90
    assert total - ref.num_matvecs < 15, (before, total)  # at most the probe that was running


def test_a_foreign_checkpoint_is_refused(tmp_path):
    import pytest

    path = tmp_path / "c.ckpt"
    spectral_density(SlowCounting(problem()), num_probes=2, num_steps=5, block_size=1, seed=0, checkpoint=path)
    with pytest.raises(ValueError, match="was written for"):
        spectral_density(SlowCounting(problem()), num_probes=3, num_steps=5, block_size=1, seed=0, checkpoint=path)


def test_eigsh_refuses_a_basis_that_cannot_fit(monkeypatch):
    import pytest

    import curvscope.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 1000)
    with pytest.raises(MemoryError, match=r"the eigsh basis \(15 vectors of 200 coordinates.*try: storage='disk'"):
        eigsh(SlowCounting(problem()), k=6, ncv=14)
