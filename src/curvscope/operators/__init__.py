"""Linear operators: the protocol, composition, and curvature operators of a loss."""

from curvscope.operators.base import DenseOperator, LinearOperator
from curvscope.operators.compose import (
    DeflatedOperator,
    IndexRestrictedOperator,
    ScaledOperator,
    ShiftedOperator,
    SubspaceOperator,
    SumOperator,
)

__all__ = [
    "DeflatedOperator",
    "DenseOperator",
    "IndexRestrictedOperator",
    "LinearOperator",
    "ScaledOperator",
    "ShiftedOperator",
    "SubspaceOperator",
    "SumOperator",
]
