"""Linear operators: the protocol, composition, and curvature operators of a loss."""

from curvscope.operators.base import DenseOperator, LinearOperator
from curvscope.operators.compose import (
    DeflatedOperator,
    IndexRestrictedOperator,
    LowRankOperator,
    ScaledOperator,
    ShiftedOperator,
    SubspaceOperator,
    SumOperator,
)
from curvscope.operators.curvature import CurvatureOperator, NondeterministicProductError
from curvscope.operators.decompose import ClassStructure
from curvscope.operators.fisher import GradientCovariance, GradientMoment
from curvscope.operators.ggn import GGN, Residual
from curvscope.operators.hessian import Hessian
from curvscope.operators.problem import LossProblem

__all__ = [
    "GGN",
    "ClassStructure",
    "CurvatureOperator",
    "DeflatedOperator",
    "DenseOperator",
    "GradientCovariance",
    "GradientMoment",
    "Hessian",
    "IndexRestrictedOperator",
    "LinearOperator",
    "LossProblem",
    "LowRankOperator",
    "NondeterministicProductError",
    "Residual",
    "ScaledOperator",
    "ShiftedOperator",
    "SubspaceOperator",
    "SumOperator",
]
