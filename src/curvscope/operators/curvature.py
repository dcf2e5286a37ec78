"""The data loop shared by every curvature operator.

A curvature operator is ``(1/N) Σ_b P_b`` where ``P_b`` is the product of batch ``b``'s *summed*
loss (see :mod:`curvscope.operators.problem`). Subclasses implement ``_single_product`` (a
``torch.func`` product with one tangent, vmappable) and optionally ``_autograd_block`` (double
backward) and ``_gradient_graph`` (a retained graph). The data path of one product, in order:

1. :meth:`CurvatureOperator._matmat` — TF32 off on CUDA; the determinism probe and noise floor
   (:mod:`~curvscope.operators.probe`) once, before the first product;
2. :meth:`CurvatureOperator._pass` — one pass over the data per block, however many vectors (wide
   blocks are chunked inside the pass to fit memory); batch products summed in float64 for
   operators below float64, each batch weighted by its sample count, summed over ranks;
3. :meth:`CurvatureOperator._batch_product` — the strategy (:mod:`~curvscope.operators.strategies`:
   a deterministic rule by default) computes one batch's block, through a retained gradient graph
   (:mod:`~curvscope.operators.graphs`) when one may be kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import vmap

from curvscope.distributed.comm import agree_on_errors, all_reduce_sum, gather_data_fingerprints, is_distributed
from curvscope.memory import available_bytes, check_budget, fmt_bytes
from curvscope.operators.autodiff import (
    TangentDict,
    accumulation_dtype,
    full_gradient,
    gradient_graph,
    graph_vjp,
    reverse_over_reverse,
    tf32_disabled,
)
from curvscope.operators.base import LinearOperator
from curvscope.operators.batches import Batch, _tensor_leaves
from curvscope.operators.compiled import CompiledProduct, check_compile
from curvscope.operators.graphs import ACTIVATION_COPIES, GRAPH_CACHE_FRACTION, GraphCache
from curvscope.operators.probe import NondeterministicProductError, ProbeReport, run_probe
from curvscope.operators.problem import LossProblem
from curvscope.operators.strategies import CACHED, STRATEGIES, ProductError, StrategyChooser, block_width

__all__ = [
    "CACHED",
    "CurvatureOperator",
    "NondeterministicProductError",
    "TangentDict",
    "gradient_graph",
    "graph_vjp",
    "reverse_over_reverse",
]

#: Product methods: exact strategies with finite differences as a last resort, exact only, or finite differences.
METHODS = ("auto", "exact", "fd", "fd_richardson")
#: Share of the available memory a block product may use for activations.
MEMORY_FRACTION = 0.9

_CONVOLUTIONAL = (nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)


def is_convolutional(model: Any) -> bool:
    """Whether the model has convolution or pooling layers (``vmap`` over tangents is slow there)."""
    return isinstance(model, nn.Module) and any(isinstance(m, _CONVOLUTIONAL) for m in model.modules())


class CurvatureOperator(LinearOperator):
    """Base class: a curvature matrix of the mean loss over a dataset, applied matrix-free.

    Args:
        model: ``nn.Module`` or functional ``f(params, inputs)``; see :class:`LossProblem`.
        loss_fn: ``loss_fn(outputs, targets)`` returning the batch mean (or sum with
            ``loss_reduction="sum"``).
        data: re-iterable of batches (list of ``(x, y)``, DataLoader, dict batches).
        params: ``None`` (all trainable), names / glob patterns, or a dict for a functional model.
        mode: ``"eval"`` (default), ``"train"`` or ``"as_is"``.
        dtype: compute dtype of the products (default: the model's for float32/float64, float32
            for bfloat16/float16 models; see :class:`LossProblem`).
        device: compute device (default: the parameters').
        max_block: the largest number of vectors pushed through the model at once.
        probe: check once, before the first product, that the same product computed twice agrees
            (default ``True``); the noise floor is measured either way (:attr:`noise_floor`).
        strategy: how a batch's block product is computed (:mod:`curvscope.operators.strategies`):
            ``"auto"`` (default: a deterministic rule on the model's layers, the block width and
            the device — bitwise-reproducible, no tuning cost), ``"tune"`` (time the candidates on
            the first batch), or one of ``"vmap"``, ``"loop"``, ``"autograd"``, ``"cached"``,
            ``"cached_batched"``, ``"linearize"`` (GGN family). The choices made are in
            :attr:`strategy_record`.
        cache_graphs: keep each batch's gradient graph between products (the Hessian and the
            residual: a double-backward graph; the GGN and gradient moment: the batch's
            linearisation, :mod:`~curvscope.operators.linearised`). ``None`` (default): when
            ``data`` is a list or tuple and the graphs of all batches, estimated as 3× the measured
            activations, fit in a quarter of the free memory. Graphs are rebuilt when a batch or the parameters change.
        distributed: sum products over the ranks of the default process group, each rank holding
            a shard of the data (default: when ``torch.distributed`` is initialised with more than
            one process). Bad input on any rank is raised on every rank before work starts.
        allow_tf32: let CUDA matmuls/convolutions use TF32 inside products (default off: TF32
            keeps 10 mantissa bits, too coarse for eigenvalue certificates). Flags are restored.
        compile: compile each batch's ``torch.func`` product with ``torch.compile`` (strategy
            ``"compiled"``, tried first; :mod:`~curvscope.operators.compiled`). Raises at
            construction when inductor cannot run here (no C++ compiler on a CPU, no Triton on a
            GPU); a model the compiler cannot handle falls back to the rule with a warning.
        method: ``"auto"`` (default: exact products; only if every exact strategy fails for a
            benign reason — a fused kernel or custom function without double backward — a
            finite-difference product, with a warning), ``"exact"`` (never finite differences),
            ``"fd"`` or ``"fd_richardson"`` (Hessian only; see
            :mod:`curvscope.operators.finite_difference`). The estimated error is :attr:`fd_error`.
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
        method: str = "auto",
        compile: bool = False,
        **problem_kwargs: Any,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method.startswith("fd") and type(self)._fd_block is CurvatureOperator._fd_block:
            raise ValueError(f"{type(self).__name__} has no finite-difference product: method='fd' is for the Hessian")
        self.method = method
        self.distributed = is_distributed() if distributed is None else bool(distributed)
        if problem is None:
            build = lambda: LossProblem(  # noqa: E731
                model, loss_fn, data, params, mode=mode, dtype=dtype, device=device, **problem_kwargs
            )
            problem = agree_on_errors(build, self.distributed, what=f"{type(self).__name__} input checks")
        self.problem = problem
        super().__init__(problem.num_params, problem.dtype, problem.device)
        if max_block < 1:
            raise ValueError(f"max_block must be >= 1, got {max_block}")
        self.max_block = int(max_block)
        self.allow_tf32 = bool(allow_tf32)
        self.compile = bool(compile)
        if self.compile:
            check_compile(problem.device)
        self._compiled: CompiledProduct | None = None
        self.cache_graphs = self._graph_cache_fits() if cache_graphs is None else bool(cache_graphs)
        if self.cache_graphs and not self._has_graph():
            raise ValueError(f"{type(self).__name__} has no gradient graph to cache; pass cache_graphs=False")
        self._graphs = GraphCache(self._gradient_graph, problem.values.values()) if self.cache_graphs else None
        self._chooser = StrategyChooser(
            self._strategies(), "fd" if method.startswith("fd") else strategy, type(self).__name__
        )
        self._fd_errors: dict[int, float] = {}
        self._convolutional = is_convolutional(problem.model)
        self._check_determinism = bool(probe)
        self._probe: ProbeReport | None = None
        self._probing = False

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

        Must be written with ``torch.func`` transforms only, so that it can be vmapped.
        """
        raise NotImplementedError

    def _autograd_block(self, inputs: Any, targets: Any, n: int, V: TangentDict) -> TangentDict:
        """Optional block product with plain autograd (reverse-over-reverse)."""
        raise NotImplementedError

    def _fd_block(self, index: int, inputs: Any, targets: Any, n: int, V: TangentDict, richardson: bool):
        """Optional finite-difference block product (records its error estimate per batch index)."""
        raise NotImplementedError

    def _gradient_graph(self, inputs: Any, targets: Any, n: int) -> Any:
        """Optional: the state kept per batch between products (see :meth:`_graph_product`).

        By default ``(leaves, outs, keys)`` with ``product · v = VJP of outs with v[keys]`` w.r.t. leaves.
        """
        raise NotImplementedError

    #: the kept-state strategies this operator has (when its graphs are kept).
    _graph_strategies: tuple[str, ...] = ("cached", "cached_batched")

    def _graph_product(self, state: Any, V: TangentDict, strategy: str) -> TangentDict:
        """A block product through a batch's kept state (the default: one VJP through a gradient graph)."""
        leaves, outs, keys = state
        return graph_vjp(leaves, outs, keys, V, batched=strategy == "cached_batched", retain=True)

    # ----------------------------------------------------------- what is measured
    def fingerprint(self) -> dict:
        """What this operator measures: its kind, the problem (params, mode, dtype, values, data)."""
        fingerprint = {"kind": type(self).__name__, "dim": self.shape[0], **self.problem.fingerprint()}
        if self.distributed:  # each rank read its shard: the data is what all ranks read together
            fingerprint["data"] = gather_data_fingerprints(fingerprint["data"])
        return fingerprint

    @property
    def noise_floor(self) -> float:
        """Relative error of a product, ``≥ eps`` of the dtype (measured once; see :mod:`.probe`).

        Includes the estimated error of finite-difference products when they are in use.
        """
        if self._probe is None:
            self._run_probe()
        return max(self._probe.noise_floor, self.fd_error or 0.0)

    @property
    def fd_error(self) -> float | None:
        """Estimated relative error of the finite-difference products (``None`` when all are exact)."""
        return max(self._fd_errors.values()) if self._fd_errors else None

    @property
    def product_method(self) -> str:
        """``"exact"``, or ``"fd"`` when some products were finite differences."""
        return "fd" if "fd" in self._chooser.record.values() else "exact"

    @property
    def probe_report(self) -> ProbeReport | None:
        """The full probe measurement (``None`` before the first product)."""
        return self._probe

    @property
    def strategy_record(self) -> dict[str, str]:
        """The strategy used for each kind of product so far (``single``, ``block``, ``…+cached``)."""
        return dict(self._chooser.record)

    @property
    def block_width(self) -> int:
        """Vectors one autograd call carries on this device (1 on a CPU, ``max_block`` on a GPU).

        The block rule of :func:`~curvscope.operators.strategies.block_width`: blocks of SLQ probes or
        sketch columns of this width cost one pass over the data and, on a GPU, one batched backward.
        """
        return block_width(self.device, self.max_block)

    def chosen_strategy(self, width: int = 1) -> str | None:
        """The strategy used for products of ``width`` vectors (``None`` before any)."""
        kind = "block" if width > 1 else "single"
        record = self._chooser.record
        return record.get(f"{kind}+cached", record.get(kind))

    def clear_graph_cache(self) -> None:
        """Release the retained gradient graphs (they are rebuilt on the next product)."""
        if self._graphs is not None:
            self._graphs.clear()

    # ----------------------------------------------------------------- data path
    def _matmat(self, X: Tensor) -> Tensor:
        with tf32_disabled(self.device, self.allow_tf32):
            if self._probe is None:
                self._run_probe()
            return self._pass(X)

    def _run_probe(self) -> None:
        """Determinism, noise floor and symmetry, measured once before the first product."""
        reference = None
        if self.dtype != torch.float64 and self._twin_fits():
            twin = type(self).from_problem(
                self.problem.astype(torch.float64),
                probe=False,
                cache_graphs=False,
                distributed=self.distributed,
                method=self.method,
            )

            def reference(X: Tensor) -> Tensor | None:  # finite differences: compare a repeat instead
                return None if self.product_method == "fd" else twin._pass(X)

        # The first probe product may build and keep the gradient graphs the user's products reuse;
        # the repeat (or the float64 reference) is a fresh forward pass, so randomness still shows.
        with tf32_disabled(self.device, self.allow_tf32):
            report = run_probe(
                self._pass,
                self.shape[0],
                self.dtype,
                self.device,
                reference=reference,
                check=self._check_determinism,
                repeat=self._fresh_pass,
                name=type(self).__name__,
            )
        self._check_symmetry(report)
        self._probe = report

    def _fresh_pass(self, X: Tensor) -> Tensor:
        """``A @ X`` without retained graphs: every batch is run forward again."""
        self._probing = True
        try:
            return self._pass(X)
        finally:
            self._probing = False

    def _twin_fits(self) -> bool:
        """Whether float64 copies of the parameters and buffers fit in a quarter of the free memory.

        Otherwise (a very large model) the noise floor comes from a repeat and the symmetry defect.
        """
        tensors = [*self.problem.values.values(), *self.problem.fixed.values()]
        need = 8 * sum(t.numel() for t in tensors if t.is_floating_point())
        return need <= GRAPH_CACHE_FRACTION * available_bytes(self.device)

    def _check_symmetry(self, report: ProbeReport) -> None:
        """A curvature matrix is symmetric: a large defect means a wrong derivative, never noise."""
        limit = max(math.sqrt(torch.finfo(self.dtype).eps), 10 * (self.fd_error or 0.0))
        if report.symmetry_defect > limit:
            raise ProductError(
                f"{type(self).__name__}: products are not symmetric (|u₀ᵀAu₁ − u₁ᵀAu₀| = "
                f"{report.symmetry_defect:.1e}·‖A‖ > {limit:.1e}) with the {self.strategy_record} strategies: "
                f"some derivative of the model is wrong or missing (an operation without a correct second "
                f"derivative). Try method='fd' (finite differences of gradients), or report the model."
            )

    def _pass(self, X: Tensor) -> Tensor:
        """``A @ X``: one pass over the data (all ranks' shards), accumulated in float64 below float64."""
        problem = self.problem
        width = self._block_width(X.shape[1])
        chunks = [problem.unflatten(X[:, s : s + width]) for s in range(0, X.shape[1], width)]
        acc = accumulation_dtype(self.dtype)
        # sums kept per parameter (contiguous, no flatten per batch); flattened once at the end
        sums = [{k: torch.zeros(v.shape, dtype=acc, device=X.device) for k, v in V.items()} for V in chunks]
        total = 0
        for index, raw in enumerate(problem.data):
            batch = problem.prepare(raw, index)
            inputs, targets = problem.split(batch)
            n = problem.batch_size(batch)
            total += n
            for V, S in zip(chunks, sums):
                product = self._batch_product(index, raw, inputs, targets, n, V)
                for k, t in product.items():
                    S[k] += t
        out = torch.cat([problem.flatten(S) for S in sums], dim=1)
        return (out / self._reduce(out, total)).to(self.dtype)

    def _batch_product(self, index: int, raw: Batch, inputs: Any, targets: Any, n: int, V: TangentDict):
        """One batch's block product, by the chosen strategy (benign failures fall back)."""
        K = next(iter(V.values())).shape[0]
        cached = self._graphs is not None and not self._probing
        kind = ("block" if K > 1 else "single") + ("+cached" if cached else "")
        candidates = self._chooser.candidates(K, convolutional=self._convolutional, device=self.device, cached=cached)

        def apply(strategy: str) -> TangentDict:
            return self._apply(strategy, index, raw, inputs, targets, n, V)

        return self._chooser.run(kind, candidates, apply)

    def _apply(self, strategy: str, index: int, raw: Batch, inputs: Any, targets: Any, n: int, V: TangentDict):
        if strategy in CACHED:
            state = self._graphs.get(index, tuple(_tensor_leaves(raw)), inputs, targets, n)
            return self._graph_product(state, V, strategy)
        if strategy == "autograd":
            return self._autograd_block(inputs, targets, n, V)
        if strategy == "compiled":
            if self._compiled is None:
                self._compiled = CompiledProduct(self._compilable_block)
            return self._compiled(inputs, targets, n, V)
        if strategy == "fd":
            return self._fd_block(index, inputs, targets, n, V, richardson=self.method == "fd_richardson")
        if strategy == "vmap":
            state = self._batch_setup(inputs, targets, n)
            return vmap(lambda v: self._single_product(state, inputs, targets, n, v))(V)
        return self._loop_product(inputs, targets, n, V)

    def _compilable_block(self, inputs: Any, targets: Any, n: int, V: TangentDict) -> TangentDict:
        """The block product ``torch.compile`` traces (default: :meth:`_loop_product`)."""
        return self._loop_product(inputs, targets, n, V)

    def _loop_product(self, inputs: Any, targets: Any, n: int, V: TangentDict) -> TangentDict:
        """The ``torch.func`` product of one batch, one vector at a time (eager, or compiled)."""
        state = self._batch_setup(inputs, targets, n)
        K = next(iter(V.values())).shape[0]
        outs = [self._single_product(state, inputs, targets, n, {k: v[i] for k, v in V.items()}) for i in range(K)]
        return {k: torch.stack([o[k] for o in outs]) for k in outs[0]}

    def _reduce(self, out: Tensor, total: int) -> float:
        """Sum the shard's product and sample count over ranks (no-op in one process)."""
        if self.distributed:
            count = torch.tensor([float(total)], dtype=torch.float64, device=out.device)
            all_reduce_sum(out)
            total = all_reduce_sum(count).item()
        if total == 0:
            raise ValueError("data is empty: it yielded no batch")
        return total

    # ------------------------------------------------------------------ policies
    def _has_graph(self) -> bool:
        return type(self)._gradient_graph is not CurvatureOperator._gradient_graph

    def _strategies(self) -> list[str]:
        has_autograd = type(self)._autograd_block is not CurvatureOperator._autograd_block
        has_fd = type(self)._fd_block is not CurvatureOperator._fd_block and self.method != "exact"
        cached = [s for s in self._graph_strategies if s in CACHED] if self.cache_graphs else []
        available = ["vmap", "loop"] + (["autograd"] if has_autograd else []) + cached + (["fd"] if has_fd else [])
        available += ["compiled"] if self.compile else []
        return [s for s in STRATEGIES if s in available]

    def _graph_cache_fits(self) -> bool:
        data = self.problem.data
        if not self._has_graph() or not isinstance(data, (list, tuple)):
            return False  # a loader may yield other samples next pass: a kept graph would hide that
        return GraphCache.fits(self.problem.activation_bytes, len(data), self.device)

    def _block_width(self, K: int) -> int:
        """Vectors per chunk: ``max_block``, fewer if their activations would not fit in memory."""
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

    # ------------------------------------------------------------------ helpers
    def gradient(self) -> Tensor:
        """Gradient of the mean loss over the dataset (all ranks' shards), flat ``[D]``."""
        with tf32_disabled(self.device, self.allow_tf32):
            return full_gradient(self.problem, distributed=self.distributed)

    @property
    def num_samples(self) -> int:
        """``N``, over all ranks' shards."""
        n = torch.tensor([float(self.problem.num_samples)], dtype=torch.float64)
        return int(all_reduce_sum(n).item()) if self.distributed else self.problem.num_samples
