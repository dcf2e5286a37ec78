"""Gradient second moment (empirical Fisher) and gradient covariance.

``M = (1/N) Σ_i g_i g_iᵀ`` with per-sample gradients ``g_i = J_iᵀ r_i`` (``r_i = ∇_f ℓ_i``).
``M v`` needs no per-sample gradients: ``g_iᵀ v = r_iᵀ (J_i v)`` by forward mode, then one
vector–Jacobian product of ``Σ_i r_i (g_iᵀ v)``. Memory stays that of a GGN product, not
``B × D``. This assumes the batch loss is a sum (or mean) of per-sample losses that each
depend only on that sample's outputs — true for CE/MSE and any per-sample loss, false for
losses coupling samples (contrastive losses) or train-mode BatchNorm.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from curvscope.operators.ggn import LinearisedOperator
from curvscope.operators.lossgrad import output_residual


class GradientMoment(LinearisedOperator):
    """``M = (1/N) Σ_i ∇ℓ_i ∇ℓ_iᵀ`` (empirical Fisher; Sagun's gradient second moment), PSD.

    Arguments as :class:`~curvscope.operators.curvature.CurvatureOperator`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from curvscope import GradientMoment
        >>> g = torch.Generator().manual_seed(0)
        >>> model = nn.Linear(2, 2).double()
        >>> x, y = torch.randn(4, 2, dtype=torch.float64, generator=g), torch.tensor([0, 1, 1, 0])
        >>> M = GradientMoment(model, nn.CrossEntropyLoss(), [(x, y)]).to_dense()
        >>> per_sample = []
        >>> for i in range(4):
        ...     model.zero_grad()
        ...     nn.CrossEntropyLoss()(model(x[i : i + 1]), y[i : i + 1]).backward()
        ...     per_sample.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
        >>> Gs = torch.stack(per_sample)
        >>> bool(torch.allclose(M, Gs.T @ Gs / 4, atol=1e-12))
        True
    """

    def _output_operator(self, outputs: Any, targets: Any, n: int):
        problem = self.problem
        if problem.loss.unit_name != "samples":
            # g_iᵀv below sums over every output dimension but the first: one gradient per sequence
            raise ValueError(
                f"{type(self).__name__} is defined per sample (one gradient per row of the batch), but the loss "
                f"units are {problem.loss.unit_name}: pass units='samples' (per-sequence gradients)"
            )
        r = output_residual(problem, outputs, targets, n)
        dims = tuple(range(1, r.ndim))
        return lambda U: r * (r * U).sum(dim=dims, keepdim=True)  # r_i (g_iᵀ v) per sample


class GradientCovariance(GradientMoment):
    """``Σ = M − ∇L ∇Lᵀ``: the covariance of per-sample gradients (PSD).

    The full-batch gradient is computed on the first product and again whenever a batch or the
    parameters changed.
    """

    _mean_gradient: tuple | None = None  # (state key, pinned batches, gradient)

    def _pass(self, X: Tensor) -> Tensor:
        key = self.problem.state_key()
        if self._mean_gradient is None or self._mean_gradient[0] != key:
            data = self.problem.data
            pins = list(data) if isinstance(data, (list, tuple)) else None  # keeps the ids in the key unique
            self._mean_gradient = (key, pins, self.gradient())
        g = self._mean_gradient[2].to(X.dtype)
        return super()._pass(X) - torch.outer(g, g @ X)
