"""The generalised Gauss–Newton matrix ``G = (1/N) Σ_b J_bᵀ A_b J_b`` and the residual ``H − G``.

``G v`` needs no Jacobian: ``J v`` by forward mode, ``A`` in output space (closed form for
cross-entropy and MSE, autodiff otherwise), then a vector–Jacobian product. ``H_res`` is
its own operator: ``H_res v = ∇²_θ ⟨r, f(θ)⟩ v`` with the output residual ``r = ∇_f ℓ`` held
fixed — exactly ``Σ_c r_c ∇²_θ f_c`` applied to ``v`` — at the cost of one HVP.
"""

from __future__ import annotations

from typing import Any

from torch.func import grad, jvp, vjp

from curvscope.operators.curvature import CurvatureOperator, TangentDict
from curvscope.operators.lossgrad import output_hessian_fn, output_residual, require_tensor_outputs


class GGN(CurvatureOperator):
    """Gauss–Newton ``G = (1/N) Σ_i J_iᵀ ∇²_f ℓ_i J_i`` (PSD for convex losses), ``[D, D]``.

    For cross-entropy ``∇²_f ℓ = diag(p) − ppᵀ``; for MSE a multiple of ``I``.
    Arguments as :class:`~curvscope.operators.curvature.CurvatureOperator`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from curvscope import GGN
        >>> g = torch.Generator().manual_seed(0)
        >>> model = nn.Linear(3, 2).double()
        >>> x = torch.randn(6, 3, dtype=torch.float64, generator=g)
        >>> G = GGN(model, nn.CrossEntropyLoss(), [(x, torch.tensor([0, 1, 1, 0, 1, 0]))])
        >>> bool(torch.linalg.eigvalsh(G.to_dense()).min() > -1e-12)  # PSD
        True
    """

    def _batch_setup(self, inputs: Any, targets: Any, n: int) -> Any:
        problem = self.problem

        def f(p):
            return problem.forward(p, inputs)

        outputs, vjp_fn = vjp(f, problem.values)
        outputs = require_tensor_outputs(outputs, "GGN")
        return f, vjp_fn, output_hessian_fn(problem, outputs, targets, n)

    def _single_product(self, state: Any, inputs: Any, targets: Any, n: int, v: TangentDict) -> TangentDict:
        f, vjp_fn, apply_A = state
        Jv = jvp(f, (self.problem.values,), (v,))[1]
        return vjp_fn(apply_A(Jv))[0]


class Residual(CurvatureOperator):
    """Residual term ``H_res = H − G = (1/N) Σ_i Σ_c r_ic ∇²_θ f_c(x_i)``, ``[D, D]``.

    Indefinite; it carries every negative eigenvalue of ``H`` and vanishes where the
    residuals ``r = ∇_f ℓ`` do. Arguments as :class:`CurvatureOperator`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from curvscope import GGN, Hessian, Residual
        >>> g = torch.Generator().manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        >>> data = [(torch.randn(6, 3, dtype=torch.float64, generator=g), torch.tensor([0, 1, 1, 0, 1, 0]))]
        >>> loss = nn.CrossEntropyLoss()
        >>> H, G, R = (Op(model, loss, data).to_dense() for Op in (Hessian, GGN, Residual))
        >>> bool(torch.allclose(H, G + R, atol=1e-12))
        True
    """

    def _batch_setup(self, inputs: Any, targets: Any, n: int) -> Any:
        problem = self.problem
        outputs = require_tensor_outputs(problem.forward(problem.values, inputs), "Residual")
        r = output_residual(problem, outputs, targets, n)
        return grad(lambda p: (r * problem.forward(p, inputs)).sum())

    def _single_product(self, state: Any, inputs: Any, targets: Any, n: int, v: TangentDict) -> TangentDict:
        return jvp(state, (self.problem.values,), (v,))[1]
