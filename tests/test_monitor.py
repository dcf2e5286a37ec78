"""CurvatureMonitor: exact λ_max against dense Hessians, bitwise-unchanged training, logs, resume."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from curvscope.monitor import METRICS, CurvatureMonitor, read_history
from curvscope.operators.dense import dense_ggn, dense_hessian

DT = torch.float64


def _data(seed: int = 0, n: int = 48):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g, dtype=DT)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long() + (X[:, 2] > 0.3).long()
    return X, y


def _model(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(1)
    layers = [nn.Linear(4, 6), nn.Tanh()] + ([nn.Dropout(dropout)] if dropout else []) + [nn.Linear(6, 3)]
    return nn.Sequential(*layers).double()


def _train(model, monitor=None, steps=12, start=0, opt_state=None, stop_at=None, on_checkpoint=None):
    """SGD on mini-batches drawn from the global RNG (so a consumed RNG would change the weights)."""
    X, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.5)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    loss_fn = nn.CrossEntropyLoss()
    for step in range(start, steps):
        idx = torch.randperm(len(X))[:16]
        opt.zero_grad()
        loss_fn(model(X[idx]), y[idx]).backward()
        opt.step()
        if monitor is not None:
            monitor.step(step, batch_gradient=True)
        if on_checkpoint is not None:
            on_checkpoint(step, opt)
        if stop_at is not None and step == stop_at:
            raise KeyboardInterrupt("killed")
    return model


def _probe():
    X, y = _data(1, 40)
    return [(X[:25], y[:25]), (X[25:], y[25:])]  # uneven batches: weighting by sample count


def test_lambda_max_matches_dense_eigendecomposition_at_every_measurement():
    model, probe = _model(), _probe()
    seen = {}

    class Recorder(CurvatureMonitor):
        def _measure(self, step, batch_gradient):
            seen[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return super()._measure(step, batch_gradient)

    monitor = Recorder(model, nn.CrossEntropyLoss(), probe, every=3, metrics=("top_k", "lambda_max",
                       "ggn_lambda_max"), k=2, tol=1e-10)  # fmt: skip
    _train(model, monitor, steps=10)
    assert [r["step"] for r in monitor.history] == [0, 3, 6, 9]
    twin = _model()
    for row in monitor.history:
        twin.load_state_dict(seen[row["step"]])
        H = dense_hessian(twin, nn.CrossEntropyLoss(), probe)
        G = dense_ggn(twin, nn.CrossEntropyLoss(), probe)
        lam = torch.linalg.eigvalsh(H).flip(0)
        assert row["lambda_max/status"] == "converged"
        assert abs(row["lambda_max"] - lam[0].item()) <= 1e-8 * abs(lam[0].item())
        assert abs(row["top_k/2"] - lam[1].item()) <= 1e-8 * abs(lam[0].item())
        assert abs(row["ggn_lambda_max"] - torch.linalg.eigvalsh(G)[-1].item()) <= 1e-8 * abs(lam[0].item())
    assert monitor.history[-1]["top_k/persistence"] > 0.5


def test_training_is_bitwise_unchanged_by_the_monitor():
    torch.manual_seed(5)
    plain = _train(_model(dropout=0.2))
    torch.manual_seed(5)
    model = _model(dropout=0.2)
    model.train()
    monitor = CurvatureMonitor(model, nn.CrossEntropyLoss(), _probe(), every=2,
                               metrics=("top_k", "trace", "gradient_confinement"), k=2)  # fmt: skip
    monitored = _train(model, monitor)
    assert len(monitor.history) == 6 and model.training and all(m.training for m in model.modules())
    for (name, a), b in zip(plain.state_dict().items(), monitored.state_dict().values()):
        assert torch.equal(a, b), name


def test_warm_start_costs_a_handful_of_products():
    model = _model()
    monitor = CurvatureMonitor(model, nn.CrossEntropyLoss(), _probe(), every=1)
    _train(model, monitor, steps=6)
    cold, *warm = [r["lambda_max/matvecs"] for r in monitor.history]
    assert all(r["lambda_max/status"] == "converged" for r in monitor.history)
    assert max(warm) <= 10 and max(warm) < cold, (cold, warm)


def test_logs_csv_jsonl_tensorboard_and_callables(tmp_path):
    calls = []

    class Writer:
        def add_scalar(self, key, value, step):
            calls.append((key, value, step))

        def flush(self):
            pass

    model = _model()
    monitor = CurvatureMonitor(model, nn.CrossEntropyLoss(), _probe(), every=4, log_dir=tmp_path,
                               loggers=(Writer(), "tensorboard", lambda m, s: calls.append(("cb", m, s))))  # fmt: skip
    _train(model, monitor, steps=9)
    rows = read_history(tmp_path)
    assert [r["step"] for r in rows] == [0, 4, 8] == [r["step"] for r in monitor.history]
    header = (tmp_path / "history.csv").read_text().splitlines()[0].split(",")
    assert {"step", "lambda_max", "lambda_max/residual", "matvecs"} <= set(header)
    assert ("curvature/lambda_max", rows[1]["lambda_max"], 4) in calls
    assert any(c[0] == "cb" and "curvature/lambda_max" in c[1] for c in calls)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    report = monitor.report()
    assert report.exists() and "Largest Hessian eigenvalue" in report.read_text()


def test_resume_from_a_killed_run_gives_the_uninterrupted_history(tmp_path):
    def make(log_dir):
        torch.manual_seed(11)
        model = _model()
        return model, CurvatureMonitor(model, nn.CrossEntropyLoss(), _probe(), every=2, log_dir=log_dir,
                                       metrics=("top_k", "lambda_max", "trace"), k=2, trace_matvecs=6)  # fmt: skip

    model, monitor = make(tmp_path / "full")
    _train(model, monitor, steps=11)

    ckpt = tmp_path / "ckpt.pt"

    def save(step, opt):
        if step % 3 == 2:  # checkpoints after steps 2, 5, 8
            torch.save({"step": step, "model": model.state_dict(), "opt": opt.state_dict(),
                        "rng": torch.get_rng_state(), "monitor": monitor.state_dict()}, ckpt)  # fmt: skip

    model, monitor = make(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        _train(model, monitor, steps=11, stop_at=7, on_checkpoint=save)  # measured step 6 after the checkpoint
    state = torch.load(ckpt, weights_only=False)
    model, monitor = make(tmp_path / "killed")
    model.load_state_dict(state["model"])
    monitor.load_state_dict(state["monitor"])
    assert [r["step"] for r in read_history(tmp_path / "killed")] == [0, 2, 4]  # files follow the checkpoint
    torch.set_rng_state(state["rng"])
    _train(model, monitor, steps=11, start=state["step"] + 1, opt_state=state["opt"])

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    full = json.loads(json.dumps(strip(read_history(tmp_path / "full"))))
    assert strip(read_history(tmp_path / "killed")) == full
    assert [r["step"] for r in full] == [0, 2, 4, 6, 8, 10]


def test_refusals():
    model = _model()
    with pytest.raises(ValueError, match="valid: top_k"):
        CurvatureMonitor(model, nn.CrossEntropyLoss(), _probe(), metrics=("sharpness",))
    with pytest.raises(ValueError, match="every"):
        CurvatureMonitor(model, nn.CrossEntropyLoss(), _probe(), every=0)
    a = CurvatureMonitor(model, nn.CrossEntropyLoss(), _probe(), every=2)
    b = CurvatureMonitor(model, nn.CrossEntropyLoss(), _probe(), every=3)
    with pytest.raises(ValueError, match="other settings"):
        b.load_state_dict(a.state_dict())
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*_data()), batch_size=20)
    assert len(CurvatureMonitor(model, nn.CrossEntropyLoss(), loader).probe) == 3
    assert set(METRICS) >= {"lambda_max", "top_k", "trace", "gradient_confinement", "density", "ggn_lambda_max"}


WORKER = r"""
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

rank, port, out, tests = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                        timeout=timedelta(seconds=60))
sys.path.insert(0, tests)
from test_monitor import _model, _probe, _train
from curvscope.monitor import CurvatureMonitor

torch.manual_seed(0)
model = _model()
monitor = CurvatureMonitor(model, nn.CrossEntropyLoss(), [_probe()[rank]], every=3, tol=1e-10, log_dir=out)
_train(model, monitor, steps=7)
dist.destroy_process_group()
"""


def test_data_parallel_probe_shards_equal_one_process(tmp_path):
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    tests = str(Path(__file__).resolve().parent)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(r), port, str(tmp_path), tests],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in (0, 1)]  # fmt: skip
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out.decode()[-2000:]
    torch.manual_seed(0)
    model = _model()
    single = CurvatureMonitor(model, nn.CrossEntropyLoss(), _probe(), every=3, tol=1e-10)
    _train(model, single, steps=7)
    rows = read_history(tmp_path)  # written by rank 0 only
    assert [r["step"] for r in rows] == [0, 3, 6]
    for a, b in zip(rows, single.history):
        assert abs(a["lambda_max"] - b["lambda_max"]) <= 1e-8 * abs(b["lambda_max"])
