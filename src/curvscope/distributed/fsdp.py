"""Curvature of a model sharded with FSDP2 (``fully_shard``), with Krylov vectors sharded like it.

Each rank holds its shard of every parameter (``p.to_local()``: rows of dim 0, uneven at the end)
and its own batches. A vector of the operator is the flat concatenation of this rank's parameter
shards, ``[d_local]``, so a Krylov basis of ``n`` vectors costs ``n · D / W`` numbers per rank.
The operator's :attr:`ShardedCurvature.space` (:class:`~curvscope.linalg.space.ShardedSpace`)
sums inner products over the ranks, so ``eigsh``, ``lanczos`` and ``spectral_density`` run
unchanged and every rank obtains the same Ritz values, weights and residuals.

Products (``method``):

- ``"fd"``: central difference of the model's own sharded gradients,
  ``(∇L(θ + h v) − ∇L(θ − h v)) / 2h``: the local shards are moved to ``θ ± h v`` in place,
  ``loss.backward()`` fills the sharded ``p.grad`` through FSDP's reduce-scatter, and the shards
  are restored bit for bit from a copy. (``torch.autograd.grad`` with respect to FSDP2's sharded
  parameters does not work; ``backward`` does.) The step is the single-process rule
  (:func:`~curvscope.operators.finite_difference.fd_step`, on the global RMS of θ) and the error is
  estimated once as there, ``‖D(h) − D(2h)‖ / 3‖D(h)‖`` (:attr:`ShardedCurvature.fd_error`).
  Memory: the model's own (sharded) training footprint plus one copy of the local shards.
- ``"exact"``: every rank gathers the full parameters once into a plain (non-FSDP) replica and
  builds the data-parallel :class:`~curvscope.operators.Hessian` (or GGN) on it; a product
  all-gathers the vector, multiplies (the data-parallel operator sums over ranks) and keeps this
  rank's rows. Exact to round-off, but each rank holds the whole model and its product graph:
  the bytes are estimated, recorded (:attr:`ShardedCurvature.exact_bytes`) and refused above
  the budget with an error naming ``method="fd"``.
- ``"auto"``: exact when it fits on every rank, else fd (logged).

Weighting: the product is the curvature of the mean loss over all units (samples or tokens) of
all ranks' batches. FSDP's reduce-scatter averages gradients over the ``W`` ranks, so each rank's
loss is scaled by ``W / N_total``; ranks with fewer batches run weight-zero passes so that every
rank makes the same number of collectives.

Failure: a rank that dies leaves the others waiting in a collective (FSDP's all-gather or
reduce-scatter, or an inner product) until the process group's timeout
(``init_process_group(timeout=...)``; under ``curvscope analyze`` ``init_from_environment``'s);
then every survivor raises :class:`~curvscope.distributed.comm.DistributedError` saying another
rank probably died.

``sketched_eigh`` (all four methods, in RAM) runs on sharded vectors too: test matrices are
regenerated at each rank's coordinates and its small Gram matrices are summed over the ranks.
So do XTrace/XDiag (``trace``/``diagonal``; their QR is Gram–Schmidt twice, reduced over ranks)
and ``deflated_density``. Not covered yet: block stores and solver checkpoints refuse a sharded
operator with an error saying so. The overlap metrics of :mod:`curvscope.metrics`
take each rank's rows with ``space=A.space``; for anything that needs whole vectors, gather
them with :func:`gather_vectors`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from curvscope.distributed.comm import DistributedError, agree_on_errors, all_reduce_sum
from curvscope.linalg.space import ShardedSpace
from curvscope.memory import available_bytes, fmt_bytes

logger = logging.getLogger(__name__)

METHODS = ("auto", "exact", "fd")
KINDS = ("hessian", "ggn")


def _fsdp_params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The trainable DTensor parameters of an FSDP2 model, in ``named_parameters`` order."""
    from torch.distributed.tensor import DTensor

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    plain = [n for n, p in named if not isinstance(p, DTensor)]
    if plain or not named:
        raise TypeError(
            f"ShardedCurvature needs a model wrapped with torch.distributed.fsdp.fully_shard (FSDP2): "
            f"{'no trainable parameters' if not named else f'parameters {plain[:3]} are not sharded DTensors'}. "
            f"Call fully_shard on the blocks and the root first, or use Hessian(..., distributed=True)."
        )
    return named


