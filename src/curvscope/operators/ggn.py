"""The generalised Gauss–Newton matrix ``G = (1/N) Σ_b J_bᵀ A_b J_b`` and the residual ``H − G``.

``G v`` needs no Jacobian: ``J v`` by forward mode, ``A`` in output space (closed form for
cross-entropy and MSE, autodiff otherwise), then a vector–Jacobian product. ``H_res`` is
its own operator: ``H_res v = ∇²_θ ⟨r, f(θ)⟩ v`` with the output residual ``r = ∇_f ℓ`` held
fixed — exactly ``Σ_c r_c ∇²_θ f_c`` applied to ``v`` — at the cost of one HVP.

For a fixed list of batches both keep per-batch state between products (``cache_graphs``, the
Hessian's rules: rebuilt when a batch or a parameter changes, kept only within the memory budget):
the GGN its linearisation (:mod:`curvscope.operators.linearised`: a product is one ``J v`` plus one
backward, no forward pass), the residual the gradient graph of ``⟨r, f(θ)⟩``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.func import grad, jvp, vjp

from curvscope.operators.curvature import CurvatureOperator, TangentDict, gradient_graph
from curvscope.operators.linearised import Linearisation
from curvscope.operators.lossgrad import output_hessian_fn, output_residual, require_tensor_outputs


class LinearisedOperator(CurvatureOperator):
    """``(1/N) Σ_b J_bᵀ B_b J_b`` for an output-space matrix ``B_b`` (:meth:`_output_operator`).

    Subclasses (GGN, gradient moment) give ``B_b``; products by ``torch.func`` transforms
    (``vmap``/``loop``) or through the batch's kept :class:`~curvscope.operators.linearised.Linearisation`
    (``cached``, ``cached_batched``, ``linearize``).
    """

    _graph_strategies = ("cached", "cached_batched", "linearize")

    def _output_operator(self, outputs: Any, targets: Any, n: int):
        """``U ↦ B_b U`` for output-shaped ``U``, from the batch's (detached) outputs."""
        raise NotImplementedError

    def _batch_setup(self, inputs: Any, targets: Any, n: int) -> Any:
        problem = self.problem

        def f(p):
            return problem.forward(p, inputs)

        outputs, vjp_fn = vjp(f, problem.values)
        outputs = require_tensor_outputs(outputs, type(self).__name__)
        return f, vjp_fn, self._output_operator(outputs.detach(), targets, n)

    def _single_product(self, state: Any, inputs: Any, targets: Any, n: int, v: TangentDict) -> TangentDict:
        f, vjp_fn, apply_B = state
        Jv = jvp(f, (self.problem.values,), (v,))[1]
        return vjp_fn(apply_B(Jv))[0]

    def _compilable_block(self, inputs: Any, targets: Any, n: int, V: TangentDict) -> TangentDict:
        # torch.compile cannot lower a torch.func.vjp closure ("Cannot access storage of TensorWrapper"):
        # Jᵀw as the gradient of ⟨f(θ), w⟩ instead, with the outputs from the jvp's primal.
        problem = self.problem

        def f(p):
            return problem.forward(p, inputs)

        outs = []
        for i in range(next(iter(V.values())).shape[0]):
            outputs, Jv = jvp(f, (problem.values,), ({k: t[i] for k, t in V.items()},))
            w = self._output_operator(outputs.detach(), targets, n)(Jv)
            outs.append(grad(lambda p, w=w: (f(p) * w).sum())(problem.values))
        return {k: torch.stack([o[k] for o in outs]) for k in outs[0]}

    def _gradient_graph(self, inputs: Any, targets: Any, n: int) -> Linearisation:
        return Linearisation(
            self.problem, inputs, type(self).__name__, lambda outputs: self._output_operator(outputs, targets, n)
        )

    def _graph_product(self, state: Linearisation, V: TangentDict, strategy: str) -> TangentDict:
        return state.product(V, strategy)


class GGN(LinearisedOperator):
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

    def _output_operator(self, outputs: Any, targets: Any, n: int):
        return output_hessian_fn(self.problem, outputs, targets, n)


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

    def _gradient_graph(self, inputs: Any, targets: Any, n: int):
        problem = self.problem
        with torch.no_grad():
            outputs = require_tensor_outputs(problem.forward(problem.values, inputs), "Residual")
        r = output_residual(problem, outputs, targets, n)
        return gradient_graph(lambda p: (r * problem.forward(p, inputs)).sum(), problem.values)
