"""Where a monitor's rows go: CSV and JSON lines in ``log_dir``, TensorBoard, W&B, or any callable.

A *logger* is any callable ``logger(metrics: dict[str, float], step: int)``; numeric values arrive
under ``curvature/<key>``. :func:`make_logger` turns the names ``"tensorboard"`` and ``"wandb"``
into such callables (each an optional import: the core never imports them).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from curvscope.io import atomic_write_bytes

PREFIX = "curvature/"
Logger = Callable[[dict[str, float], int], None]


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The finite numeric values of a row (except ``step``), keyed ``curvature/<key>``."""
    out = {}
    for key, value in row.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[PREFIX + key] = float(value)
    return out


def write_files(log_dir: Path, history: Sequence[dict[str, Any]]) -> None:
    """``history.csv`` (union of columns, in first-seen order) and ``history.jsonl``, both atomically.

    Rewritten whole from the history, so a resumed monitor's files never hold rows a killed run
    measured after its last checkpoint.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in history:
        columns.extend(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_bytes(log_dir / "history.csv", buf.getvalue().encode())
    lines = "".join(json.dumps(row, default=str) + "\n" for row in history)
    atomic_write_bytes(log_dir / "history.jsonl", lines.encode())


def read_history(log_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``log_dir/history.jsonl``."""
    text = (Path(log_dir) / "history.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class TensorBoardLogger:
    """Scalars to a ``torch.utils.tensorboard.SummaryWriter`` (created in ``log_dir/tensorboard``)."""

    def __init__(self, log_dir: str | Path | None = None, writer: Any = None) -> None:
        if writer is None:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

            writer = SummaryWriter(str(Path(log_dir or "runs/curvature") / "tensorboard"))
        self.writer = writer

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        """Write each value as a scalar at ``step``."""
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()


class WandbLogger:
    """Scalars to the active W&B run (``wandb.log``); needs ``wandb`` installed and ``wandb.init`` called."""

    def __init__(self) -> None:
        try:
            import wandb
        except ImportError as err:
            raise ImportError("loggers=('wandb',) needs the wandb package: pip install wandb") from err
        self.wandb = wandb

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        """``wandb.log(metrics, step=step)``."""
        self.wandb.log(metrics, step=step)


def make_logger(spec: Any, log_dir: Path | None) -> Logger:
    """A logger from ``"tensorboard"``, ``"wandb"``, a ``SummaryWriter`` or any callable."""
    if spec == "tensorboard":
        return TensorBoardLogger(log_dir)
    if spec == "wandb":
        return WandbLogger()
    if hasattr(spec, "add_scalar"):
        return TensorBoardLogger(writer=spec)
    if callable(spec):
        return spec
    raise ValueError(f"a logger must be 'tensorboard', 'wandb', a SummaryWriter or a callable, got {spec!r}")
