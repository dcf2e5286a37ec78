"""Exact dense curvature matrices for small models: the ground truth shipped with the package.

Built from primitives independent of the matrix-free operators, so that comparing the
two checks something:

- the Hessian by reverse-over-reverse autograd (``autograd.grad`` of the gradient, one
  batched backward per chunk of identity rows) — not ``torch.func.hessian`` or
  ``jacrev(jacrev)``, which return a wrong, asymmetric Hessian for ``Linear → LayerNorm``
  models in torch 2.13;
- explicit per-sample Jacobians ``J_i`` (reverse mode, chunked over output coordinates)
  for the GGN, the class structure and — from single-sample losses — the gradient moment;
- central finite differences of gradients as an independent cross-check.

Every function refuses above ``max_params`` with the memory it would need.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from curvscope.operators.base import assert_symmetric
from curvscope.operators.decompose import default_labels
from curvscope.operators.lossgrad import require_tensor_outputs
from curvscope.operators.problem import LossProblem, slice_batch

DEFAULT_MAX_PARAMS = 8_000


def _problem(model: Any, loss_fn: Any, data: Any, params: Any, kwargs: dict) -> LossProblem:
    if isinstance(model, LossProblem):
        return model
    return LossProblem(model, loss_fn, data, params, **kwargs)


def _guard(problem: LossProblem, max_params: int, copies: int = 2) -> None:
    D = problem.num_params
    if D > max_params:
        itemsize = torch.empty((), dtype=problem.dtype).element_size()
        need = copies * D * D * itemsize
        raise MemoryError(
            f"a dense {D} x {D} curvature matrix needs about {need / 2**30:.2f} GiB (x{copies} working copies); "
            f"refused above max_params={max_params}. Use the matrix-free operators, restrict params=[...], "
            f"or raise max_params."
        )


def _leaf_values(problem: LossProblem) -> dict[str, Tensor]:
    return {n: v.detach().clone().requires_grad_(True) for n, v in problem.values.items()}


def _rows_of_jacobian(out: Tensor, leaves: list[Tensor], chunk: int, retain: bool = True) -> Tensor:
    """``∂ out / ∂ leaves`` as ``[out.numel(), D]`` by batched reverse mode (loop fallback)."""
    flat = out.reshape(-1)
    m = flat.numel()
    rows = []
    for s in range(0, m, chunk):
        k = min(chunk, m - s)
        E = torch.zeros(k, m, dtype=flat.dtype, device=flat.device)
        E[torch.arange(k), torch.arange(s, s + k)] = 1
        try:
            gs = torch.autograd.grad(flat, leaves, E, retain_graph=True, is_grads_batched=True, allow_unused=True)
            block = torch.cat(
                [
                    (g if g is not None else torch.zeros(k, *t.shape, dtype=t.dtype)).reshape(k, -1)
                    for g, t in zip(gs, leaves)
                ],
                dim=1,
            )
        except RuntimeError:
            block_rows = []
            for j in range(k):
                g = torch.autograd.grad(flat, leaves, E[j], retain_graph=True, allow_unused=True)
                block_rows.append(
                    torch.cat([(gi if gi is not None else torch.zeros_like(t)).reshape(-1) for gi, t in zip(g, leaves)])
                )
            block = torch.stack(block_rows)
        rows.append(block)
    return torch.cat(rows)


def dense_hessian(
    model: Any,
    loss_fn: Any = None,
    data: Any = None,
    params: Any = None,
    *,
    max_params: int = DEFAULT_MAX_PARAMS,
    chunk: int = 64,
    check_symmetric: bool = True,
    **kwargs: Any,
) -> Tensor:
    """Exact ``[D, D]`` Hessian of the mean loss by autograd double backward.

    Args:
        model, loss_fn, data, params: as for :class:`~curvscope.operators.Hessian`, or a
            :class:`LossProblem` as ``model``.
        max_params: refuse above this ``D``.
        chunk: Hessian rows per batched backward.
        check_symmetric: raise if the result is not symmetric to ``sqrt(eps)``.
        **kwargs: forwarded to :class:`LossProblem` (``mode``, ``dtype``, …).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
        >>> model = nn.Linear(2, 1, bias=False).double()
        >>> H = dense_hessian(model, nn.MSELoss(), [(x, torch.zeros(1, 1, dtype=torch.float64))])
        >>> H.tolist()  # 2 x xᵀ for ½·2·(wᵀx)² averaged over one sample
        [[2.0, 4.0], [4.0, 8.0]]
    """
    problem = _problem(model, loss_fn, data, params, kwargs)
    _guard(problem, max_params)
    D = problem.num_params
    H = torch.zeros(D, D, dtype=problem.dtype, device=problem.device)
    for _, batch in problem.batches():
        inputs, targets = problem.split(batch)
        n = problem.batch_size(batch)
        values = _leaf_values(problem)
        leaves = list(values.values())
        loss = problem.sum_loss(problem.forward(values, inputs), targets, n)
        grads = torch.autograd.grad(loss, leaves, create_graph=True)
        H += _rows_of_jacobian(torch.cat([g.reshape(-1) for g in grads]), leaves, chunk)
    H /= problem.num_samples
    if check_symmetric:
        assert_symmetric(H, "the dense Hessian")
    return H


def dense_gradient(problem: LossProblem, values: dict[str, Tensor] | None = None) -> Tensor:
    """Mean-loss gradient ``[D]`` by plain autograd at ``values`` (default: the problem's point)."""
    total = torch.zeros(problem.num_params, dtype=problem.dtype, device=problem.device)
    for _, batch in problem.batches():
        inputs, targets = problem.split(batch)
        n = problem.batch_size(batch)
        vals = {k: v.detach().clone().requires_grad_(True) for k, v in (values or problem.values).items()}
        loss = problem.sum_loss(problem.forward(vals, inputs), targets, n)
        grads = torch.autograd.grad(loss, list(vals.values()), allow_unused=True)
        total += torch.cat(
            [(g if g is not None else torch.zeros_like(v)).reshape(-1) for g, v in zip(grads, vals.values())]
        )
    return total / problem.num_samples


def finite_difference_hessian(
    model: Any,
    loss_fn: Any = None,
    data: Any = None,
    params: Any = None,
    *,
    eps: float = 1e-5,
    max_params: int = DEFAULT_MAX_PARAMS,
    **kwargs: Any,
) -> Tensor:
    """Central differences of gradients, ``(∇L(θ + ε e_j) − ∇L(θ − ε e_j)) / 2ε``, symmetrised.

    Error ``O(ε²)`` from truncation plus ``O(u/ε)`` from round-off: about 1e-9 relative in
    float64 at the default ``ε``. Use float64.
    """
    problem = _problem(model, loss_fn, data, params, kwargs)
    _guard(problem, max_params)
    theta = problem.flat_params()
    cols = []
    for j in range(problem.num_params):
        e = torch.zeros_like(theta)
        e[j] = eps
        plus = dense_gradient(problem, problem.unflatten(theta + e))
        minus = dense_gradient(problem, problem.unflatten(theta - e))
        cols.append((plus - minus) / (2 * eps))
    H = torch.stack(cols, dim=1)
    return (H + H.T) / 2


def per_sample_jacobians(problem: LossProblem, inputs: Any, chunk: int = 64) -> tuple[Tensor, Tensor]:
    """Outputs ``[B, *out]`` and Jacobians ``[B, prod(out), D]`` of one batch.

    One reverse pass per output coordinate of the batch (batched in chunks); valid because
    in eval mode sample ``i``'s outputs depend only on ``x_i``.
    """
    values = _leaf_values(problem)
    outputs = require_tensor_outputs(problem.forward(values, inputs), "the dense GGN")
    B = outputs.shape[0]
    J = _rows_of_jacobian(outputs, list(values.values()), chunk)  # [B*m, D]
    return outputs.detach(), J.reshape(B, -1, problem.num_params)


def _output_hessian(problem: LossProblem, outputs: Tensor, targets: Any, n: int) -> Tensor:
    """``∇²_f Σ_{i∈b} ℓ_i`` as a dense ``[B·m, B·m]`` matrix by autograd (no closed forms)."""
    o = outputs.detach().clone().requires_grad_(True)
    loss = problem.sum_loss(o, targets, n)
    (g,) = torch.autograd.grad(loss, o, create_graph=True)
    return _rows_of_jacobian(g, [o], chunk=64)


def dense_ggn(
    model: Any,
    loss_fn: Any = None,
    data: Any = None,
    params: Any = None,
    *,
    max_params: int = DEFAULT_MAX_PARAMS,
    **kwargs: Any,
) -> Tensor:
    """Exact ``G = (1/N) Σ_b J_bᵀ A_b J_b`` from explicit Jacobians and an autograd output Hessian."""
    problem = _problem(model, loss_fn, data, params, kwargs)
    _guard(problem, max_params)
    D = problem.num_params
    G = torch.zeros(D, D, dtype=problem.dtype, device=problem.device)
    for _, batch in problem.batches():
        inputs, targets = problem.split(batch)
        n = problem.batch_size(batch)
        outputs, J = per_sample_jacobians(problem, inputs)
        Jb = J.reshape(-1, D)
        G += Jb.T @ _output_hessian(problem, outputs, targets, n) @ Jb
    return G / problem.num_samples


def dense_residual(model: Any, loss_fn: Any = None, data: Any = None, params: Any = None, **kwargs: Any) -> Tensor:
    """``H_res = H − G`` from the dense Hessian and GGN."""
    problem = _problem(model, loss_fn, data, params, {k: v for k, v in kwargs.items() if k != "max_params"})
    mp = kwargs.get("max_params", DEFAULT_MAX_PARAMS)
    return dense_hessian(problem, max_params=mp) - dense_ggn(problem, max_params=mp)


def per_sample_gradients(problem: LossProblem) -> Tensor:
    """``[N, D]`` gradients of each sample's own loss (a batch of one), by plain autograd."""
    rows = []
    for _, batch in problem.batches():
        for i in range(problem.batch_size(batch)):
            one = slice_batch(batch, i, i + 1)
            inputs, targets = problem.split(one)
            values = _leaf_values(problem)
            loss = problem.sum_loss(problem.forward(values, inputs), targets, 1)
            grads = torch.autograd.grad(loss, list(values.values()), allow_unused=True)
            rows.append(
                torch.cat(
                    [(g if g is not None else torch.zeros_like(v)).reshape(-1) for g, v in zip(grads, values.values())]
                )
            )
    return torch.stack(rows)


def dense_gradient_moment(
    model: Any,
    loss_fn: Any = None,
    data: Any = None,
    params: Any = None,
    *,
    centered: bool = False,
    max_params: int = DEFAULT_MAX_PARAMS,
    **kwargs: Any,
) -> Tensor:
    """``(1/N) Σ_i g_i g_iᵀ`` (minus ``ḡḡᵀ`` when ``centered``) from explicit per-sample gradients."""
    problem = _problem(model, loss_fn, data, params, kwargs)
    _guard(problem, max_params)
    Gs = per_sample_gradients(problem)
    M = Gs.T @ Gs / Gs.shape[0]
    if centered:
        g = Gs.mean(0)
        M = M - torch.outer(g, g)
    return M


def dense_class_structure(
    model: Any,
    loss_fn: Any = None,
    data: Any = None,
    params: Any = None,
    *,
    num_classes: int | None = None,
    labels: Any = None,
    max_params: int = DEFAULT_MAX_PARAMS,
    **kwargs: Any,
) -> dict[str, Tensor]:
    """Dense ``G`` and its class-structure terms from explicit ``z_{i,c'} = √p_{ic'} J_iᵀ(e_{c'} − p_i)``.

    Returns a dict with ``ggn``, ``class``, ``cross``, ``within``, ``papyan_between`` and
    ``papyan_within`` (``[D, D]`` each), computed from the per-sample vectors directly —
    not by subtraction — so the identity ``G = class + cross + within`` is a real check.
    """
    problem = _problem(model, loss_fn, data, params, kwargs)
    _guard(problem, max_params, copies=6)
    zs, ds, ps, ys = [], [], [], []
    for _, batch in problem.batches():
        inputs, _ = problem.split(batch)
        y = (labels or default_labels)(batch)
        outputs, J = per_sample_jacobians(problem, inputs)  # [B, C, D]
        p = torch.softmax(outputs, dim=-1)
        C = p.shape[1]
        diff = torch.eye(C, dtype=p.dtype, device=p.device)[None] - p[:, None, :]  # [B, c', C]
        delta = torch.einsum("bkc,bcd->bkd", diff, J)  # δ_{i,c'} = J_iᵀ(e_{c'} − p_i)
        zs.append(p.sqrt()[:, :, None] * delta)
        ds.append(delta)
        ps.append(p)
        ys.append(y)
    z, delta, p, y = torch.cat(zs), torch.cat(ds), torch.cat(ps), torch.cat(ys)
    N, C, D = z.shape
    C = num_classes or C
    G = torch.einsum("nkd,nke->de", z, z) / N
    cls = torch.zeros(D, D, dtype=z.dtype)
    cross = torch.zeros_like(cls)
    within = torch.zeros_like(cls)
    pb = torch.zeros_like(cls)
    for c in range(C):
        members = y == c
        n_c = int(members.sum())
        if n_c == 0:
            continue
        zc = z[members]  # [n_c, C', D]
        zbar_cc = zc.mean(0)  # [C', D]
        zbar_c = zbar_cc.mean(0)
        cls += (C * n_c / N) * torch.outer(zbar_c, zbar_c)
        cent = zbar_cc - zbar_c
        cross += (n_c / N) * cent.T @ cent
        dev = (zc - zbar_cc).reshape(-1, D)
        within += dev.T @ dev / N
        for k in range(C):
            w = p[members, k]
            W = w.sum()
            mean = (w[:, None] * delta[members, k]).sum(0) / W
            pb += (W / N) * torch.outer(mean, mean)
    return {"ggn": G, "class": cls, "cross": cross, "within": within, "papyan_between": pb, "papyan_within": G - pb}
