"""Grassmannian overlap of subspaces and of parameter masks with an eigenspace (Fernandez et al. 2025).

For orthonormal bases ``Q₁ ∈ R^{D×k₁}``, ``Q₂ ∈ R^{D×k₂}``::

    overlap(Q₁, Q₂) = ‖Q₁ᵀQ₂‖_F² / min(k₁, k₂) = mean cos²(principal angles)  ∈ [0, 1]

(1 when the smaller space lies in the larger, 0 when they are orthogonal). A parameter
mask ``m`` (a set of coordinates) spans the unit vectors ``{e_i : i ∈ m}``, so
``overlap(m, Q) = Σ_{i∈m} ‖Q[i, :]‖² / min(|m|, k)`` — for ``|m| = k`` the score of
Fernandez, Schneider, Mahsereci & Hennig (2025). A uniformly random ``k₁``-dimensional
subspace scores ``max(k₁, k₂)/D`` on average (chance; ``k/D`` for equal sizes); the spread
around it is estimated by Monte Carlo (:func:`chance_overlap`, :func:`random_mask_overlap`).

Masks are boolean tensors ``[D]`` over the flat parameter vector (``named_parameters``
order): :func:`magnitude_mask` (global or per layer), :func:`best_mask` (the ``k`` rows of
``Q`` with the largest norms: the highest overlap any ``k``-mask can reach),
:func:`random_mask`, :func:`layer_matched_random_mask` (same count per layer as a given mask:
the control that separates "large weights" from "which layers"), :func:`mask_iou`.

Vectors sharded over ranks (FSDP, :mod:`curvscope.distributed.fsdp`): pass the operator's
``space=A.space`` and each rank's rows (``[d_local, k]`` bases, ``[d_local]`` masks); the
inner products are summed over the ranks and every rank obtains the same overlap.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from curvscope.common import SeedLike, make_generator
from curvscope.linalg.results import FloatResult
from curvscope.linalg.space import LocalSpace


@dataclass(frozen=True, eq=False)
class Overlap(FloatResult):
    """A Grassmannian overlap with its chance level; also a ``float`` equal to ``value``.

    Attributes:
        value: ``‖Q₁ᵀQ₂‖_F² / min(k₁, k₂)`` ∈ [0, 1].
        k1, k2: dimensions of the two subspaces (for a mask: ``|m|`` and ``k``).
        dim: ambient dimension ``D``.
        chance: mean overlap of a uniformly random ``k₁``-subspace: ``max(k₁, k₂)/D``.
    """

    value: float
    k1: int
    k2: int
    dim: int
    chance: float

    @property
    def ratio_to_chance(self) -> float:
        """``value / chance`` (1 for a random subspace)."""
        return self.value / self.chance


@dataclass(frozen=True)
class PrincipalAngles:
    """Principal angles between two subspaces.

    Attributes:
        angles: ``[min(k₁, k₂)]`` radians, ascending.
        cosines: ``cos θᵢ`` (singular values of ``Q₁ᵀQ₂``), descending.
        overlap: mean ``cos² θᵢ`` (= :func:`subspace_overlap`).
    """

    angles: Tensor
    cosines: Tensor
    overlap: float


@dataclass(frozen=True)
class ChanceOverlap:
    """Chance level of a subspace overlap: the exact mean and a Monte-Carlo mean and spread.

    Unpacks as ``expected, mean, std`` (the tuple this function returned before).

    Attributes:
        expected: exact mean ``max(k₁, k₂)/D``.
        mean, std: mean and standard deviation of ``num_samples`` Haar draws.
        num_samples: Monte-Carlo draws.
    """

    expected: float
    mean: float
    std: float
    num_samples: int

    def __iter__(self) -> Iterator[float]:
        return iter((self.expected, self.mean, self.std))


@dataclass(frozen=True)
class MaskOverlapChance:
    """Overlap of random ``k``-masks with ``span(Q)`` (Monte Carlo); unpacks as ``mean, std`` (the former tuple).

    Attributes:
        mean, std: mean and standard deviation over the draws.
        expected: exact mean for uniform masks, ``‖Q‖_F²/D · |m| / min(|m|, k_Q)`` (``NaN`` for layer-matched masks).
        num_samples: draws.
        samples: ``[num_samples]`` the overlaps.
        layer_matched: whether the masks were layer-matched to ``like``.
    """

    mean: float
    std: float
    expected: float
    num_samples: int
    samples: Tensor
    layer_matched: bool

    def __iter__(self) -> Iterator[float]:
        return iter((self.mean, self.std))


def orthonormal_basis(Q: Tensor, rtol: float | None = None) -> Tensor:
    """An orthonormal basis of ``range(Q)`` ``[D, r]`` (``Q`` itself when already orthonormal).

    Directions with singular value below ``rtol · σ_max`` are dropped (default ``100·eps·max(D, k)``).

    Example:
        >>> Q = orthonormal_basis(torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64))
        >>> torch.allclose(Q.T @ Q, torch.eye(2, dtype=torch.float64))
        True
    """
    if Q.ndim == 1:
        Q = Q[:, None]
    if Q.ndim != 2 or Q.shape[1] == 0:
        raise ValueError(f"a basis must be a non-empty [D, k] matrix, got shape {tuple(Q.shape)}")
    eps = torch.finfo(Q.dtype).eps
    k = Q.shape[1]
    if torch.allclose(Q.T @ Q, torch.eye(k, dtype=Q.dtype, device=Q.device), atol=100 * eps * max(k, 10)):
        return Q
    U, S, _ = torch.linalg.svd(Q, full_matrices=False)
    rtol = 100 * eps * max(Q.shape) if rtol is None else rtol
    keep = S > rtol * S[0]
    if not keep.any():
        raise ValueError("the basis is zero: it spans no subspace")
    return U[:, keep]


def as_basis(Q: Tensor, orthonormalize: bool, space: LocalSpace | None = None) -> Tensor:
    """``Q`` as ``[D, k]`` columns, orthonormalised on request (sharded rows: :func:`sharded_basis`)."""
    if space is None or not space.sharded:
        return orthonormal_basis(Q) if orthonormalize else (Q[:, None] if Q.ndim == 1 else Q)
    return sharded_basis(Q, space) if orthonormalize else (Q[:, None] if Q.ndim == 1 else Q)


def sharded_basis(Q: Tensor, space: LocalSpace) -> Tensor:
    """An orthonormal basis of a sharded ``Q`` (this rank's rows), without its dependent columns.

    :meth:`ShardedSpace.qr` (Gram–Schmidt twice) drops them as :func:`orthonormal_basis` drops small
    singular directions; an orthonormal ``Q`` is returned as is.
    """
    Q = Q[:, None] if Q.ndim == 1 else Q
    space.check_local(Q, "a sharded basis")
    k, eps = Q.shape[1], torch.finfo(Q.dtype).eps
    if torch.allclose(space.inner(Q, Q), torch.eye(k, dtype=Q.dtype, device=Q.device), atol=100 * eps * max(k, 10)):
        return Q
    B, R = space.qr(Q)
    keep = R.diagonal() != 0
    if not keep.any():
        raise ValueError("the basis is zero: it spans no subspace")
    return B[:, keep]


def subspace_overlap(Q1: Tensor, Q2: Tensor, orthonormalize: bool = True, space: LocalSpace | None = None) -> Overlap:
    """``‖Q₁ᵀQ₂‖_F² / min(k₁, k₂)``: 1 for nested subspaces, 0 for orthogonal ones (an :class:`Overlap`).

    Args:
        Q1, Q2: bases ``[D, k₁]`` and ``[D, k₂]`` (any columns spanning the subspaces).
        orthonormalize: orthonormalise the bases first (skip only for known orthonormal ones).
        space: the vector space of sharded bases (``A.space``; each rank passes its rows).

    Example:
        >>> e = torch.eye(4, dtype=torch.float64)
        >>> ov = subspace_overlap(e[:, :2], e[:, 1:3])
        >>> float(ov), ov.chance, round(subspace_overlap(e[:, :2], 3 * e[:, :2] + e[:, [1, 0]]), 12)
        (0.5, 0.5, 1.0)
    """
    sp = LocalSpace(Q1.shape[0]) if space is None else space
    A, B = as_basis(Q1, orthonormalize, space), as_basis(Q2, orthonormalize, space)
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"bases live in different spaces: {A.shape[0]} vs {B.shape[0]} rows")
    B = B.to(A.dtype)
    k1, k2, D = A.shape[1], B.shape[1], sp.dim
    return Overlap((sp.inner(A, B) ** 2).sum().item() / min(k1, k2), k1, k2, D, max(k1, k2) / D)


def principal_angles(Q1: Tensor, Q2: Tensor) -> PrincipalAngles:
    """Principal angles ``[min(k₁, k₂)]`` in radians, ascending (``cos θᵢ`` = singular values of ``Q₁ᵀQ₂``).

    Example:
        >>> e = torch.eye(3, dtype=torch.float64)
        >>> pa = principal_angles(e[:, :2], e[:, 1:])
        >>> [round(a, 4) for a in pa.angles.tolist()], pa.overlap
        ([0.0, 1.5708], 0.5)
    """
    A, B = orthonormal_basis(Q1), orthonormal_basis(Q2).to(Q1.dtype)
    cos = torch.linalg.svdvals(A.T @ B).clamp(0, 1).sort(descending=True).values
    return PrincipalAngles(torch.arccos(cos), cos, (cos**2).mean().item())


def _as_mask(mask: Tensor, D: int) -> Tensor:
    if mask.dtype == torch.bool:
        if mask.shape != (D,):
            raise ValueError(f"a boolean mask must have shape [{D}], got {tuple(mask.shape)}")
        return mask
    out = torch.zeros(D, dtype=torch.bool, device=mask.device)
    out[mask.long()] = True
    if out.sum() != mask.numel():
        raise ValueError("an index mask has repeated entries")
    return out


def mask_overlap(mask: Tensor, Q: Tensor, orthonormalize: bool = True, space: LocalSpace | None = None) -> Overlap:
    """Overlap of the coordinate subspace of a mask with ``span(Q)``: ``Σ_{i∈m} ‖Q[i]‖² / min(|m|, k)``.

    Equals :func:`subspace_overlap` of the mask's unit vectors ``{e_i}`` and ``Q``; an
    :class:`Overlap` (``k1 = |m|``, ``k2 = k``, chance ``max(|m|, k)/D``, also a float).

    Args:
        mask: boolean ``[D]`` or indices ``[|m|]``.
        Q: basis ``[D, k]`` (e.g. the top-``k`` Hessian eigenvectors).
        orthonormalize: orthonormalise ``Q`` first.
        space: the vector space of a sharded ``Q`` (``A.space``): ``mask`` and ``Q`` are then this
            rank's rows (a boolean mask ``[d_local]`` or local row indices).

    Example:
        >>> Q = torch.tensor([[1.0, 0.0], [0.0, 0.6], [0.0, 0.8], [0.0, 0.0]], dtype=torch.float64)
        >>> round(mask_overlap(torch.tensor([0, 2]), Q), 12)
        0.82
    """
    sp = LocalSpace(Q.shape[0]) if space is None else space
    Q = as_basis(Q, orthonormalize, space)
    m = _as_mask(mask, Q.shape[0])
    size = int(sp.reduce(m.sum(dtype=torch.float64)).item())
    if size == 0:
        raise ValueError("the mask is empty")
    k, D = Q.shape[1], sp.dim
    return Overlap(sp.reduce((Q[m] ** 2).sum()).item() / min(size, k), size, k, D, max(size, k) / D)


def chance_overlap(D: int, k1: int, k2: int | None = None, num_samples: int = 200, seed: SeedLike = 0) -> ChanceOverlap:
    """Chance level of the overlap of a uniformly random ``k₁``-subspace with a fixed ``k₂``-subspace.

    Returns a :class:`ChanceOverlap`: the exact mean ``max(k₁, k₂)/D`` and the mean and
    standard deviation of ``num_samples`` Monte-Carlo draws (Haar subspaces from ``seed``);
    it unpacks as ``expected, mean, std``.

    Example:
        >>> exp, mean, std = chance_overlap(50, 5, num_samples=100)
        >>> exp, abs(mean - exp) < 4 * std / 10
        (0.1, True)
    """
    k2 = k1 if k2 is None else k2
    if not (1 <= k1 <= D and 1 <= k2 <= D):
        raise ValueError(f"need 1 <= k1, k2 <= D, got k1={k1}, k2={k2}, D={D}")
    g = make_generator(seed)
    fixed = torch.eye(D, k2, dtype=torch.float64)
    vals = torch.tensor(
        [subspace_overlap(torch.randn(D, k1, generator=g, dtype=torch.float64), fixed) for _ in range(num_samples)]
    )
    return ChanceOverlap(max(k1, k2) / D, vals.mean().item(), vals.std().item(), num_samples)


# --------------------------------------------------------------------------------- masks
def _flatten(params: Mapping[str, Tensor] | Tensor, layer_sizes: Sequence[int] | None) -> tuple[Tensor, list[int]]:
    if isinstance(params, Mapping):
        flat = torch.cat([p.detach().reshape(-1) for p in params.values()])
        return flat, [p.numel() for p in params.values()]
    flat = params.detach().reshape(-1)
    sizes = [flat.numel()] if layer_sizes is None else [int(s) for s in layer_sizes]
    if sum(sizes) != flat.numel():
        raise ValueError(f"layer_sizes add up to {sum(sizes)}, but the parameter vector has {flat.numel()} entries")
    return flat, sizes


def _topk_mask(scores: Tensor, k: int) -> Tensor:
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:  # stable: ties go to the lower index
        mask[torch.argsort(scores, descending=True, stable=True)[:k]] = True
    return mask


def _split_counts(k: int, sizes: Sequence[int]) -> list[int]:
    """``k`` split over layers proportionally to their sizes (largest remainder)."""
    total = sum(sizes)
    raw = [k * s / total for s in sizes]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(sizes)), key=lambda i: raw[i] - counts[i], reverse=True)[: k - sum(counts)]:
        counts[i] += 1
    return counts


def magnitude_mask(
    params: Mapping[str, Tensor] | Tensor, k: int, per_layer: bool = False, layer_sizes: Sequence[int] | None = None
) -> Tensor:
    """The ``k`` largest-magnitude parameters, globally or per layer, as a boolean mask ``[D]``.

    Args:
        params: ``dict(model.named_parameters())`` (flattened in that order) or a flat ``[D]`` tensor.
        k: mask size.
        per_layer: split ``k`` over layers in proportion to their sizes, then take each
            layer's largest weights (otherwise one global ranking).
        layer_sizes: sizes of the layers of a flat ``params`` (needed for ``per_layer``).

    Example:
        >>> magnitude_mask(torch.tensor([0.1, -3.0, 2.0, 0.5]), 2).tolist()
        [False, True, True, False]
        >>> magnitude_mask(torch.tensor([0.1, -3.0, 2.0, 0.5]), 2, per_layer=True, layer_sizes=[2, 2]).tolist()
        [False, True, True, False]
    """
    flat, sizes = _flatten(params, layer_sizes)
    if not 0 <= k <= flat.numel():
        raise ValueError(f"k={k} must lie in [0, D={flat.numel()}]")
    if not per_layer:
        return _topk_mask(flat.abs(), k)
    if isinstance(params, Tensor) and layer_sizes is None:
        raise ValueError("per_layer=True with a flat parameter vector needs layer_sizes=[...]")
    parts = [_topk_mask(seg.abs(), c) for seg, c in zip(flat.split(sizes), _split_counts(k, sizes))]
    return torch.cat(parts)


def best_mask(Q: Tensor, k: int | None = None) -> Tensor:
    """The ``k`` coordinates with the largest ``‖Q[i, :]‖``: the best overlap any ``k``-mask reaches.

    Example:
        >>> best_mask(torch.tensor([[0.1], [0.9], [0.4]]), 1).tolist()
        [False, True, False]
    """
    Q = orthonormal_basis(Q)
    return _topk_mask((Q**2).sum(1), Q.shape[1] if k is None else k)


def random_mask(D: int, k: int, seed: SeedLike = 0) -> Tensor:
    """A uniformly random ``k``-subset of ``D`` coordinates as a boolean mask.

    Example:
        >>> int(random_mask(10, 3, seed=1).sum())
        3
    """
    if not 0 <= k <= D:
        raise ValueError(f"k={k} must lie in [0, D={D}]")
    mask = torch.zeros(D, dtype=torch.bool)
    mask[torch.randperm(D, generator=make_generator(seed))[:k]] = True
    return mask


def layer_matched_random_mask(mask: Tensor, layer_sizes: Sequence[int], seed: SeedLike = 0) -> Tensor:
    """A random mask with as many entries in every layer as ``mask`` has.

    Example:
        >>> m = torch.tensor([True, True, False, False, False, True])
        >>> r = layer_matched_random_mask(m, [3, 3], seed=0)
        >>> int(r[:3].sum()), int(r[3:].sum())
        (2, 1)
    """
    if sum(layer_sizes) != mask.numel():
        raise ValueError(f"layer_sizes add up to {sum(layer_sizes)}, the mask has {mask.numel()} entries")
    g = make_generator(seed)
    return torch.cat([random_mask(len(seg), int(seg.sum()), g) for seg in mask.bool().cpu().split(list(layer_sizes))])


def random_mask_overlap(
    Q: Tensor,
    k: int,
    num_samples: int = 200,
    seed: SeedLike = 0,
    like: Tensor | None = None,
    layer_sizes: Sequence[int] | None = None,
) -> MaskOverlapChance:
    """Mean and standard deviation of :func:`mask_overlap` over random ``k``-masks (Monte Carlo).

    Returns a :class:`MaskOverlapChance` (it unpacks as ``mean, std``).

    With ``like`` and ``layer_sizes`` the masks are layer-matched to ``like``. The exact mean
    for uniform masks is ``‖Q‖_F² / D · |m| / min(|m|, k_Q)`` (``k/D`` for ``|m| = k_Q``).

    Example:
        >>> Q = torch.linalg.qr(torch.randn(100, 5, generator=torch.Generator().manual_seed(0)))[0]
        >>> mean, std = random_mask_overlap(Q, 5, num_samples=400)
        >>> abs(mean - 5 / 100) < 4 * std / 20
        True
    """
    Q = orthonormal_basis(Q)
    g = make_generator(seed)
    vals = []
    for _ in range(num_samples):
        m = random_mask(Q.shape[0], k, g) if like is None else layer_matched_random_mask(like, layer_sizes, g)
        vals.append(float(mask_overlap(m, Q, orthonormalize=False)))
    v = torch.tensor(vals, dtype=torch.float64)
    size = k if like is None else int(like.bool().sum())
    expected = (Q**2).sum().item() / Q.shape[0] * size / min(size, Q.shape[1]) if like is None else float("nan")
    return MaskOverlapChance(v.mean().item(), v.std().item(), expected, num_samples, v, like is not None)


def mask_iou(m1: Tensor, m2: Tensor) -> float:
    """Intersection over union ``|m₁ ∩ m₂| / |m₁ ∪ m₂|`` (for two size-``k`` masks ``= ov/(2 − ov)``).

    Example:
        >>> mask_iou(torch.tensor([True, True, False]), torch.tensor([False, True, True]))
        0.3333333333333333
    """
    a, b = m1.bool(), m2.bool()
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 1.0
