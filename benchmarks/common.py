"""Shared pieces of the benchmark scripts: workloads, timing, environment, JSON output."""

from __future__ import annotations

import itertools
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"


def digits(dtype=torch.float32, images=False):
    """sklearn digits, standardised: ([1797, 64] or [1797, 1, 8, 8], labels)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    x = x.to(dtype)
    if images:
        x = x.reshape(-1, 1, 8, 8)
    return x, torch.tensor(d.target)


def mlp(widths=(64, 512, 512, 10)) -> nn.Module:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def cnn_1m() -> nn.Module:
    """~1M parameters on 8x8 digits: two 3x3 convolutions, max-pool, two linear layers."""
    return nn.Sequential(
        nn.Conv2d(1, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(128 * 4 * 4, 448),
        nn.ReLU(),
        nn.Linear(448, 10),
    )


def cnn_104k() -> nn.Module:
    """~104k parameters on 8x8 digits (issue 10 §3): two 3x3 convolutions, max-pool, two linear layers."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 82),
        nn.ReLU(),
        nn.Linear(82, 10),
    )


def workload(name: str, dtype=torch.float32, batch_size: int = 512, num_samples: int | None = None):
    """``(model, loss_fn, batches)`` for a named workload (seeded)."""
    torch.manual_seed(0)
    if name == "mlp-small":
        model, (x, y) = mlp((64, 32, 32, 10)), digits(dtype)
    elif name == "mlp-300k":
        model, (x, y) = mlp(), digits(dtype)
    elif name == "cnn-1m":
        model, (x, y) = cnn_1m(), digits(dtype, images=True)
    else:
        raise KeyError(f"unknown workload {name!r}")
    if num_samples is not None:
        x, y = x[:num_samples], y[:num_samples]
    model = model.to(dtype)
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return model, nn.CrossEntropyLoss(), batches


def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> dict:
    """Median and min wall time of ``fn`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"median_s": times[len(times) // 2], "min_s": times[0], "runs": times}


def environment() -> dict:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def loadavg() -> tuple[float, float, float]:
    """``os.getloadavg()`` (1, 5, 15 minutes): record it beside every timing on a shared machine."""
    return tuple(round(x, 2) for x in os.getloadavg())


def peer_versions(names=("curvlinops-for-pytorch", "pyhessian", "hessian-eigenthings", "scipy", "numpy")) -> dict:
    """Installed versions of the peer libraries (``None`` when absent)."""
    import importlib.metadata as md

    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def write_json(folder: str, name: str, payload: dict) -> Path:
    from curvscope.io import atomic_write_json

    path = RESULTS / folder / f"{name}.json"
    atomic_write_json(path, payload)
    return path


def table(rows: list[dict], columns: list[str]) -> str:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)))
    return "\n".join(out)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
