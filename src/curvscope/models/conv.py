"""Convolutional classifiers: a LeNet-like CNN and a small CIFAR-style ResNet."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from curvscope.models.common import activation as make_activation
from curvscope.models.common import scale_init_, scaled_width


class LeNet(nn.Module):
    """LeNet-like CNN: two (conv → [BatchNorm] → act → 2×2 max-pool) stages, then an MLP head.

    Convolutions are ``kernel_size`` with "same" padding, so any image size ≥ 4 works
    (8×8 digits, 16×16 or 28×28 Fashion-MNIST, 32×32 CIFAR). Parameter counts with the
    defaults (channels 6, 16; hidden 120, 84; no BatchNorm): 1×28×28 → 10 classes,
    D = 107,786; 1×16×16 → 10, D = 44,426; 1×8×8 → 10, D = 21,386; 3×32×32 → 10,
    D = 136,886 (BatchNorm adds ``2·(6 + 16)`` = 44).

    Args:
        in_channels: image channels.
        image_size: side of the square input images.
        num_classes: output size ``C``.
        channels: output channels of the two convolutions.
        hidden: widths of the fully connected layers after the convolutions.
        kernel_size: odd kernel size.
        batchnorm: insert ``BatchNorm2d`` after each convolution (mind the train/eval
            policy when measuring curvature).
        activation: activation name.
        init_scale: ``α`` multiplying the default init of conv and linear layers.
        width_multiplier: multiply channels and hidden widths.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        *,
        channels: Sequence[int] = (6, 16),
        hidden: Sequence[int] = (120, 84),
        kernel_size: int = 5,
        batchnorm: bool = False,
        activation: str = "relu",
        init_scale: float = 1.0,
        width_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (for 'same' padding), got {kernel_size}")
        if image_size < 4:
            raise ValueError(f"image_size must be >= 4 (two 2×2 poolings), got {image_size}")
        c1, c2 = (scaled_width(c, width_multiplier) for c in channels)
        self.in_channels, self.image_size = in_channels, image_size
        pad = kernel_size // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size, padding=pad),
            nn.BatchNorm2d(c1) if batchnorm else nn.Identity(),
            make_activation(activation),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size, padding=pad),
            nn.BatchNorm2d(c2) if batchnorm else nn.Identity(),
            make_activation(activation),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        sizes = [c2 * side * side, *(scaled_width(h, width_multiplier) for h in hidden), num_classes]
        head: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            head.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                head.append(make_activation(activation))
        self.classifier = nn.Sequential(*head)
        scale_init_(self, init_scale)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, C]`` from images ``[N, in_channels, S, S]`` (or their flat ``[N, in_channels·S²]``)."""
        if x.ndim == 2:
            x = x.reshape(x.shape[0], self.in_channels, self.image_size, self.image_size)
        return self.classifier(self.features(x).flatten(1))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convs with BatchNorm, identity or 1×1-conv shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: bool, act: str) -> None:
        super().__init__()
        Norm = nn.BatchNorm2d if norm else (lambda c: nn.Identity())
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not norm)
        self.bn1 = Norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=not norm)
        self.bn2 = Norm(c_out)
        self.act = make_activation(act)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=not norm), Norm(c_out))

    def forward(self, x: Tensor) -> Tensor:
        """``act(bn2(conv2(act(bn1(conv1 x)))) + shortcut(x))``."""
        h = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet(nn.Module):
    """Small CIFAR-style ResNet: 3×3 stem, stages of basic blocks, global average pool, linear head.

    Stage ``s`` has ``blocks[s]`` blocks of ``widths[s]`` channels; every stage after the
    first halves the resolution. The default (``blocks=(1, 1, 1)``, ``widths=(16, 32, 64)``)
    is a ResNet-8 with D = 78,042 for 3 input channels and 10 classes (77,754 for 1
    channel); ``blocks=(3, 3, 3)`` is the classic ResNet-20 (D ≈ 0.27M).

    Args:
        in_channels: image channels.
        num_classes: output size ``C``.
        blocks: basic blocks per stage.
        widths: channels per stage.
        batchnorm: BatchNorm after every convolution (default ``True``); without it convs
            get biases.
        activation: activation name.
        init_scale: ``α`` multiplying the default init of conv and linear layers.
        width_multiplier: multiply every stage width.
        image_size: for flat inputs ``[N, in_channels·S²]`` only.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        *,
        blocks: Sequence[int] = (1, 1, 1),
        widths: Sequence[int] = (16, 32, 64),
        batchnorm: bool = True,
        activation: str = "relu",
        init_scale: float = 1.0,
        width_multiplier: float = 1.0,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        if len(blocks) != len(widths) or not blocks:
            raise ValueError(f"blocks and widths need the same non-zero length, got {blocks} and {widths}")
        widths = [scaled_width(w, width_multiplier) for w in widths]
        self.in_channels, self.image_size = in_channels, image_size
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=not batchnorm),
            nn.BatchNorm2d(widths[0]) if batchnorm else nn.Identity(),
            make_activation(activation),
        )
        stages, c = [], widths[0]
        for s, (n, w) in enumerate(zip(blocks, widths)):
            for b in range(n):
                stages.append(BasicBlock(c, w, 2 if (s > 0 and b == 0) else 1, batchnorm, activation))
                c = w
        self.blocks = nn.Sequential(*stages)
        self.head = nn.Linear(c, num_classes)
        scale_init_(self, init_scale)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, C]`` from images ``[N, in_channels, H, W]``."""
        if x.ndim == 2:
            if self.image_size is None:
                raise ValueError("flat inputs need ResNet(image_size=S) to be reshaped to [N, C, S, S]")
            x = x.reshape(x.shape[0], self.in_channels, self.image_size, self.image_size)
        h = self.blocks(self.stem(x))
        return self.head(F.adaptive_avg_pool2d(h, 1).flatten(1))