def shard_index(params: Sequence[tuple[str, Tensor]], rank: int, world: int) -> Tensor:
    """Global flat coordinates of this rank's shards (``fully_shard`` splits dim 0 like ``torch.chunk``)."""
    pieces, offset = [], 0
    for name, p in params:
        rows, numel = p.shape[0] if p.ndim else 1, p.numel()
        chunk = math.ceil(rows / world)
        r0, r1 = min(rank * chunk, rows), min((rank + 1) * chunk, rows)
        local = p.to_local()
        got = local.shape[0] if local.ndim else 1
        if got != r1 - r0:
            raise ValueError(f"{name}: local shard has {tuple(local.shape)}, expected rows {r0}:{r1} of {rows}")
        width = numel // max(rows, 1)
        pieces.append(torch.arange(offset + r0 * width, offset + r1 * width))
        offset += numel
    return torch.cat(pieces)


def plain_replica(model: nn.Module) -> nn.Module:
    """A plain ``nn.Module`` copy of an FSDP2 model with full parameters (an all-gather per parameter).

    Module classes are restored to their pre-``fully_shard`` class and FSDP's hooks are dropped; tied
    parameters stay tied; other attributes (configs) are shared with the original, not copied.
    """
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    memo: dict[int, Any] = {}

    def full(t: Tensor | None, param: bool) -> Any:
        if t is None:
            return None
        if id(t) not in memo:
            data = t.full_tensor() if isinstance(t, DTensor) else t
            data = data.detach().clone()
            memo[id(t)] = nn.Parameter(data, requires_grad=t.requires_grad) if param else data
        return memo[id(t)]

    def copy(m: nn.Module) -> nn.Module:
        cls = type(m)
        if isinstance(m, FSDPModule):
            cls = next(b for b in cls.__bases__ if not issubclass(b, FSDPModule))
        new = object.__new__(cls)
        new.__dict__.update(m.__dict__)
        new._parameters = {k: full(p, True) for k, p in m._parameters.items()}
        new._buffers = {k: full(b, False) for k, b in m._buffers.items()}
        new._modules = {k: None if c is None else copy(c) for k, c in m._modules.items()}
        if isinstance(m, FSDPModule):  # FSDP's all-gather / reshard hooks
            for hooks in ("_forward_pre_hooks", "_forward_hooks", "_forward_pre_hooks_with_kwargs",
                          "_forward_hooks_with_kwargs", "_forward_hooks_always_called"):  # fmt: skip
                setattr(new, hooks, type(getattr(m, hooks))())
        for attr in ("_is_fsdp_managed_module", "_fsdp_use_orig_params"):
            new.__dict__.pop(attr, None)
        return new

    return copy(model)


