"""Training: a deterministic resumable trainer, random-subspace training, interpolation between solutions.

>>> import torch
>>> from curvscope.data import gaussian_mixture
>>> from curvscope.models import build_model
>>> from curvscope.train import TrainConfig, train
>>> data = gaussian_mixture(num_classes=3, dim=5, num_samples=96, spread=2.0, seed=0)
>>> model = build_model("mlp", in_features=5, widths=(16,), num_classes=3, seed=0)
>>> history = train(model, data, TrainConfig(lr=0.1, batch_size=32, epochs=30, snapshot_steps=(0,)))
>>> history.final.metrics["loss"] < 0.5 * history.snapshots[0].metrics["loss"]
True
"""

from curvscope.train.evaluate import LOSSES, Metrics, cross_entropy, evaluate, get_loss, mse
from curvscope.train.interpolate import InterpolationResult, interpolate
from curvscope.train.subspace import RandomProjection, SubspaceModel, fwht, train_subspace
from curvscope.train.trainer import (
    Snapshot,
    TrainConfig,
    TrainHistory,
    list_snapshots,
    load_snapshot,
    lr_at,
    snapshot_path,
    steps_per_epoch,
    total_steps,
    train,
)

__all__ = [
    "LOSSES",
    "InterpolationResult",
    "Metrics",
    "RandomProjection",
    "Snapshot",
    "SubspaceModel",
    "TrainConfig",
    "TrainHistory",
    "cross_entropy",
    "evaluate",
    "fwht",
    "get_loss",
    "interpolate",
    "list_snapshots",
    "load_snapshot",
    "lr_at",
    "mse",
    "snapshot_path",
    "steps_per_epoch",
    "total_steps",
    "train",
    "train_subspace",
]
