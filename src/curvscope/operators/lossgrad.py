"""Derivatives of the loss with respect to the model outputs (the small, output-space part).

``A_b = ∇²_f (Σ_{i∈b} ℓ_i)`` is the output-space curvature of a batch's summed loss. For
cross-entropy and MSE it has a closed form (``diag(p) − ppᵀ`` per sample; ``2/C · I`` for
``nn.MSELoss`` with mean reduction over ``C`` outputs per sample); any other loss gets the
exact product by forward-over-reverse autodiff on the outputs, which costs a few output-sized
operations and no extra pass through the network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, jvp

from curvscope.operators.problem import LossProblem


def closed_form_kind(problem: LossProblem, outputs: Any, targets: Any) -> str | None:
    """``"ce"`` or ``"mse"`` when the loss has a closed-form output Hessian, else ``None``."""
    fn, reduction = problem.loss_fn, problem.loss_reduction
    if not isinstance(outputs, Tensor) or not isinstance(targets, Tensor):
        return None
    if isinstance(fn, nn.CrossEntropyLoss) or fn is F.cross_entropy:
        ok = outputs.ndim == 2 and targets.ndim == 1 and not targets.is_floating_point()
        if isinstance(fn, nn.CrossEntropyLoss):
            ok = ok and fn.weight is None and fn.reduction == reduction
            ok = ok and not bool((targets == fn.ignore_index).any())
        else:
            ok = ok and reduction == "mean" and not bool((targets == -100).any())
        return "ce" if ok else None
    if isinstance(fn, nn.MSELoss) or fn is F.mse_loss:
        red = fn.reduction if isinstance(fn, nn.MSELoss) else "mean"
        ok = red == reduction and targets.shape == outputs.shape
        return "mse" if ok else None
    return None


def output_residual(problem: LossProblem, outputs: Tensor, targets: Any, n: int) -> Tensor:
    """``r = ∇_f Σ_{i∈b} ℓ_i``, shape of ``outputs`` (per sample: ``p_i − e_{y_i}`` for CE)."""
    return grad(lambda o: problem.sum_loss(o, targets, n))(outputs.detach())


def output_hessian_fn(problem: LossProblem, outputs: Tensor, targets: Any, n: int) -> Callable[[Tensor], Tensor]:
    """``U ↦ A_b U`` for ``U`` shaped like ``outputs`` (vmappable)."""
    outputs = outputs.detach()
    kind = closed_form_kind(problem, outputs, targets)
    if kind == "ce":
        p = torch.softmax(outputs, dim=-1)
        return lambda U: p * U - p * (p * U).sum(dim=-1, keepdim=True)
    if kind == "mse":
        # nn.MSELoss(mean) = (1/(n·C)) Σ (f−y)²; the summed loss is n times that.
        scale = 2.0 * problem.loss_weight(n) / (outputs.numel() if problem.loss_reduction == "mean" else 1)
        return lambda U: scale * U
    grad_fn = grad(lambda o: problem.sum_loss(o, targets, n))
    return lambda U: jvp(grad_fn, (outputs,), (U,))[1]


def require_tensor_outputs(outputs: Any, what: str) -> Tensor:
    """The Gauss–Newton family needs outputs as one tensor with a leading batch dimension."""
    if not isinstance(outputs, Tensor):
        raise TypeError(
            f"{what} needs the model to return one tensor of outputs (logits) with a leading batch "
            f"dimension, got {type(outputs).__name__}: wrap the model so it returns the logits, and let "
            f"loss_fn take them"
        )
    return outputs
