"""Training confined to a random affine subspace ``θ = θ₀ + M w`` (Li et al. 2018; Fort & Scherlis 2018).

:class:`SubspaceModel` wraps a network: its only trainable parameter is ``w ∈ R^d``; the
network's own parameters are a frozen copy ``θ₀`` and the forward pass evaluates the
network at ``θ₀ + M w`` through ``torch.func.functional_call``. So the ordinary
:func:`~curvscope.train.train` trains it (with snapshots and resuming), and a curvature
operator built on the wrapper measures ``Mᵀ H M`` — the Hessian restricted to the
hyperplane, whose ``Tr/‖·‖_F`` is the Goldilocks measure.

Projections ``M ∈ R^{D×d}`` (:class:`RandomProjection`):

- ``"dense"``: exactly orthonormal columns (QR of a Gaussian matrix); memory ``D·d``.
- ``"sparse"``: ``k ≈ √D`` random ±1 entries per column, each column scaled to unit norm
  (very sparse random projections, Li, Hastie & Church 2006); memory ``d·√D``; columns
  nearly orthogonal.
- ``"fastfood"``: stacked blocks ``H G Π H B`` (Le, Sarlós & Smola 2013) with fast
  Walsh–Hadamard transforms, as Li et al. use for large D: memory ``O(D)``, cost
  ``O(D log d)`` per product; columns of unit norm before truncation to D rows, nearly
  orthogonal.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch.func import functional_call

from curvscope.train.trainer import TrainConfig, TrainHistory, train

KINDS = ("dense", "sparse", "fastfood")
DENSE_LIMIT = 1 << 24  # D·d entries above which "auto" picks fastfood


def fwht(x: Tensor) -> Tensor:
    """Unnormalised fast Walsh–Hadamard transform over the last dimension (a power of two).

    ``fwht(x) = x Hₙ`` with Sylvester's ``Hₙ`` (entries ±1, ``Hₙ Hₙ = n I``); ``O(n log n)``
    and differentiable.
    """
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"fwht needs a power-of-two length, got {n}")
    lead, h = x.shape[:-1], 1
    while h < n:
        y = x.reshape(*lead, n // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2).reshape(*lead, n)
        h *= 2
    return x


class RandomProjection(nn.Module):
    """A seeded random linear map ``M: R^d → R^D`` with (nearly) orthonormal columns.

    ``M`` is regenerated from the seed rather than stored: ``state_dict`` holds only the
    spec ``(D, d, kind, seed)``, so snapshots stay small, and loading a state saved with
    another spec raises instead of silently pairing ``w`` with the wrong ``M``.

    Args:
        D: ambient dimension (number of network parameters).
        d: subspace dimension.
        kind: ``"dense"``, ``"sparse"``, ``"fastfood"`` or ``"auto"`` (dense while
            ``D·d ≤ 2²⁴``, else fastfood).
        seed: seed of the draw.
        dtype: dtype of the buffers and products.
    """

    def __init__(self, D: int, d: int, kind: str = "auto", seed: int = 0, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if not 1 <= d <= D:
            raise ValueError(f"subspace dimension d must be in [1, D={D}], got {d}")
        if kind == "auto":
            kind = "dense" if D * d <= DENSE_LIMIT else "fastfood"
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS} or 'auto', got {kind!r}")
        self.D, self.d, self.kind = int(D), int(d), kind
        # Only this spec is saved (M is regenerated from the seed); loading checks that it matches.
        self.register_buffer("spec", torch.tensor([D, d, KINDS.index(kind), int(seed)]))
        g = torch.Generator().manual_seed(int(seed))
        f64 = torch.float64
        if kind == "dense":
            q, _ = torch.linalg.qr(torch.randn(D, d, generator=g, dtype=f64))
            self.register_buffer("matrix", q.to(dtype), persistent=False)
        elif kind == "sparse":
            k = max(1, min(D, round(math.sqrt(D))))
            rows = torch.randint(0, D, (d, k), generator=g)
            vals = (2 * torch.randint(0, 2, (d, k), generator=g) - 1).to(f64)
            cols = torch.arange(d).repeat_interleave(k)
            # Merge repeated rows within a column so the column norm is exact.
            keys, inv = torch.unique(cols * D + rows.flatten(), return_inverse=True)
            merged = torch.zeros(len(keys), dtype=f64).index_add_(0, inv, vals.flatten())
            keep = merged != 0
            keys, merged = keys[keep], merged[keep]
            c, r = keys // D, keys % D
            norms = torch.zeros(d, dtype=f64).index_add_(0, c, merged.square()).sqrt()
            if bool((norms == 0).any()):  # every entry of a column cancelled: astronomically rare
                raise RuntimeError("a sparse projection column is empty: use another seed")
            self.register_buffer("rows", r, persistent=False)
            self.register_buffer("cols", c, persistent=False)
            self.register_buffer("values", (merged / norms[c]).to(dtype), persistent=False)
        else:
            n = 1 << (d - 1).bit_length()
            blocks = math.ceil(D / n)
            self.n = n
            signs = (2 * torch.randint(0, 2, (blocks, n), generator=g) - 1).to(dtype)
            self.register_buffer("signs", signs, persistent=False)
            self.register_buffer("perm", torch.argsort(torch.rand(blocks, n, generator=g), dim=1), persistent=False)
            gauss = torch.randn(blocks, n, generator=g, dtype=f64)
            # Block j is scaled by 1/(√n ‖G_j‖ √blocks): each column then has unit norm over all blocks.
            scale = 1.0 / (math.sqrt(n * blocks) * gauss.norm(dim=1, keepdim=True))
            self.register_buffer("gauss", (gauss * scale).to(dtype), persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
        saved = state_dict.get(prefix + "spec")
        if saved is not None and not torch.equal(saved.cpu(), self.spec.cpu()):
            D, d, k, seed = saved.tolist()
            error_msgs = args[-1]
            error_msgs.append(
                f"the saved random projection has (D, d, kind, seed) = ({D}, {d}, {KINDS[k]!r}, {seed}) but this "
                f"one has ({self.D}, {self.d}, {self.kind!r}, {int(self.spec[3])}): rebuild it with the same "
                "dim, kind and seed"
            )
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, w: Tensor) -> Tensor:
        """``M w``: ``[d] → [D]``."""
        if w.shape != (self.d,):
            raise ValueError(f"w must have shape ({self.d},), got {tuple(w.shape)}")
        if self.kind == "dense":
            return self.matrix @ w
        if self.kind == "sparse":
            out = torch.zeros(self.D, dtype=w.dtype, device=w.device)
            return out.index_add(0, self.rows, self.values * w[self.cols])
        x = torch.cat([w, w.new_zeros(self.n - self.d)])
        h = fwht(self.signs * x)  # H B x, every block at once: [blocks, n]
        h = torch.gather(h, 1, self.perm)  # Π
        return fwht(self.gauss * h).reshape(-1)[: self.D]  # H G (scaled)

    def dense(self) -> Tensor:
        """The matrix ``M`` as ``[D, d]`` (d products for the structured kinds: small D only)."""
        if self.kind == "dense":
            return self.matrix
        eye = torch.eye(self.d, dtype=self._dtype(), device=self._device())
        return torch.stack([self(e) for e in eye], dim=1)

    def _dtype(self) -> torch.dtype:
        return next(b for b in self.buffers() if b.is_floating_point()).dtype

    def _device(self) -> torch.device:
        return next(self.buffers()).device

    def extra_repr(self) -> str:  # noqa: D102
        return f"D={self.D}, d={self.d}, kind={self.kind!r}"


class SubspaceModel(nn.Module):
    """A network evaluated at ``θ₀ + M w``, with ``w ∈ R^d`` (initially 0) its only trainable parameter.

    Args:
        model: the network; deep-copied, so the original is never modified. Its trainable
            parameters at construction are ``θ₀`` (in ``named_parameters`` order).
        dim: subspace dimension ``d``.
        kind: projection kind (see :class:`RandomProjection`).
        seed: seed of the projection.

    Attributes:
        base: the frozen copy holding ``θ₀`` (and the buffers, e.g. BatchNorm statistics).
        projection: the :class:`RandomProjection` ``M``.
        w: the trainable coordinates ``[d]``.
    """

    def __init__(self, model: nn.Module, dim: int, *, kind: str = "auto", seed: int = 0) -> None:
        super().__init__()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("the model has no trainable parameters to span the subspace")
        self.base = copy.deepcopy(model)
        self.base.requires_grad_(False)
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        dtype, device = named[0][1].dtype, named[0][1].device
        self.projection = RandomProjection(sum(self.numels), dim, kind, seed, dtype).to(device)
        self.w = nn.Parameter(torch.zeros(dim, dtype=dtype, device=device))

    @property
    def num_base_params(self) -> int:
        """``D``, the dimension of the full parameter space."""
        return sum(self.numels)

    def theta0(self) -> Tensor:
        """``θ₀`` as a flat vector ``[D]``."""
        base = dict(self.base.named_parameters())
        return torch.cat([base[n].reshape(-1) for n in self.names])

    def theta(self) -> Tensor:
        """``θ₀ + M w`` as a flat vector ``[D]`` (differentiable in ``w``)."""
        return self.theta0() + self.projection(self.w)

    def _params(self) -> dict[str, Tensor]:
        chunks = torch.split(self.theta(), self.numels)
        return {n: c.view(s) for n, c, s in zip(self.names, chunks, self.shapes)}

    def forward(self, *args, **kwargs):
        """The network's output at ``θ₀ + M w``."""
        # Only the chosen parameters are replaced; buffers stay the base copy's own tensors.
        return functional_call(self.base, self._params(), args, kwargs, strict=False)

    @torch.no_grad()
    def materialize(self) -> nn.Module:
        """A standalone copy of the network with ``θ₀ + M w`` loaded (trainable again)."""
        out = copy.deepcopy(self.base)
        params = dict(out.named_parameters())
        for n, v in self._params().items():
            params[n].copy_(v)
        for n in self.names:
            params[n].requires_grad_(True)
        return out


def train_subspace(
    model: nn.Module,
    data,
    dim: int,
    config: TrainConfig,
    *,
    kind: str = "auto",
    seed: int = 0,
    **train_kwargs,
) -> tuple[SubspaceModel, TrainHistory]:
    """Train ``model`` inside a random ``dim``-dimensional affine subspace through its parameters.

    Args:
        model: the network at ``θ₀`` (not modified).
        data: training set (as for :func:`~curvscope.train.train`).
        dim: subspace dimension ``d``.
        config: hyperparameters (Li et al. use Adam or SGD as for the full model).
        kind: projection kind.
        seed: projection seed (the config's seed drives shuffling).
        **train_kwargs: passed to :func:`~curvscope.train.train` (``out_dir``, ``eval_data``, …).

    Returns:
        ``(subspace_model, history)``; ``subspace_model.materialize()`` gives the trained network.
    """
    sub = SubspaceModel(model, dim, kind=kind, seed=seed)
    return sub, train(sub, data, config, **train_kwargs)
