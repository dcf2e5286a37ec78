"""Estimators refuse non-finite or misshapen products with the fix in the message (never NaN with a trusted status)."""

from __future__ import annotations

import pytest
import torch

from curvscope.linalg.density import spectral_density
from curvscope.linalg.sketch import sketched_eigh
from curvscope.linalg.trace import diagonal, trace
from curvscope.metrics import goldilocks

DT = torch.float64


class Bad:
    """An outside operator whose products hold a NaN (``kind="nan"``) or drop the last row (``kind="short"``)."""

    def __init__(self, kind: str, D: int = 30) -> None:
        self.kind, self.shape, self.dtype, self.device = kind, (D, D), DT, torch.device("cpu")
        self.M = torch.diag(torch.linspace(1.0, 2.0, D, dtype=DT))

    def __matmul__(self, X):
        Y = self.M @ X
        if self.kind == "nan":
            Y = Y.clone()
            Y[3] = float("nan")
            return Y
        return Y[:-1]


RUNS = {
    "slq": lambda A: spectral_density(A, "slq", 2, 5, progress=False),
    "kpm": lambda A: spectral_density(A, "kpm", 2, 5, spectral_range=(0.0, 3.0), progress=False),
    "kpm_range": lambda A: spectral_density(A, "kpm", 2, 5, progress=False),
    "hutchinson": lambda A: trace(A, "hutchinson", 6),
    "xtrace": lambda A: trace(A, "xtrace", 12),
    "xdiag": lambda A: diagonal(A, "xdiag", 12),
    "sketch": lambda A: sketched_eigh(A, 2, num_matvecs=12, error_probes=2),
    "goldilocks": lambda A: goldilocks(A, 4),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_nan_products_raise(name):
    with pytest.raises(ArithmeticError, match="NaN"):
        RUNS[name](Bad("nan"))


@pytest.mark.parametrize("name", ["kpm", "hutchinson", "xtrace", "xdiag", "sketch", "goldilocks"])
def test_misshapen_products_raise(name):
    with pytest.raises(ValueError, match="returned shape"):
        RUNS[name](Bad("short"))
