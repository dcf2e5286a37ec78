"""Snapshots of a training run, and their files in a run directory: where, which are complete, loading.

A snapshot at step ``k`` is three files under ``out_dir/snapshots`` (see :mod:`curvscope.train.trainer`):
the model state, the optimizer state, and the metrics JSON, which is written last and so marks
the snapshot complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from curvscope.io import load_tensors, read_json


@dataclass(frozen=True)
class Snapshot:
    """The model at one step and its metrics.

    Attributes:
        step: optimizer steps taken (0 = initialisation).
        epoch: ``step / steps_per_epoch``.
        metrics: ``loss``, ``accuracy``, ``grad_norm`` on the training set (and ``test_…``
            on ``eval_data``), ``lr`` of the last step, ``wall_time`` since the start.
        path: the safetensors file (``None`` for an in-memory run).
        state: the ``state_dict`` copy for an in-memory run (``None`` when on disk).
    """

    step: int
    epoch: float
    metrics: dict[str, float]
    path: Path | None = None
    state: dict[str, Tensor] | None = field(default=None, repr=False)

    def load_state(self) -> dict[str, Tensor]:
        """The model ``state_dict`` at this step (from memory or disk)."""
        if self.state is not None:
            return self.state
        if self.path is None:
            raise ValueError("this snapshot has neither a state nor a path")
        return load_tensors(self.path)[0]


def snapshot_path(out_dir: str | Path, step: int) -> Path:
    """``out_dir/snapshots/step_{step:07d}.safetensors``."""
    return Path(out_dir) / "snapshots" / f"step_{step:07d}.safetensors"


def list_snapshots(out_dir: str | Path) -> list[int]:
    """Steps with a complete snapshot (model, optimizer state and metrics all written)."""
    d = Path(out_dir) / "snapshots"
    steps = []
    for p in d.glob("step_*.json") if d.is_dir() else []:
        step = int(p.stem.split("_")[1])
        if snapshot_path(out_dir, step).is_file() and optim_path(out_dir, step).is_file():
            steps.append(step)
    return sorted(steps)


def load_snapshot(out_dir: str | Path, step: int | None = None) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(state_dict, metrics)`` of the snapshot at ``step`` (default: the latest complete one)."""
    steps = list_snapshots(out_dir)
    if not steps:
        raise FileNotFoundError(f"no complete snapshot in {Path(out_dir) / 'snapshots'}")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise FileNotFoundError(f"no snapshot at step {step} in {out_dir}; available: {steps}")
    return load_tensors(snapshot_path(out_dir, step))[0], read_json(snapshot_path(out_dir, step).with_suffix(".json"))


def optim_path(out_dir: str | Path, step: int) -> Path:
    """The optimizer-state file beside the model snapshot at ``step``."""
    return snapshot_path(out_dir, step).with_suffix(".optim.safetensors")


def optim_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list]:
    """The optimizer's per-parameter tensors as flat ``"{index}.{key}"`` names, and its param groups."""
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for key, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"{idx}.{key}"] = v
    return tensors, sd["param_groups"]


def load_optim(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], groups: list) -> None:
    """Inverse of :func:`optim_tensors` (JSON turned Adam's ``betas`` into a list: back to a tuple)."""
    state: dict[int, dict[str, Tensor]] = {}
    for name, v in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = v
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in groups]
    opt.load_state_dict({"state": state, "param_groups": groups})