class _Batches:
    """This rank's batches: the forward pass, the loss and the units, as :class:`LossProblem` reads them."""

    def __init__(self, model: nn.Module, loss_fn: Callable | None, data: Sequence, units: Any) -> None:
        from curvscope.integrations import hf
        from curvscope.operators.losses import resolve_loss

        self.model, self.data = model, list(data)
        self.loss = resolve_loss(model, loss_fn, units)
        self.kwargs = hf.forward_kwargs(model) if hf.is_hf_model(model) else {}
        if not self.data:
            raise ValueError("data is empty: this rank has no batch (every rank needs at least one)")
        self.units = [self.count(b) for b in self.data]

    def split(self, batch: Any) -> tuple[Any, Any]:
        if isinstance(batch, Mapping):
            keep = self.loss.labels_to_model
            return {k: v for k, v in batch.items() if keep or k not in ("labels", "label")}, batch
        return (batch[0] if len(batch) == 2 else tuple(batch[:-1])), batch[-1]

    def count(self, batch: Any) -> int:
        if self.loss.unit_name != "samples":
            return int(self.loss.units(batch))
        inputs, _ = self.split(batch)
        first = next(iter(inputs.values())) if isinstance(inputs, Mapping) else inputs
        return int((first[0] if isinstance(first, tuple) else first).shape[0])

    def sum_loss(self, index: int) -> Tensor:
        """``Σ_{i∈b} ℓ_i`` of batch ``index`` (the loss is the mean over its units)."""
        batch = self.data[index]
        inputs, targets = self.split(batch)
        if isinstance(inputs, Mapping):
            out = self.model(**inputs, **self.kwargs)
        else:
            out = self.model(*(inputs if isinstance(inputs, tuple) else (inputs,)), **self.kwargs)
        return self.loss.loss_fn(self.loss.output_map(out), targets) * self.units[index]


