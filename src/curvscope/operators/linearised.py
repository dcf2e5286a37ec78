"""A batch's retained linearisation: ``J v`` and ``Jᵀ u`` without a new forward pass (the GGN family).

``G v = Jᵀ A J v`` (and ``M v = Jᵀ r rᵀ J v`` for the gradient moment) needs the model's Jacobian
``J = ∂f/∂θ`` of one batch twice per product. Rebuilding it per product costs a forward pass for
the ``vjp`` and a primal + tangent pass for the ``jvp``. For a fixed list of batches a
:class:`Linearisation` is kept per batch instead (in the operator's
:class:`~curvscope.operators.graphs.GraphCache`, so it is rebuilt whenever a batch tensor or a
parameter changed, and only when it fits the same memory budget as the Hessian's graphs). It holds:

- the outputs ``f(θ)`` with their autograd graph: ``Jᵀ u`` is one backward pass (``retain_graph``);
- ``J v`` by one of two means, built on first use:

  * ``"cached"`` / ``"cached_batched"`` — the double-vjp trick: ``g(u) = Jᵀ u`` is built once with
    ``create_graph=True`` for a dummy ``u``; as ``g`` is linear in ``u``, ``J v = ∂⟨g(u), v⟩/∂u`` is
    one backward pass through the backward graph (per vector, or ``is_grads_batched``);
  * ``"linearize"`` — :func:`torch.func.linearize`: a traced forward-mode graph with the primal
    values baked in; ``J v`` runs only the tangent half of a ``jvp``.

A product is then one ``J v`` (≈ a forward-mode pass) plus one backward: on dense layers 4 matmul
passes against a gradient's 3 (2 for ``W dx + dW x``, 2 for ``Wᵀw`` and ``w xᵀ``), so ≈ 4/3 of a
gradient is the floor of any exact GGN product (1.31 by counting for the MLP-300k, whose first
layer has no input gradient). ``benchmarks/matvec.py`` (float32, 1 thread, full digits in 4 batches,
interleaved, load average 0.4–0.9), product / gradient — double vjp, linearize, the per-product
rebuild it replaces, the kept-graph HVP, curvlinops' GGN:

- MLP-300k: 1.49, 1.58, 2.46, 2.30, 2.62 (of the 1.49: 1.30 the product itself, 0.10 the float64
  sums of float32 batch products, 0.08 the rest of the pass);
- CNN-1M: 1.80, 1.12, 2.21, 2.09, 2.26.

The double backward of a convolution is dear, hence the rule in
:func:`~curvscope.operators.strategies.rule_order`: ``linearize`` first for convolutional models,
the double vjp first otherwise (on dense nets the two are level within the noise, and the double
vjp needs no tracing); either falls back to the other on a benign failure.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.func import linearize, vmap

from curvscope.operators.autodiff import _undifferentiable_nodes
from curvscope.operators.lossgrad import require_tensor_outputs
from curvscope.operators.strategies import is_out_of_memory

TangentDict = dict[str, Tensor]


def grad_block(outs: list[Tensor], inputs: list[Tensor], cots: list[Tensor], batched: bool) -> list[Tensor | None]:
    """VJPs of ``outs`` w.r.t. ``inputs`` for ``K`` stacked cotangents (``cots[i]`` is ``[K, *outs[i].shape]``).

    The graph is retained. ``batched``: one ``is_grads_batched`` backward (a loop over the vectors
    if the graph has no batching rule). Returns ``[K, *input.shape]`` per input, ``None`` when unused.
    """
    if batched:
        try:
            return list(
                torch.autograd.grad(outs, inputs, cots, retain_graph=True, is_grads_batched=True, allow_unused=True)
            )
        except RuntimeError as err:
            if is_out_of_memory(err):
                raise
    K = cots[0].shape[0]
    if K == 1:  # no stacking copy
        res = torch.autograd.grad(outs, inputs, [c[0] for c in cots], retain_graph=True, allow_unused=True)
        return [None if r is None else r.unsqueeze(0) for r in res]
    cols = [
        torch.autograd.grad(outs, inputs, [c[i] for c in cots], retain_graph=True, allow_unused=True) for i in range(K)
    ]
    return [None if c[0] is None else torch.stack(c) for c in zip(*cols)]


class Linearisation:
    """The retained ``J`` of one batch: ``jvp(V)`` and ``vjp(W)`` for blocks of vectors.

    Args:
        problem: the operator's :class:`~curvscope.operators.problem.LossProblem`.
        inputs: the batch's model inputs.
        what: the operator's name, for messages.
        output_op: ``outputs (detached) -> (U ↦ B U)``, the output-space matrix of the operator
            (``A`` for the GGN, ``r rᵀ`` per sample for the gradient moment), kept as :attr:`apply`.
    """

    def __init__(self, problem: Any, inputs: Any, what: str, output_op: Callable[[Tensor], Callable]) -> None:
        self.problem, self.inputs = problem, inputs
        with torch.enable_grad():
            self.leaves = {k: t.detach().requires_grad_(True) for k, t in problem.values.items()}
            self.outputs = require_tensor_outputs(problem.forward(self.leaves, inputs), what)
        self.names = list(self.leaves)
        #: ``U ↦ B U`` for one output-shaped ``U``.
        self.apply = output_op(self.outputs.detach())
        self._u: Tensor | None = None
        self._g: list[Tensor] = []
        self._g_keys: list[str] = []
        self._jvp_fn: Callable | None = None

    # ------------------------------------------------------------------ J v
    def jvp(self, V: TangentDict, strategy: str) -> Tensor:
        """``J V`` for a block ``V`` (leaves ``[K, *shape]``): ``[K, *outputs.shape]``."""
        K = next(iter(V.values())).shape[0]
        if not self.outputs.requires_grad:  # no selected parameter reaches the outputs
            return self.outputs.new_zeros((K, *self.outputs.shape))
        if strategy == "linearize":
            return self._linearized_jvp(V)
        if self._u is None:
            self._build_transpose()
        if not self._g:
            return self.outputs.new_zeros((K, *self.outputs.shape))
        (Jv,) = grad_block(self._g, [self._u], [V[k] for k in self._g_keys], batched=strategy == "cached_batched")
        return self.outputs.new_zeros((K, *self.outputs.shape)) if Jv is None else Jv.detach()

    def _build_transpose(self) -> None:
        """``g(u) = Jᵀ u`` with its graph, for a dummy ``u`` (its value never matters: ``g`` is linear in ``u``)."""
        with torch.enable_grad():
            u = torch.zeros_like(self.outputs, requires_grad=True)
            inputs = [self.leaves[k] for k in self.names]
            g = torch.autograd.grad(self.outputs, inputs, u, create_graph=True, retain_graph=True, allow_unused=True)
        pairs = [(t, k) for t, k in zip(g, self.names) if t is not None and t.requires_grad]
        blocked = _undifferentiable_nodes([t for t, _ in pairs])
        if blocked:  # the double vjp would differentiate a backward that has no derivative
            raise RuntimeError(
                f"double backward is not supported by this model: its backward passes through {sorted(blocked)} "
                f"(an operation without a second derivative, e.g. a custom autograd.Function marked "
                f"once_differentiable)"
            )
        self._u, self._g, self._g_keys = u, [t for t, _ in pairs], [k for _, k in pairs]

    def _linearized_jvp(self, V: TangentDict) -> Tensor:
        if self._jvp_fn is None:
            problem, inputs = self.problem, self.inputs
            values = {k: t.detach() for k, t in problem.values.items()}
            try:
                with warnings.catch_warnings():  # torch's constant folding warns on every trace (harmless)
                    warnings.filterwarnings(
                        "ignore", message="Attempted to insert a get_attr Node", category=UserWarning
                    )
                    _, self._jvp_fn = linearize(lambda p: problem.forward(p, inputs), values)
            except Exception as err:  # tracing limits (data-dependent control flow, untraceable ops)
                if is_out_of_memory(err):
                    raise
                raise NotImplementedError(
                    f"torch.func.linearize cannot trace this model ({type(err).__name__}: {str(err)[:300]})"
                ) from err
        K = next(iter(V.values())).shape[0]
        if K > 1 and self.outputs.device.type == "cuda":
            try:
                return vmap(self._jvp_fn)(V)
            except RuntimeError as err:
                if is_out_of_memory(err):
                    raise
        return torch.stack([self._jvp_fn({k: t[i] for k, t in V.items()}) for i in range(K)])

    # ------------------------------------------------------------------ Jᵀ u
    def vjp(self, W: Tensor, batched: bool) -> TangentDict:
        """``Jᵀ W`` for a block ``W`` (``[K, *outputs.shape]``): parameter-shaped leaves ``[K, *shape]``."""
        K = W.shape[0]
        if not self.outputs.requires_grad:
            return {k: t.new_zeros((K, *t.shape)) for k, t in self.leaves.items()}
        res = grad_block([self.outputs], [self.leaves[k] for k in self.names], [W], batched=batched)
        leaves = self.leaves
        return {
            k: (leaves[k].new_zeros((K, *leaves[k].shape)) if r is None else r.detach())
            for k, r in zip(self.names, res)
        }

    def product(self, V: TangentDict, strategy: str) -> TangentDict:
        """``Jᵀ B J V`` for a block ``V``: the operator's product on this batch."""
        Jv = self.jvp(V, strategy)
        if Jv.shape[0] == 1:  # output space: a few output-sized operations
            BJv = self.apply(Jv[0]).unsqueeze(0)
        else:
            BJv = torch.stack([self.apply(w) for w in Jv])
        batched = strategy == "cached_batched" or (strategy == "linearize" and self.outputs.device.type == "cuda")
        return self.vjp(BJv, batched=batched)
