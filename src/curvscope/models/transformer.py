"""A tiny transformer classifier over image patches or token sequences."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from curvscope.models.common import scale_init_, scaled_width


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``h + Attn(LN h)``, then ``h + MLP(LN h)`` (GELU)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, math_attention: bool) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads, self.math_attention = heads, math_attention
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        hidden = max(1, round(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, h: Tensor) -> Tensor:
        """``[N, T, dim] → [N, T, dim]``."""
        N, T, dim = h.shape
        qkv = self.qkv(self.ln1(h)).reshape(N, T, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        # The fused CPU kernels have no second derivative; the math backend does (Hessians need it).
        ctx = sdpa_kernel(SDPBackend.MATH) if self.math_attention else contextlib.nullcontext()
        with ctx:
            a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        h = h + self.proj(a.transpose(1, 2).reshape(N, T, dim))
        return h + self.mlp(self.ln2(h))


class TinyTransformer(nn.Module):
    """Vision-transformer-style classifier (no class token: mean-pooled tokens → LayerNorm → head).

    Inputs are either images ``[N, C, S, S]`` (or flat ``[N, C·S²]``) cut into
    ``patch × patch`` patches and embedded linearly, or token ids ``[N, T]`` (``vocab_size``
    given) embedded by ``nn.Embedding``; learned positional embeddings either way.

    Parameter count: embedding (``C·patch²·dim + dim`` or ``vocab·dim``) + positions
    ``T·dim`` + per block ``12·dim² + 13·dim`` (mlp_ratio 4: qkv, proj, two MLP layers,
    two LayerNorms) + final LayerNorm ``2·dim`` + head ``(dim + 1)·C``. Default
    (8×8 digits, patch 2, dim 32, depth 1, 10 classes): D = 13,770.

    Args:
        num_classes: output size ``C``.
        image_size: side ``S`` of square images (ignored for tokens).
        in_channels: image channels.
        patch: patch side; must divide ``image_size``.
        vocab_size: if given, inputs are token ids and ``seq_len`` must be given.
        seq_len: token sequence length ``T``.
        dim: embedding width.
        depth: number of blocks.
        heads: attention heads.
        mlp_ratio: MLP hidden width / ``dim``.
        init_scale: ``α`` multiplying the default init of linear and embedding layers.
        width_multiplier: multiply ``dim`` (rounded to a multiple of ``heads``).
        math_attention: run attention with PyTorch's math backend (default ``True``): the
            fused kernels are faster but have no double backward, so Hessian-vector products
            through them fail. Set ``False`` for fast first-order training on a GPU.
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        image_size: int = 8,
        in_channels: int = 1,
        patch: int = 2,
        vocab_size: int | None = None,
        seq_len: int | None = None,
        dim: int = 32,
        depth: int = 1,
        heads: int = 2,
        mlp_ratio: float = 4.0,
        init_scale: float = 1.0,
        width_multiplier: float = 1.0,
        math_attention: bool = True,
    ) -> None:
        super().__init__()
        dim = max(heads, heads * round(scaled_width(dim, width_multiplier) / heads))
        self.tokens = vocab_size is not None
        self.in_channels, self.image_size, self.patch = in_channels, image_size, patch
        if self.tokens:
            if seq_len is None:
                raise ValueError("token inputs need seq_len (the sequence length T)")
            self.embed: nn.Module = nn.Embedding(vocab_size, dim)
            n_tokens = seq_len
        else:
            if image_size % patch:
                raise ValueError(f"patch={patch} must divide image_size={image_size}")
            self.embed = nn.Linear(in_channels * patch * patch, dim)
            n_tokens = (image_size // patch) ** 2
        self.pos = nn.Parameter(torch.zeros(n_tokens, dim))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio, math_attention) for _ in range(depth)))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        scale_init_(self, init_scale)

    def _patches(self, x: Tensor) -> Tensor:
        S, p, C = self.image_size, self.patch, self.in_channels
        x = x.reshape(x.shape[0], C, S // p, p, S // p, p)
        return x.permute(0, 2, 4, 1, 3, 5).reshape(x.shape[0], (S // p) ** 2, C * p * p)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, C]`` from images ``[N, C, S, S]`` / ``[N, C·S²]`` or token ids ``[N, T]``."""
        h = self.embed(x if self.tokens else self._patches(x)) + self.pos
        h = self.blocks(h)
        return self.head(self.ln(h.mean(dim=1)))
