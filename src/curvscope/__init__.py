"""curvscope: the curvature of neural-network losses, from exact to matrix-free at scale."""

from curvscope.linalg import diagonal, eigsh, lanczos, spectral_density, trace
from curvscope.linalg.sketch import sketched_eigh
from curvscope.metrics import (
    goldilocks,
    gradient_confinement,
    magnitude_mask,
    mask_overlap,
    split_spectrum,
    subspace_overlap,
)
from curvscope.operators import (
    GGN,
    ClassStructure,
    DenseOperator,
    GradientCovariance,
    GradientMoment,
    Hessian,
    LinearOperator,
    Residual,
)

__version__ = "0.1.0"

__all__ = [
    "GGN",
    "ClassStructure",
    "DenseOperator",
    "GradientCovariance",
    "GradientMoment",
    "Hessian",
    "LinearOperator",
    "Residual",
    "__version__",
    "diagonal",
    "eigsh",
    "goldilocks",
    "gradient_confinement",
    "lanczos",
    "magnitude_mask",
    "mask_overlap",
    "sketched_eigh",
    "spectral_density",
    "split_spectrum",
    "subspace_overlap",
    "trace",
]
