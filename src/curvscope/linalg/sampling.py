"""Random probe vectors, always drawn from an explicit seed or ``torch.Generator``.

Same seed → same probes, on any device: vectors are drawn on the CPU generator and
moved, so a CUDA run reproduces the CPU run's probes exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from curvscope.common import SeedLike, make_generator  # the one make_generator (re-exported here)

__all__ = ["PROBES", "SeedLike", "gaussian", "make_generator", "probes", "rademacher", "unit_sphere"]


def gaussian(
    dim: int, num: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> Tensor:
    """Standard normal block ``[dim, num]``."""
    return torch.randn(dim, num, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)


def rademacher(
    dim: int, num: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> Tensor:
    """Random signs ``±1`` as a block ``[dim, num]``."""
    signs = torch.randint(0, 2, (dim, num), generator=generator, dtype=torch.int8)
    return (2 * signs - 1).to(dtype=dtype, device=device)


def unit_sphere(
    dim: int, num: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> Tensor:
    """Columns uniform on the unit sphere, ``[dim, num]``."""
    X = gaussian(dim, num, generator, torch.float64)
    return (X / X.norm(dim=0, keepdim=True)).to(dtype=dtype, device=device)


PROBES = {"gaussian": gaussian, "rademacher": rademacher, "sphere": unit_sphere}


def probes(kind: str, dim: int, num: int, generator: torch.Generator, dtype: torch.dtype, device="cpu") -> Tensor:
    """Draw ``num`` probes of the named kind (``gaussian``, ``rademacher``, ``sphere``)."""
    try:
        fn = PROBES[kind]
    except KeyError:
        raise ValueError(f"unknown probe kind {kind!r}; valid kinds: {sorted(PROBES)}") from None
    return fn(dim, num, generator, dtype, device)
