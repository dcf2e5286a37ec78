"""Pieces shared by the model zoo: activations by name, init scaling, widths, parameter counts."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module by name (``relu``, ``tanh``, ``gelu``, ``silu``, …)."""
    try:
        return ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; valid names: {', '.join(ACTIVATIONS)}") from None


def scaled_width(width: int, multiplier: float) -> int:
    """``round(width · multiplier)``, at least 1."""
    if multiplier <= 0:
        raise ValueError(f"width_multiplier must be > 0, got {multiplier}")
    return max(1, round(width * multiplier))


@torch.no_grad()
def scale_init_(model: nn.Module, alpha: float) -> nn.Module:
    """Multiply the weights and biases of every Linear, Conv and Embedding layer by ``alpha``.

    Normalisation layers (BatchNorm, LayerNorm) keep their ``(1, 0)`` affine init, so
    ``alpha`` scales the initialisation radius of the layers that carry the function —
    the knob of the Goldilocks experiments (Fort & Scherlis 2018).
    """
    if alpha != 1.0:
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)):
                for p in m.parameters(recurse=False):
                    p.mul_(alpha)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters ``D`` (trainable ones by default)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