class ShardedCurvature:
    """The Hessian (or GGN) of the mean loss of an FSDP2-sharded model, on sharded vectors.

    Args:
        model: a module wrapped with ``fully_shard`` (blocks and root) in an initialised process group.
        loss_fn: ``loss_fn(outputs, targets)``, the mean over a batch's units; ``None``: the model's
            own loss (HuggingFace).
        data: this rank's batches (a list; ranks may hold different numbers of batches and units).
        method: ``"auto"`` (exact when the replica fits on every rank, else fd), ``"exact"`` or ``"fd"``.
        kind: ``"hessian"`` or ``"ggn"`` (the GGN has only the exact product).
        memory_budget: bytes the exact replica and its product graph may use on this rank (default:
            90% of the available memory divided by the ranks sharing this host).
        mode: train/eval policy of the passes (``"eval"`` default; flags restored afterwards).
        units: loss units (``"auto"``, ``"samples"``, ``"tokens"`` or a callable), as :class:`LossProblem`.
        **exact_kwargs: forwarded to the exact operator (``max_block``, ``strategy``, ...).

    Attributes:
        space: the :class:`~curvscope.linalg.space.ShardedSpace` of the vectors.
        method: the product actually used (``"exact"`` or ``"fd"``).
        exact_bytes: estimated bytes of the exact replica and product on this rank.
        shape: ``(D, D)`` global; ``A @ X`` takes and returns this rank's rows ``[d_local, K]``.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable | None, data: Sequence, *, method: str = "auto",
                 kind: str = "hessian", memory_budget: int | None = None, mode: str = "eval",
                 units: Any = "auto", **exact_kwargs: Any) -> None:  # fmt: skip
        if method not in METHODS or kind not in KINDS:
            raise ValueError(f"method must be one of {METHODS} and kind one of {KINDS}, got {method!r}, {kind!r}")
        if kind == "ggn" and method == "fd":
            raise ValueError("the finite-difference product is of the Hessian: use kind='hessian' or method='exact'")
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("ShardedCurvature needs an initialised process group (torchrun + init_process_group)")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.model, self.mode, self.kind = model, mode, kind
        self.params = agree_on_errors(lambda: _fsdp_params(model), True, "ShardedCurvature parameter checks")
        self.batches = agree_on_errors(
            lambda: _Batches(model, loss_fn, data, units), True, "ShardedCurvature input checks"
        )
        D = sum(p.numel() for _, p in self.params)
        self.space = ShardedSpace(D, shard_index(self.params, self.rank, self.world))
        first = self.params[0][1]
        self.shape, self.dtype, self.device = (D, D), first.dtype, first.to_local().device
        counts = torch.tensor([float(sum(self.batches.units)), float(len(self.batches.data))], dtype=torch.float64)
        self.total_units = all_reduce_sum(counts[:1].clone()).item()
        self.max_batches = int(_all_max(counts[1:].clone()).item())
        exact_kwargs.setdefault("max_block", 4)  # full [D, K] vectors per product: K bounded, and estimated
        self.block = int(exact_kwargs["max_block"])
        self.exact_bytes = self._exact_estimate(self.block)
        self.memory_budget = _default_budget(self.device) if memory_budget is None else int(memory_budget)
        self.method = self._choose(method)
        self._fd_error: float | None = None
        self._exact = None
        if self.method == "exact":
            self._exact = self._build_exact(loss_fn, data, units, exact_kwargs, fallback=method == "auto")
            self.method = "fd" if self._exact is None else "exact"

    # ------------------------------------------------------------------ choice
    def _exact_estimate(self, block: int) -> int:
        """Replica parameters, the operator's copy of them, and the full vectors of one block product."""
        item = torch.empty((), dtype=self.dtype).element_size()
        return self.shape[0] * item * (2 + 2 * int(block))

    def _choose(self, method: str) -> str:
        fits = self.exact_bytes <= self.memory_budget
        every = bool(_all_max(torch.tensor([0.0 if fits else 1.0])).item() == 0.0)  # the same choice on every rank
        if method == "exact" and not every:
            raise MemoryError(
                f"method='exact' keeps an unsharded replica on every rank: {fmt_bytes(self.exact_bytes)} on "
                f"this rank, over the budget {fmt_bytes(self.memory_budget)} on at least one rank. Use method='fd' "
                f"(finite differences of the sharded gradients), or raise memory_budget."
            )
        if method == "auto":
            method = "exact" if every else "fd"
            logger.info("curvscope: sharded %s products: %s (exact needs %s per rank, budget %s)", self.kind,
                        method, fmt_bytes(self.exact_bytes), fmt_bytes(self.memory_budget))  # fmt: skip
        return method

    def _build_exact(self, loss_fn, data, units, kwargs: dict, fallback: bool) -> Any:
        """The data-parallel operator on a plain replica; ``None`` (auto) or an error when its graph does not fit."""
        from curvscope.operators import GGN, Hessian

        replica = plain_replica(self.model)
        cls = Hessian if self.kind == "hessian" else GGN
        op = cls(replica, loss_fn, list(data), mode=self.mode, distributed=True, units=units, **kwargs)
        graph = 3 * op.problem.activation_bytes  # the activation copies of one product (as the operator's guard)
        self.exact_bytes += graph
        over = _all_max(torch.tensor([float(self.exact_bytes > self.memory_budget)])).item()
        if over and fallback:
            logger.info("curvscope: the exact replica's graph (%s) exceeds the budget: fd products",
                        fmt_bytes(self.exact_bytes))  # fmt: skip
            return None
        if over:
            raise MemoryError(
                f"method='exact': the replica and its product graph need {fmt_bytes(self.exact_bytes)} on this "
                f"rank, over the budget {fmt_bytes(self.memory_budget)} on at least one rank: use method='fd'"
            )
        return op

    # ---------------------------------------------------------------- products
    def __matmul__(self, X: Tensor) -> Tensor:
        if not isinstance(X, Tensor) or X.ndim not in (1, 2) or X.shape[0] != self.space.local_dim:
            got = tuple(X.shape) if isinstance(X, Tensor) else type(X).__name__
            raise ValueError(
                f"expected this rank's rows [{self.space.local_dim}] or [{self.space.local_dim}, K], got {got}"
            )
        X2 = X.reshape(X.shape[0], -1).to(self.dtype)
        Y = self._exact_matmat(X2) if self.method == "exact" else self._fd_matmat(X2)
        return Y[:, 0] if X.ndim == 1 else Y

    def _exact_matmat(self, X: Tensor) -> Tensor:
        """Gather ``block`` columns at a time to full vectors, multiply, keep this rank's rows."""
        parts = [X[:, s : s + self.block] for s in range(0, X.shape[1], self.block)]
        return torch.cat([self.space.local(self._exact @ self.space.gather(P)) for P in parts], dim=1)

    def _fd_matmat(self, X: Tensor) -> Tensor:
        if self._fd_error is None:
            self._estimate_fd_error(X[:, 0])
        return torch.stack([self._central(X[:, k], self._step(X[:, k])) for k in range(X.shape[1])], dim=1)

    def _step(self, v: Tensor) -> float:
        """The single-process step rule on the global RMS of θ (summed over the ranks) and the global ``‖v‖``."""
        from curvscope.operators.finite_difference import step_rule

        rms = float(self.space.norm(self._local_params().double())) / math.sqrt(self.space.dim)
        return step_rule(rms, float(self.space.norm(v.double())), self.dtype)

    def _estimate_fd_error(self, v: Tensor) -> float:
        """Richardson's ``‖D(h) − D(2h)‖ / 3‖D(h)‖`` along ``v``; the recorded error is the largest seen."""
        h = self._step(v)
        small, large = self._central(v, h), self._central(v, 2 * h)
        diff, norm = self.space.norm(small - large), self.space.norm(small)
        err = float(diff) / (3 * max(float(norm), torch.finfo(torch.float64).tiny))
        self._fd_error = max(err, self._fd_error or 0.0)
        return err

    def check_fd_error(self, V: Tensor) -> list[float]:
        """Estimate the fd error along the columns of ``V`` ``[d_local, k]`` (e.g. returned eigenvectors).

        The first estimate is along one vector (random, or the first product's); truncation error is
        largest along high-curvature directions, so measure it along the vectors a result rests on.
        Costs 4 gradients per column; raises :attr:`fd_error` (and :attr:`noise_floor`) to the largest.
        Exact products: returns zeros.
        """
        if self.method != "fd":
            return [0.0] * V.reshape(V.shape[0], -1).shape[1]
        return [self._estimate_fd_error(v) for v in V.reshape(V.shape[0], -1).to(self.dtype).T]

    def _central(self, v: Tensor, h: float) -> Tensor:
        return (self._gradient_at(v, h) - self._gradient_at(v, -h)) / (2 * h)

    def _local_params(self) -> Tensor:
        return torch.cat([p.to_local().detach().reshape(-1) for _, p in self.params])

    def _gradient_at(self, v: Tensor | None, h: float) -> Tensor:
        """The sharded gradient of the mean loss at ``θ + h v`` (θ restored bit for bit afterwards)."""
        from curvscope.operators.batches import module_mode

        locals_ = [p.to_local() for _, p in self.params]
        saved = [t.detach().clone() for t in locals_]
        grads = [p.grad for _, p in self.params]  # the user's gradients, put back afterwards
        try:
            with torch.no_grad():
                if v is not None:
                    for t, piece in zip(locals_, v.split([t.numel() for t in locals_])):
                        t.add_(piece.view_as(t), alpha=h)
            for _, p in self.params:
                p.grad = None
            scale = self.world / self.total_units  # undoes the reduce-scatter's average over ranks
            with module_mode(self.model, self.mode), torch.enable_grad():  # callers may run under no_grad
                for i in range(self.max_batches):
                    mine = i < len(self.batches.data)  # a short shard repeats batch 0 with weight 0
                    loss = self.batches.sum_loss(i if mine else 0) * (scale if mine else 0.0)
                    loss.backward()
            out = torch.cat([self._local_grad(p) for _, p in self.params])
        except DistributedError:
            raise
        except RuntimeError as err:
            raise _collective_error(err) from err
        finally:
            with torch.no_grad():
                for t, s in zip(locals_, saved):
                    t.copy_(s)
            for (_, p), g in zip(self.params, grads):
                p.grad = g
        return out

    @staticmethod
    def _local_grad(p: Tensor) -> Tensor:
        g = p.grad
        if g is None:
            return torch.zeros_like(p.to_local()).reshape(-1)
        return (g.to_local() if hasattr(g, "to_local") else g).detach().reshape(-1).clone()

    # ----------------------------------------------------------------- reports
    def gradient(self) -> Tensor:
        """This rank's rows of the gradient of the mean loss over all ranks' units ``[d_local]``."""
        if self._exact is not None:
            return self.space.local(self._exact.gradient())
        return self._gradient_at(None, 0.0)

    @property
    def fd_error(self) -> float | None:
        """Estimated relative error of the fd products (``None`` for exact products)."""
        if self.method == "fd" and self._fd_error is None:
            gen = torch.Generator().manual_seed(0)
            self._estimate_fd_error(self.space.gaussian(1, gen, self.dtype, self.device)[:, 0])
        return self._fd_error

    @property
    def noise_floor(self) -> float:
        """Relative error of a product: the exact operator's measured floor, or the fd error estimate."""
        if self._exact is not None:
            return self._exact.noise_floor
        return max(torch.finfo(self.dtype).eps, self.fd_error or 0.0)

    @property
    def unit_name(self) -> str:
        """The loss units: ``"samples"``, ``"tokens"`` or ``"custom"``."""
        return self.batches.loss.unit_name

    @property
    def num_samples(self) -> int:
        """Loss units over all ranks."""
        return int(self.total_units)


