"""Loss along the straight line between two solutions (Sagun et al. 2017; Goodfellow et al. 2015).

``θ(α) = (1 − α) θ_A + α θ_B``; ``α`` outside ``[0, 1]`` extrapolates beyond the endpoints.
The barrier is the largest excess of the loss over the chord between the endpoints,
``max_{α∈[0,1]} L(θ(α)) − ((1 − α) L(θ_A) + α L(θ_B))`` (0 when the loss along the segment is
convex or monotone without a bump — "one flat basin").
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from curvscope.train.evaluate import LossFn, evaluate

StateLike = nn.Module | Mapping[str, Tensor]


@dataclass(frozen=True)
class InterpolationResult:
    """The loss profile along the line.

    Attributes:
        alphas: the grid ``[K]`` (sorted; always contains 0 and 1).
        loss: mean loss at each ``α``.
        accuracy: accuracy at each ``α``.
        extras: what the callback returned at each ``α`` (``None`` without one).
        barrier: ``max_{α∈[0,1]} L(α) − ((1−α)L(0) + αL(1))`` over the grid points (≥ 0).
    """

    alphas: tuple[float, ...]
    loss: tuple[float, ...]
    accuracy: tuple[float, ...]
    extras: tuple[Any, ...]
    barrier: float

    @property
    def loss_a(self) -> float:
        """``L(θ_A)``."""
        return self.loss[self.alphas.index(0.0)]

    @property
    def loss_b(self) -> float:
        """``L(θ_B)``."""
        return self.loss[self.alphas.index(1.0)]

    def is_monotone(self, tol: float = 0.0) -> bool:
        """Whether the loss on ``[0, 1]`` moves monotonically from ``L_A`` to ``L_B`` (up to ``tol``)."""
        seg = [v for a, v in zip(self.alphas, self.loss) if 0.0 <= a <= 1.0]
        diffs = np.diff(seg) * np.sign(seg[-1] - seg[0] or 1.0)
        return bool((diffs >= -tol).all())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (callback outputs included as they are)."""
        return {
            "alphas": list(self.alphas),
            "loss": list(self.loss),
            "accuracy": list(self.accuracy),
            "extras": list(self.extras),
            "barrier": self.barrier,
        }


def _state(s: StateLike) -> dict[str, Tensor]:
    return dict(s.state_dict()) if isinstance(s, nn.Module) else dict(s)


def _batches(data: Any, batch_size: int | None, dtype: torch.dtype, device: torch.device) -> list:
    if isinstance(data, list):
        return data
    x, y = (data.x, data.y) if hasattr(data, "x") else data
    x = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)
    y = y.to(device)
    bs = batch_size or len(y)
    return [(x[i : i + bs], y[i : i + bs]) for i in range(0, len(y), bs)]


def interpolate(
    model: nn.Module,
    a: StateLike,
    b: StateLike,
    data: Any,
    alphas: Sequence[float] | None = None,
    *,
    loss: str | LossFn = "cross_entropy",
    mode: str = "eval",
    batch_size: int | None = None,
    buffers: str = "interpolate",
    callback: Callable[[float, nn.Module], Any] | None = None,
) -> InterpolationResult:
    """Loss and accuracy at ``θ(α) = (1 − α) θ_A + α θ_B`` for each ``α`` of a grid.

    Args:
        model: a network of the right architecture (copied; never modified).
        a: ``θ_A`` as a model or ``state_dict``.
        b: ``θ_B`` likewise (same keys and shapes).
        data: a ``TensorData``, an ``(x, y)`` pair, or a list of ``(x, y)`` batches.
        alphas: the grid (default: ``-0.5, -0.4, …, 1.5``); 0 and 1 are added if missing.
        loss: mean-reduced loss or its name.
        mode: ``"eval"`` (default) or ``"train"`` for the loss passes.
        batch_size: for ``data`` given as tensors (default: one batch).
        buffers: floating buffers (BatchNorm statistics) are ``"interpolate"``-d like the
            parameters (default) or taken from ``"a"``; integer buffers always come from A.
        callback: ``callback(alpha, model_at_alpha)``, e.g. to compute the top Hessian
            eigenvalue there; its return values are collected in ``extras``.

    Returns:
        :class:`InterpolationResult`.
    """
    if buffers not in ("interpolate", "a"):
        raise ValueError(f"buffers must be 'interpolate' or 'a', got {buffers!r}")
    sa, sb = _state(a), _state(b)
    if sa.keys() != sb.keys():
        raise ValueError(f"the two states have different keys: {sorted(sa.keys() ^ sb.keys())[:10]}")
    for k in sa:
        if sa[k].shape != sb[k].shape:
            raise ValueError(f"{k}: shapes differ ({tuple(sa[k].shape)} vs {tuple(sb[k].shape)})")
    grid = np.round(np.linspace(-0.5, 1.5, 21) if alphas is None else np.asarray(alphas, dtype=float), 12)
    grid = sorted({float(v) for v in grid} | {0.0, 1.0})

    work = copy.deepcopy(model)
    param_names = {n for n, _ in work.named_parameters()}
    first = next(iter(work.parameters()))
    batches = _batches(data, batch_size, first.dtype, first.device)
    losses, accs, extras = [], [], []
    for alpha in grid:
        state = {}
        for k, va in sa.items():
            vb = sb[k]
            if va.is_floating_point() and (k in param_names or buffers == "interpolate"):
                # lerp reproduces θ_A at α = 0 and θ_B at α = 1 exactly.
                state[k] = torch.lerp(va, vb.to(va.dtype), alpha)
            else:
                state[k] = va
        work.load_state_dict(state)
        m = evaluate(work, batches, loss, mode=mode, grad=False)
        losses.append(m.loss)
        accs.append(m.accuracy)
        extras.append(callback(alpha, work) if callback is not None else None)

    l0, l1 = losses[grid.index(0.0)], losses[grid.index(1.0)]
    excess = [lv - ((1 - al) * l0 + al * l1) for al, lv in zip(grid, losses) if 0.0 <= al <= 1.0]
    return InterpolationResult(tuple(grid), tuple(losses), tuple(accs), tuple(extras), max(0.0, max(excess)))
