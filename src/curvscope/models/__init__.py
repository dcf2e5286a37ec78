"""The model zoo: MLPs, a LeNet-like CNN, a small ResNet and a tiny transformer, built by name.

>>> from curvscope.models import build_model, count_parameters
>>> count_parameters(build_model("mlp", in_features=30, widths=(32, 32), num_classes=10))
2378
"""

from curvscope.models.common import ACTIVATIONS, activation, count_parameters, scale_init_
from curvscope.models.conv import BasicBlock, LeNet, ResNet
from curvscope.models.mlp import MLP
from curvscope.models.registry import build_model, list_models, register_model
from curvscope.models.transformer import TinyTransformer

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "BasicBlock",
    "LeNet",
    "ResNet",
    "TinyTransformer",
    "activation",
    "build_model",
    "count_parameters",
    "list_models",
    "register_model",
    "scale_init_",
]
