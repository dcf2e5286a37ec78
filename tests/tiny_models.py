"""Tiny float64 models and datasets for the exact-comparison tier of the tests.

Each case is data: a name, a model factory, a loss, and data split into uneven batches
(so the per-batch weighting is exercised). The dense reference is always built on the
same samples as ONE batch, so a wrong weighting would show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DT = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class TinyCNN(nn.Module):
    """Conv → BatchNorm (eval, non-trivial running stats) → ReLU → max-pool → Linear."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 2 * 2, classes)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.3, 0.3)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.2, 0.2)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc(h.flatten(1))


class TinyTransformer(nn.Module):
    """Token embedding + positions → pre-LN attention (math SDPA) → pre-LN GELU MLP → pooled head."""

    def __init__(self, vocab: int = 7, dim: int = 6, seq: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(0.1 * torch.randn(seq, dim))
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, classes)
        with torch.no_grad():  # LayerNorm affine away from (1, 0) so its curvature is generic
            for ln in (self.ln1, self.ln2):
                ln.weight.uniform_(0.5, 1.5)
                ln.bias.uniform_(-0.2, 0.2)

    def forward(self, tokens):
        h = self.embed(tokens) + self.pos
        q, k, v = self.qkv(self.ln1(h)).chunk(3, dim=-1)
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            a = F.scaled_dot_product_attention(q, k, v)
        h = h + self.proj(a)
        h = h + self.mlp(self.ln2(h))
        return self.head(h.mean(dim=1))


class DictModel(nn.Module):
    """HuggingFace-style: called as ``model(features=..., mask=...)``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))

    def forward(self, features, mask):
        return self.body(features * mask)


def dict_loss(outputs, batch):
    return F.cross_entropy(outputs, batch["labels"])


def _split(sizes: list[int], make: Callable[[int, int], Any]) -> list[Any]:
    out, start = [], 0
    for n in sizes:
        out.append(make(start, start + n))
        start += n
    return out


@dataclass
class Case:
    name: str
    model: nn.Module
    loss_fn: Callable
    batches: list  # uneven batches
    full: list  # the same samples as one batch
    classes: int | None = 3  # for the class-structure terms (CE cases)


def _xy_case(name, model, loss_fn, X, Y, sizes, classes=3):
    batches = _split(sizes, lambda a, b: (X[a:b], Y[a:b]))
    return Case(name, model, loss_fn, batches, [(X, Y)], classes)


def make_case(name: str) -> Case:
    torch.manual_seed(0)
    g = _gen(1)
    sizes = [4, 4, 1, 3]  # uneven, with a single-sample batch
    N = sum(sizes)
    y = torch.arange(N) % 3
    if name in ("mlp_tanh", "mlp_relu"):
        act = nn.Tanh() if name == "mlp_tanh" else nn.ReLU()
        model = nn.Sequential(nn.Linear(4, 6), act, nn.Linear(6, 5), act, nn.Linear(5, 3)).to(DT)
        return _xy_case(name, model, nn.CrossEntropyLoss(), torch.randn(N, 4, dtype=DT, generator=g), y, sizes)
    if name == "cnn_bn":
        model = TinyCNN().to(DT).eval()
        return _xy_case(name, model, nn.CrossEntropyLoss(), torch.randn(N, 1, 6, 6, dtype=DT, generator=g), y, sizes)
    if name == "transformer":
        model = TinyTransformer().to(DT)
        tokens = torch.randint(0, 7, (N, 4), generator=g)
        return _xy_case(name, model, nn.CrossEntropyLoss(), tokens, y, sizes)
    if name == "mse_layernorm_silu":  # the vmap trap of torch 2.13 ("ZeroTensors are immutable")
        model = nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.SiLU(), nn.Linear(5, 2)).to(DT)
        X = torch.randn(N, 4, dtype=DT, generator=g)
        return _xy_case(name, model, nn.MSELoss(), X, torch.randn(N, 2, dtype=DT, generator=g), sizes, None)
    if name == "dict_batches":
        model = DictModel().to(DT)
        feats = torch.randn(N, 5, dtype=DT, generator=g)
        mask = (torch.rand(N, 5, generator=g) > 0.2).to(DT)

        def make(a, b):
            return {"features": feats[a:b], "mask": mask[a:b], "labels": y[a:b]}

        return Case(name, model, dict_loss, _split(sizes, make), [make(0, N)], 3)
    raise KeyError(name)


CASES = ["mlp_tanh", "mlp_relu", "cnn_bn", "transformer", "mse_layernorm_silu", "dict_batches"]
