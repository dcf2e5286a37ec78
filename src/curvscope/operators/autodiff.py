"""Autodiff building blocks of the curvature products: gradient graphs, VJPs, the full gradient.

Kept apart from the data loop so that each product strategy reads as a composition of these.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from curvscope.distributed.comm import all_reduce_sum
from curvscope.operators.problem import LossProblem

TangentDict = dict[str, Tensor]


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

    Raises:
        RuntimeError: the gradient's graph contains a node that cannot be differentiated (a custom
            ``autograd.Function`` marked ``once_differentiable``, a fused kernel): a double backward
            through it would silently drop second-order terms, so this strategy must not be used.
    """
    with torch.enable_grad():
        leaves = {k: t.detach().requires_grad_(True) for k, t in values.items()}
        names = list(leaves)
        grads = torch.autograd.grad(fn(leaves), [leaves[k] for k in names], create_graph=True, allow_unused=True)
    pairs = [(g, k) for g, k in zip(grads, names) if g is not None and g.requires_grad]
    blocked = _undifferentiable_nodes([g for g, _ in pairs])
    if blocked:
        raise RuntimeError(
            f"double backward is not supported by this model: its gradient passes through {sorted(blocked)} "
            f"(an operation without a second derivative, e.g. a custom autograd.Function marked "
            f"once_differentiable or a fused kernel)"
        )
    return leaves, [g for g, _ in pairs], [k for _, k in pairs]


def _undifferentiable_nodes(outs: list[Tensor]) -> set[str]:
    """Names of autograd nodes in the graphs of ``outs`` that raise when differentiated."""
    seen, stack, found = set(), [t.grad_fn for t in outs], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        name = type(node).__name__
        if name in ("Error", "DelayedError", "NotImplemented"):
            found.add(name)
        stack.extend(n for n, _ in node.next_functions)
    return found


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
    out = torch.zeros(problem.num_params, dtype=accumulation_dtype(problem.dtype), device=problem.device)
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
    if total == 0:
        raise ValueError("data is empty: it yielded no batch")
    return (out / total).to(problem.dtype)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for sums of products below float64 (D-sized buffers: cheap), else ``dtype`` itself.

    Summing hundreds of float32 batch products in float32 loses ~log2(batches) bits; in float64 the
    sum is exact to the products' own rounding.
    """
    return torch.float64 if dtype in (torch.float32, torch.float16, torch.bfloat16) else dtype
