"""curvscope: the curvature of neural-network losses, from exact to matrix-free at scale."""

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
]
