"""The data loop shared by every curvature operator.

A curvature operator is ``(1/N) Σ_b P_b`` where ``P_b`` is the product of batch ``b``'s
*summed* loss (see :mod:`curvscope.operators.problem`). Subclasses implement
``_batch_product(inputs, targets, n, V)`` for a block of tangents ``V`` (a dict of
``[K, *shape]`` leaves) and return the same structure. This module adds:

- one pass over the data per block product, however many vectors the block has
  (blocks wider than ``max_block`` are chunked inside the pass);
- ``torch.func.vmap`` over the block, falling back to a loop over vectors when the model
  cannot be vmapped, and to plain autograd (reverse-over-reverse) where ``torch.func``
  fails (torch 2.13 raises "ZeroTensors are immutable" for ``jvp(grad)`` through
  ``F.mse_loss``) — decided once per operator;
- the determinism probe: the first product is recomputed for one vector and must agree,
  else an error names the usual causes (dropout, train-mode BatchNorm, augmentation);
- retained first-order graphs (operators that define ``_gradient_graph``, the Hessian):
  the graph of ``∇ℓ_b`` built with ``create_graph=True`` is kept per batch, so a later
  product is one backward through it instead of forward + backward + double backward
  (PyHessian's trick; ``benchmarks/eigen.py`` measured 1.8× fewer CPU seconds per HVP on a
  301k-parameter MLP, 1.25× on a 1M-parameter CNN). Kept only for a fixed list of batches whose graphs fit in
  ``GRAPH_CACHE_FRACTION`` of the free memory, and only after the determinism probe.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import vmap

from curvscope.distributed.comm import all_reduce_sum, is_distributed
from curvscope.memory import available_bytes, check_budget, fmt_bytes
from curvscope.operators.base import LinearOperator
from curvscope.operators.problem import Batch, LossProblem

logger = logging.getLogger("curvscope")

#: Activation copies a per-vector product holds (primal, tangent, cotangent); a stated estimate.
ACTIVATION_COPIES = 3
#: Share of the available memory a block product may use for activations.
MEMORY_FRACTION = 0.9
#: Share of the available memory the retained gradient graphs of all batches may use.
GRAPH_CACHE_FRACTION = 0.25
#: Strategies that reuse a retained gradient graph (one vector at a time, or batched).
CACHED = ("cached", "cached_batched")

TangentDict = dict[str, Tensor]


class NondeterministicProductError(RuntimeError):
    """Two products with the same vector disagreed."""


class CurvatureOperator(LinearOperator):
    """Base class: a curvature matrix of the mean loss over a dataset, applied matrix-free.

    Args:
        model: ``nn.Module`` or functional ``f(params, inputs)``; see :class:`LossProblem`.
        loss_fn: ``loss_fn(outputs, targets)`` returning the batch mean (or sum with
            ``loss_reduction="sum"``).
        data: re-iterable of batches (list of ``(x, y)``, DataLoader, dict batches).
        params: ``None`` (all trainable), names / glob patterns, or a dict for a
            functional model.
        mode: ``"eval"`` (default), ``"train"`` or ``"as_is"``.
        dtype, device: compute dtype/device (default: the parameters').
        max_block: the largest number of vectors pushed through the model at once.
        probe: run the determinism probe on the first product (default ``True``).
        strategy: how a batch's block product is computed: ``"vmap"`` (torch.func over the
            block), ``"loop"`` (torch.func, one vector at a time), ``"autograd"`` (double
            backward, where the operator has it), ``"cached"`` / ``"cached_batched"`` (one
            backward through the retained gradient graph, per vector or batched; needs
            ``cache_graphs``) or ``"auto"`` (default: time the working ones on the first
            batch and keep the fastest).
        cache_graphs: keep each batch's gradient graph between products (operators with a
            double-backward form). ``None`` (default): when ``data`` is a list or tuple and
            the graphs of all batches, estimated as 3× the measured activations, fit in
            ``GRAPH_CACHE_FRACTION`` of the free memory. The operator's parameters are a
            snapshot taken at construction, so the graphs stay valid.
        distributed: sum products over the ranks of the default process group, each rank
            holding a shard of the data (default: when ``torch.distributed`` is initialised
            with more than one process). See :mod:`curvscope.distributed`.
        allow_tf32: let CUDA matmuls/convolutions use TF32 inside products (default off:
            TF32 keeps 10 mantissa bits, ~1e-3 relative error, too coarse for eigenvalue
            certificates). The global flags are restored after each product.
        **problem_kwargs: forwarded to :class:`LossProblem` (``loss_reduction``,
            ``move_batches``, ``input_keys``, ``check_data``).
    """

    def __init__(
        self,
        model: nn.Module | Callable,
        loss_fn: Callable,
        data: Iterable[Batch],
        params: str | Sequence[str] | Mapping[str, Tensor] | None = None,
        *,
        mode: str = "eval",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        max_block: int = 32,
        probe: bool = True,
        strategy: str = "auto",
        distributed: bool | None = None,
        allow_tf32: bool = False,
        problem: LossProblem | None = None,
        cache_graphs: bool | None = None,
        **problem_kwargs: Any,
    ) -> None:
        if problem is None:
            problem = LossProblem(model, loss_fn, data, params, mode=mode, dtype=dtype, device=device, **problem_kwargs)
        self.problem = problem
        super().__init__(problem.num_params, problem.dtype, problem.device)
        if max_block < 1:
            raise ValueError(f"max_block must be >= 1, got {max_block}")
        self.max_block = int(max_block)
        self._probe_pending = probe
        self._probing = False  # True while the determinism probe recomputes a product
        self._graphs: dict[int, tuple[TangentDict, list[Tensor], list[str], list[int]]] = {}
        self.cache_graphs = self._graph_cache_fits() if cache_graphs is None else bool(cache_graphs)
        if self.cache_graphs and not self._has_graph():
            raise ValueError(f"{type(self).__name__} has no gradient graph to cache; pass cache_graphs=False")
        if strategy not in ("auto", *self._strategies()):
            raise ValueError(f"strategy must be 'auto' or one of {self._strategies()}, got {strategy!r}")
        self.strategy = strategy
        self.distributed = is_distributed() if distributed is None else bool(distributed)
        self.allow_tf32 = bool(allow_tf32)
        self._strategy_order = self._strategies()
        self._chosen: dict[str, str] = {}

    @classmethod
    def from_problem(cls, problem: LossProblem, **kwargs: Any) -> CurvatureOperator:
        """Build on an existing :class:`LossProblem` (no second validation pass)."""
        return cls(None, None, None, problem=problem, **kwargs)

    # -------------------------------------------------------------- subclass hooks
    def _batch_setup(self, inputs: Any, targets: Any, n: int) -> Any:
        """Per-batch work shared by all vectors of a block (a forward pass, a vjp closure)."""
        return None

    def _single_product(self, state: Any, inputs: Any, targets: Any, n: int, v: TangentDict) -> TangentDict:
        """Product of batch ``b``'s summed-loss curvature with one tangent ``v`` (parameter-shaped).

        Must be written with ``torch.func`` transforms only, so the base class can ``vmap`` it
        over a block of tangents.
        """
        raise NotImplementedError

    def _autograd_block(self, inputs: Any, targets: Any, n: int, V: TangentDict) -> TangentDict:
        """Optional last-resort block product with plain autograd (reverse-over-reverse)."""
        raise NotImplementedError

    def _gradient_graph(self, inputs: Any, targets: Any, n: int) -> tuple[dict[str, Tensor], list[Tensor], list[str]]:
        """Optional: ``(leaves, outs, keys)`` with ``product · v = VJP of outs with v[keys]`` w.r.t. leaves.

        Defining it enables the retained-graph strategies (see the module docstring).
        """
        raise NotImplementedError

    # ----------------------------------------------------------------- data loop
    def _has_graph(self) -> bool:
        return type(self)._gradient_graph is not CurvatureOperator._gradient_graph

    def _graph_cache_fits(self) -> bool:
        data = self.problem.data
        if not self._has_graph() or not isinstance(data, (list, tuple)):
            return False  # a loader may yield other samples next pass: a kept graph would hide that
        need = ACTIVATION_COPIES * max(self.problem.activation_bytes, 1) * len(data)
        return need <= GRAPH_CACHE_FRACTION * available_bytes(self.device)

    def _strategies(self) -> list[str]:
        has_autograd = type(self)._autograd_block is not CurvatureOperator._autograd_block
        cached = list(CACHED) if self.cache_graphs else []
        return ["vmap", "loop"] + (["autograd"] if has_autograd else []) + cached

    def _graph(self, index: int, inputs: Any, targets: Any, n: int) -> tuple[TangentDict, list[Tensor], list[str]]:
        """Batch ``index``'s retained gradient graph, built on first use."""
        versions = [t._version for t in self.problem.values.values()]
        entry = self._graphs.get(index)
        if entry is None or entry[3] != versions:  # parameters edited in place: every graph is stale
            if entry is not None:
                self._graphs.clear()
            leaves, outs, keys = self._gradient_graph(inputs, targets, n)
            entry = (leaves, outs, keys, versions)
            self._graphs[index] = entry
        return entry[0], entry[1], entry[2]

    def chosen_strategy(self, width: int = 1) -> str | None:
        """The strategy calibration picked for products of ``width`` vectors (``None`` before any)."""
        kind = "block" if width > 1 else "single"
        return self._chosen.get(f"{kind}+cached", self._chosen.get(kind))

    def clear_graph_cache(self) -> None:
        """Release the retained gradient graphs (they are rebuilt on the next product)."""
        self._graphs.clear()

    def _apply_cached(self, strategy: str, index: int, inputs: Any, targets: Any, n: int, V: TangentDict):
        leaves, outs, keys = self._graph(index, inputs, targets, n)
        return graph_vjp(leaves, outs, keys, V, batched=strategy == "cached_batched", retain=True)

    def _apply(self, strategy: str, inputs: Any, targets: Any, n: int, V: TangentDict, index: int) -> TangentDict:
        if strategy in CACHED:
            return self._apply_cached(strategy, index, inputs, targets, n, V)
        if strategy == "autograd":
            return self._autograd_block(inputs, targets, n, V)
        state = self._batch_setup(inputs, targets, n)
        if strategy == "vmap":
            return vmap(lambda v: self._single_product(state, inputs, targets, n, v))(V)
        K = next(iter(V.values())).shape[0]
        outs = [self._single_product(state, inputs, targets, n, {k: v[i] for k, v in V.items()}) for i in range(K)]
        return {k: torch.stack([o[k] for o in outs]) for k in outs[0]}

    def _run_block(self, inputs: Any, targets: Any, n: int, V: TangentDict, index: int) -> TangentDict:
        """One batch's product, by the fastest strategy that works for this operator.

        Which of vmap / loop / autograd is fastest depends on the model (vmap wins on
        MLPs, loses badly on convolutions; torch.func loses to double backward on some
        models), so the first product of each kind (one vector, a block) times every
        working candidate on its first batch and keeps the fastest. A strategy that raises
        (a model that cannot be vmapped; torch 2.13's jvp(grad) through F.mse_loss) is
        dropped for good. Retained graphs are built untimed (they are paid once) and only
        after the determinism probe has passed, so a random model is still caught.
        """
        K = next(iter(V.values())).shape[0]
        candidates = [s for s in self._strategy_order if not (s in ("vmap", "cached_batched") and K == 1)]
        if self._probe_pending or self._probing:
            candidates = [s for s in candidates if s not in CACHED] or candidates
        # calibrated again once retained graphs become available (after the probe)
        kind = ("block" if K > 1 else "single") + ("+cached" if any(s in CACHED for s in candidates) else "")
        if self.strategy != "auto":
            candidates = [self.strategy] if self.strategy in candidates else candidates[-1:]
        chosen = self._chosen.get(kind)
        if chosen in candidates:
            candidates = [chosen] + [c for c in candidates if c != chosen]
        calibrate = chosen is None and len(candidates) > 1
        result, timings, errors = None, {}, []
        for strategy in candidates:
            try:
                if strategy in CACHED:
                    self._graph(index, inputs, targets, n)
                t0 = time.perf_counter()
                out = self._apply(strategy, inputs, targets, n, V, index)
            except Exception as err:
                errors.append(err)
                logger.info("%s: %s products failed (%s)", type(self).__name__, strategy, err)
                self._strategy_order.remove(strategy)
                continue
            timings[strategy] = time.perf_counter() - t0
            result = out if result is None else result
            if not calibrate:
                break
        if result is None:
            raise errors[-1]
        if chosen is None or chosen not in timings:
            self._chosen[kind] = min(timings, key=timings.get)
            logger.info("%s: %s products by %s (timings %s)", type(self).__name__, kind, self._chosen[kind], timings)
        return result

    def _matmat(self, X: Tensor) -> Tensor:
        with tf32_disabled(self.device, self.allow_tf32):
            return self._matmat_exact(X)

    def _matmat_exact(self, X: Tensor) -> Tensor:
        Y = self._pass(X)
        if self._probe_pending:
            self._probe_pending = False
            self._check_determinism(X[:, :1], Y[:, :1])
        return Y

    def _block_width(self, K: int) -> int:
        """Vectors per chunk: ``max_block``, fewer if their activations would not fit in memory."""
        # A vmapped product keeps about primal + tangent + cotangent copies of the activations per vector.
        per_vector = ACTIVATION_COPIES * max(self.problem.activation_bytes, 1)
        limit = int(MEMORY_FRACTION * available_bytes(self.device))
        if per_vector > limit:
            check_budget(
                per_vector,
                f"one curvature product on a batch (activations {fmt_bytes(self.problem.activation_bytes)})",
                ["a smaller batch size", "dtype=torch.float32", "a smaller model or params=[a subset]"],
                self.device,
                budget=limit,
            )
        return max(1, min(self.max_block, K, limit // per_vector))

    def _pass(self, X: Tensor) -> Tensor:
        problem = self.problem
        width = self._block_width(X.shape[1])
        chunks = [problem.unflatten(X[:, s : s + width]) for s in range(0, X.shape[1], width)]
        out = torch.zeros_like(X)
        total = 0
        for index, batch in problem.batches():
            inputs, targets = problem.split(batch)
            n = problem.batch_size(batch)
            total += n
            start = 0
            for V in chunks:
                K = next(iter(V.values())).shape[0]
                out[:, start : start + K] += problem.flatten(self._run_block(inputs, targets, n, V, index))
                start += K
        return out / self._reduce(out, total)

    def _reduce(self, out: Tensor, total: int) -> float:
        """Sum the shard's product and sample count over ranks (no-op in one process)."""
        if self.distributed:
            count = torch.tensor([float(total)], dtype=torch.float64, device=out.device)
            all_reduce_sum(out)
            total = all_reduce_sum(count).item()
        if total == 0:
            raise ValueError("data is empty: it yielded no batch")
        return total

    def _check_determinism(self, x: Tensor, y_first: Tensor) -> None:
        self._probing = True
        try:
            y_again = self._pass(x)
        finally:
            self._probing = False
        scale = y_first.norm().item()
        diff = (y_again - y_first).norm().item()
        rtol = 1e-4 if self.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-9
        if diff > rtol * max(scale, torch.finfo(self.dtype).tiny):
            raise NondeterministicProductError(
                f"{type(self).__name__}: the same product computed twice differs by "
                f"{diff / max(scale, 1e-300):.2e} (relative). The curvature is not a fixed matrix. Likely "
                f"causes: dropout active (use mode='eval'), BatchNorm in train mode (use mode='eval'), "
                f"random data augmentation or a loader that draws new samples (use a fixed dataset), or "
                f"a model with randomness in forward. Pass probe=False only if you accept this."
            )

    # ------------------------------------------------------------------ helpers
    def gradient(self) -> Tensor:
        """Gradient of the mean loss over the dataset (all ranks' shards), flat ``[D]``."""
        return full_gradient(self.problem, distributed=self.distributed)

    @property
    def num_samples(self) -> int:
        """``N``, over all ranks' shards."""
        n = torch.tensor([float(self.problem.num_samples)], dtype=torch.float64)
        return int(all_reduce_sum(n).item()) if self.distributed else self.problem.num_samples


@contextlib.contextmanager
def tf32_disabled(device: torch.device, allow: bool) -> Iterator[None]:
    """On CUDA, switch TF32 off for the duration (unless ``allow``), then restore the flags."""
    if device.type != "cuda" or allow:
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def gradient_graph(fn: Callable[[TangentDict], Tensor], values: TangentDict):
    """``(leaves, grads, keys)``: ``∇fn`` at ``values`` with its graph kept (``create_graph=True``).

    ``grads`` holds only the gradients that depend on the parameters; ``keys`` names them.
    """
    with torch.enable_grad():
        leaves = {k: t.detach().requires_grad_(True) for k, t in values.items()}
        names = list(leaves)
        grads = torch.autograd.grad(fn(leaves), [leaves[k] for k in names], create_graph=True, allow_unused=True)
    pairs = [(g, k) for g, k in zip(grads, names) if g is not None and g.requires_grad]
    return leaves, [g for g, _ in pairs], [k for _, k in pairs]


def graph_vjp(leaves: TangentDict, outs: list[Tensor], keys: list[str], V: TangentDict, batched: bool, retain: bool):
    """VJPs of ``outs`` with the tangents ``V[keys]`` w.r.t. ``leaves``, for a block ``V`` (leaves ``[K, *shape]``).

    ``batched``: one ``is_grads_batched`` backward (a loop over vectors if it fails);
    ``retain``: keep the graph for later products.
    """
    names = list(leaves)
    zero = {k: torch.zeros_like(V[k]) for k in names}
    if not outs:
        return zero
    inputs = [leaves[k] for k in names]
    res = None
    if batched:
        try:
            res = torch.autograd.grad(
                outs, inputs, [V[k] for k in keys], retain_graph=retain, is_grads_batched=True, allow_unused=True
            )
        except RuntimeError:
            res = None
    if res is None:
        K = next(iter(V.values())).shape[0]
        cols = []
        for i in range(K):
            keep, tangents = retain or i < K - 1, [V[k][i] for k in keys]
            cols.append(torch.autograd.grad(outs, inputs, tangents, retain_graph=keep, allow_unused=True))
        res = [None if c[0] is None else torch.stack(c) for c in zip(*cols)]
    return {k: (zero[k] if r is None else r.detach()) for k, r in zip(names, res)}


def reverse_over_reverse(fn: Callable[[TangentDict], Tensor], values: TangentDict, V: TangentDict) -> TangentDict:
    """``∇²fn · V`` for a block ``V`` (leaves ``[K, *shape]``) by autograd double backward."""
    leaves, outs, keys = gradient_graph(fn, values)
    return graph_vjp(leaves, outs, keys, V, batched=True, retain=False)


def full_gradient(problem: LossProblem, distributed: bool = False) -> Tensor:
    """``∇L(θ) = (1/N) Σ_b ∇(Σ_{i∈b} ℓ_i)``, flat ``[D]`` (summed over ranks when ``distributed``)."""
    from torch.func import grad

    total = 0
    out = torch.zeros(problem.num_params, dtype=problem.dtype, device=problem.device)
    for _, batch in problem.batches():
        inputs, targets = problem.split(batch)
        n = problem.batch_size(batch)
        g = grad(problem.loss_of_params(inputs, targets, n))(problem.values)
        out += problem.flatten(g)
        total += n
    if distributed:
        count = torch.tensor([float(total)], dtype=torch.float64)
        all_reduce_sum(out)
        total = all_reduce_sum(count).item()
    return out / total
