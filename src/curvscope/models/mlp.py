"""Fully connected classifier: the workhorse of the exact-Hessian experiments."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import Tensor, nn

from curvscope.models.common import activation, scale_init_, scaled_width


class MLP(nn.Module):
    """Multi-layer perceptron ``in → widths… → num_classes`` with one activation throughout.

    Parameter count with biases: ``Σ_l (n_{l-1} + 1) n_l`` over consecutive sizes
    ``n_0 = in_features, n_1…, n_L = num_classes``. The small-scale setups of docs/science.md:
    30-32-32-10 has D = 2378 (GMM), 64-32-32-10 has D = 3466 (digits), bias-free
    64-16-16-10 has D = 1440 (Goldilocks).

    Args:
        in_features: input size (inputs ``[N, ...]`` are flattened to ``[N, in_features]``).
        widths: hidden layer widths, e.g. ``(32, 32)``; ``()`` gives a linear model.
        num_classes: output size ``C``.
        activation: ``relu`` (default), ``tanh``, ``gelu``, ``silu``, ``sigmoid``, …
        bias: include biases in every layer.
        init_scale: ``α`` multiplying PyTorch's default (Kaiming-uniform) initialisation.
        width_multiplier: multiply every hidden width (rounded, ≥ 1) — for width sweeps.

    Parameter names: ``layers.0.weight``, ``layers.0.bias``, ``layers.2.weight``, … (the
    ``nn.Sequential`` indices, activations in between).
    """

    def __init__(
        self,
        in_features: int,
        widths: Sequence[int] = (32, 32),
        num_classes: int = 10,
        *,
        activation: str = "relu",
        bias: bool = True,
        init_scale: float = 1.0,
        width_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        sizes = [int(in_features), *(scaled_width(w, width_multiplier) for w in widths), int(num_classes)]
        if min(sizes) < 1:
            raise ValueError(f"layer sizes must be positive, got {sizes}")
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(a, b, bias=bias))
            if i < len(sizes) - 2:
                layers.append(_act(activation))
        self.layers = nn.Sequential(*layers)
        self.sizes = tuple(sizes)
        scale_init_(self, init_scale)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, C]`` from inputs ``[N, ...]`` (flattened)."""
        return self.layers(x.reshape(x.shape[0], -1))


_act = activation  # the constructor argument shadows the function name
