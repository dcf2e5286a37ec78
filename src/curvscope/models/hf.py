"""HuggingFace model constructors for the experiments and benchmarks (``transformers`` imported on use)."""

from __future__ import annotations

import torch
from torch import nn


def byte_gpt2(seq_len: int, width: int, layers: int, heads: int, *, vocab_size: int = 256, seed: int = 0) -> nn.Module:
    """A dropout-free ``GPT2LMHeadModel`` from a config (random init, seeded without touching the global RNG).

    Dropout is off so that the curvature is that of a deterministic function; the byte vocabulary
    matches :mod:`curvscope.data.text`.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=seq_len,
        n_embd=width,
        n_layer=layers,
        n_head=heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config)
