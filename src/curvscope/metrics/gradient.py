"""Gradient confinement to the top eigenspace and persistence of that eigenspace (Gur-Ari, Roberts & Dyer 2018).

The fraction of a gradient ``g`` in the span of the top-``k`` eigenvectors ``V_k``::

    f_top = ‖V_kᵀ g‖² / ‖g‖²  ∈ [0, 1],     chance (random g or random V_k): k / D

Gur-Ari et al. found ``f_top`` close to 1 after a short time with ``k`` = number of classes,
for the full-batch gradient and for mini-batch gradients alike. Persistence of the top
subspace between snapshots ``t`` and ``t′`` is the Grassmannian overlap of ``V_k(t)`` and
``V_k(t′)`` (:func:`curvscope.metrics.overlap.subspace_overlap`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from curvscope.linalg.results import FloatResult
from curvscope.linalg.space import LocalSpace
from curvscope.metrics.overlap import as_basis, subspace_overlap


@dataclass(frozen=True, eq=False)
class Confinement(FloatResult):
    """Fraction of gradients in a subspace; also a ``float`` equal to ``value``.

    Attributes:
        value: the fraction ``‖Vᵀg‖²/‖g‖²`` of one gradient, or the mean over several.
        fractions: ``[B]`` the fraction of each gradient (``B = 1`` for one gradient).
        k: dimension of the subspace.
        dim: ambient dimension ``D``.
        chance: ``k/D``, the fraction of a random direction.
    """

    value: float
    fractions: Tensor
    k: int
    dim: int
    chance: float


def gradient_confinement(
    g: Tensor, V: Tensor, orthonormalize: bool = True, space: LocalSpace | None = None
) -> Confinement:
    """Fraction ``‖Vᵀg‖² / ‖g‖²`` of a gradient (or of each of many) in ``span(V)``.

    Args:
        g: one gradient ``[D]`` or many as columns ``[D, B]`` (e.g. one per mini-batch).
        V: basis ``[D, k]`` of the subspace (e.g. the top-``k`` Hessian eigenvectors).
        orthonormalize: orthonormalise ``V`` first (skip only for a known orthonormal basis).
        space: the vector space of sharded vectors (``A.space``): ``g`` and ``V`` are this rank's rows.

    Returns:
        A :class:`Confinement`: ``value`` is the fraction (one gradient) or the mean fraction
        (several; each in ``fractions``), with the chance level ``k/D``.

    Raises:
        ValueError: for a zero gradient (the fraction is undefined) or mismatched shapes.

    Example:
        >>> V = torch.eye(4, 2, dtype=torch.float64)
        >>> r = gradient_confinement(torch.tensor([3.0, 0.0, 4.0, 0.0], dtype=torch.float64), V)
        >>> float(r), r.chance
        (0.36, 0.5)
        >>> G = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
        >>> gradient_confinement(G, V).fractions.tolist()
        [1.0, 0.5]
    """
    sp = LocalSpace(V.shape[0]) if space is None else space
    V = as_basis(V, orthonormalize, space)
    G = g[:, None] if g.ndim == 1 else g
    if G.ndim != 2 or G.shape[0] != V.shape[0]:
        raise ValueError(f"gradients must be [{V.shape[0]}] or [{V.shape[0]}, B], got {tuple(g.shape)}")
    G = G.to(V.dtype)
    norm2 = sp.reduce((G**2).sum(0))
    if (norm2 == 0).any():
        raise ValueError("a gradient is exactly zero: its fraction in a subspace is undefined")
    frac = ((sp.inner(V, G) ** 2).sum(0) / norm2).double().cpu()
    k, D = V.shape[1], sp.dim
    return Confinement(frac.mean().item(), frac, k, D, k / D)


def confinement_chance(k: int, D: int) -> float:
    """Chance level ``k/D`` of :func:`gradient_confinement` (a random direction in ``D`` dimensions).

    Example:
        >>> confinement_chance(10, 1000)
        0.01
    """
    if not 1 <= k <= D:
        raise ValueError(f"need 1 <= k <= D, got k={k}, D={D}")
    return k / D


def subspace_persistence(bases: Sequence[Tensor], space: LocalSpace | None = None) -> Tensor:
    """Pairwise overlaps ``[T, T]`` of the top subspaces of ``T`` snapshots (1 on the diagonal).

    ``space``: the vector space of sharded bases (each rank passes its rows; see :func:`subspace_overlap`).

    Example:
        >>> e = torch.eye(4, dtype=torch.float64)
        >>> subspace_persistence([e[:, :2], e[:, 1:3], e[:, 2:]]).tolist()
        [[1.0, 0.5, 0.0], [0.5, 1.0, 0.5], [0.0, 0.5, 1.0]]
    """
    Qs = [as_basis(B, True, space) for B in bases]
    T = len(Qs)
    out = torch.eye(T, dtype=torch.float64)
    for i in range(T):
        for j in range(i + 1, T):
            out[i, j] = out[j, i] = subspace_overlap(Qs[i], Qs[j], orthonormalize=False, space=space)
    return out
