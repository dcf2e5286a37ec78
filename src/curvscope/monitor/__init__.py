"""Curvature during training: a monitor for plain loops, and its metrics and loggers.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from curvscope.monitor import CurvatureMonitor
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = nn.Linear(3, 2).double()
    >>> probe = [(torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 2, (8,)))]
    >>> monitor = CurvatureMonitor(model, nn.CrossEntropyLoss(), probe, every=10, tol=1e-8)
    >>> row = monitor.step(0)
    >>> row["lambda_max/status"], row["lambda_max"] > 0
    ('converged', True)
    >>> monitor.step(5) is None  # not due
    True
"""

from curvscope.monitor.core import CurvatureMonitor, preserved
from curvscope.monitor.metrics import DEFAULT_METRICS, METRICS, Measurement, Metric
from curvscope.monitor.sinks import TensorBoardLogger, WandbLogger, read_history

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "CurvatureMonitor",
    "Measurement",
    "Metric",
    "TensorBoardLogger",
    "WandbLogger",
    "preserved",
    "read_history",
]
