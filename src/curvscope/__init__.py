"""curvscope: the curvature of neural-network losses, from exact to matrix-free at scale."""

from curvscope.operators import DenseOperator, LinearOperator

__version__ = "0.1.0"

__all__ = ["DenseOperator", "LinearOperator", "__version__"]
