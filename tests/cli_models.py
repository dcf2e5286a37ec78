"""A user's model for the ``analyze`` tests (imported as ``cli_models:small_mlp``)."""

import torch
from torch import nn


def small_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.Tanh(), nn.Linear(12, 10))


def _lm_batch(seed: int, rows: int = 2, length: int = 12) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (rows, length), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, length - 3 :] = 0  # the last row is padded
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def lm_batches() -> list:
    """Three causal-LM batches of byte ids, as a list (``--data cli_models:lm_batches``)."""
    return [_lm_batch(s) for s in range(3)]


def lm_loader():
    """An endless stream of LM batches: a loader without a length, read with ``--num-batches``."""
    seed = 0
    while True:
        yield _lm_batch(seed)
        seed += 1