def _all_max(t: Tensor) -> Tensor:
    try:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    except Exception as err:
        raise _collective_error(err) from err
    return t


def _collective_error(err: Exception) -> DistributedError:
    rank = dist.get_rank() if dist.is_initialized() else "?"
    return DistributedError(
        f"rank {rank}: a collective of the sharded curvature product failed ({type(err).__name__}: {err}). "
        f"Another rank probably died or timed out; check its log."
    )


def _default_budget(device: torch.device) -> int:
    sharing = int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size() if device.type == "cpu" else 1))
    return int(0.9 * available_bytes(device) / max(sharing, 1))


def gather_vectors(X: Tensor, space: ShardedSpace, dst: int | None = 0, max_bytes: int | None = None) -> Tensor | None:
    """Whole vectors ``[D, ...]`` from their sharded rows: on rank ``dst`` (others get ``None``), or on all (``None``).

    Refuses (on every rank, before any collective) when ``D · K`` numbers exceed ``max_bytes``
    (default: the memory available on rank ``dst``'s device, checked on each rank).
    """
    nbytes = space.dim * (X[0].numel() if X.ndim > 1 else 1) * X.element_size()
    limit = int(0.9 * available_bytes(X.device)) if max_bytes is None else int(max_bytes)
    if nbytes > limit:
        raise MemoryError(f"gathering {fmt_bytes(nbytes)} of vectors exceeds {fmt_bytes(limit)}: keep them sharded")
    full = torch.zeros((space.dim, *X.shape[1:]), dtype=X.dtype, device=X.device)
    full[space.index.to(X.device)] = X
    if dst is None:
        return all_reduce_sum(full, space.group)
    try:
        dist.reduce(full, dst=dst, op=dist.ReduceOp.SUM, group=space.group)
    except Exception as err:
        raise _collective_error(err) from err
    return full if dist.get_rank() == dst else None


def wrap_fsdp(model: nn.Module) -> nn.Module:
    """``fully_shard`` per block, then the root (in place; returns ``model``).

    Blocks: the entries of the largest ``nn.ModuleList`` (a transformer's layers), or else the
    top-level children that hold parameters. Needs an initialised process group.
    """
    from torch.distributed.fsdp import fully_shard

    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if lists:
        blocks = list(max(lists, key=len))
    else:
        blocks = [c for c in model.children() if any(True for _ in c.parameters())]
    for block in blocks:
        fully_shard(block)
    fully_shard(model)
    return model
