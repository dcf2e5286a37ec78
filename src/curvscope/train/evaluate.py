"""Losses by name and the full-dataset metrics recorded at snapshots (loss, accuracy, gradient norm)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Mean softmax cross-entropy; ``logits [N, C]``, ``y [N]``."""
    return F.cross_entropy(logits, y)


def mse(logits: Tensor, y: Tensor) -> Tensor:
    """``(1/N) Σ_i ½‖f_i − e_{y_i}‖²`` (one-hot targets; the loss Hessian in f is ``I``, docs/science.md)."""
    target = F.one_hot(y, logits.shape[-1]).to(logits.dtype)
    return 0.5 * (logits - target).pow(2).sum(-1).mean()


LOSSES: dict[str, LossFn] = {"cross_entropy": cross_entropy, "mse": mse}


def get_loss(loss: str | LossFn) -> LossFn:
    """A mean-reduced loss ``loss(logits, y)`` by name (``cross_entropy``, ``mse``) or passed through."""
    if callable(loss):
        return loss
    try:
        return LOSSES[loss]
    except KeyError:
        raise ValueError(f"unknown loss {loss!r}; valid names: {', '.join(LOSSES)} (or pass a callable)") from None


@contextlib.contextmanager
def policy(model: nn.Module, mode: str) -> Iterator[None]:
    """Run in ``"eval"`` or ``"train"`` mode and restore every module's flag and every buffer after.

    Restoring buffers matters in train mode: a metrics pass must not move BatchNorm's
    running statistics.
    """
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    flags = [(m, m.training) for m in model.modules()]
    saved = [(b, b.detach().clone()) for b in model.buffers()] if mode == "train" else []
    model.train(mode == "train")
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)


@dataclass(frozen=True)
class Metrics:
    """Mean loss, accuracy and gradient norm over a whole dataset.

    Attributes:
        loss: ``(1/N) Σ_i ℓ_i``, batches weighted by their sample counts.
        accuracy: fraction of argmax-correct predictions.
        grad_norm: ``‖∇_θ L‖₂`` over trainable parameters (``nan`` if not computed).
        num_samples: ``N``.
    """

    loss: float
    accuracy: float
    grad_norm: float
    num_samples: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """``{prefix+"loss": …, prefix+"accuracy": …, prefix+"grad_norm": …}`` (grad norm omitted if nan)."""
        out = {f"{prefix}loss": self.loss, f"{prefix}accuracy": self.accuracy}
        if self.grad_norm == self.grad_norm:
            out[f"{prefix}grad_norm"] = self.grad_norm
        return out


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    loss: str | LossFn = "cross_entropy",
    *,
    mode: str = "eval",
    grad: bool = True,
) -> Metrics:
    """Loss, accuracy and (optionally) the gradient norm of the mean loss over all batches.

    Args:
        model: the classifier (``model(x) -> logits [n, C]``).
        batches: ``(x, y)`` pairs; each contributes ``n_b · mean_b`` so uneven batches are
            weighted exactly.
        loss: a mean-reduced loss or its name.
        mode: ``"eval"`` (default: BatchNorm running statistics, no dropout) or ``"train"``;
            flags and buffers are restored afterwards.
        grad: also compute ``‖∇L‖`` (one backward per batch; ``.grad`` fields untouched).
    """
    loss_fn = get_loss(loss)
    params = [p for p in model.parameters() if p.requires_grad]
    total, correct, n_total = 0.0, 0, 0
    grads = [torch.zeros_like(p) for p in params] if grad else []
    with policy(model, mode), torch.set_grad_enabled(grad):
        for x, y in batches:
            out = model(x)
            n = int(y.shape[0])
            value = loss_fn(out, y)
            if grad:
                for acc, g in zip(grads, torch.autograd.grad(value * n, params, allow_unused=True)):
                    if g is not None:
                        acc.add_(g)
            total += float(value.detach()) * n
            correct += int((out.detach().argmax(-1) == y).sum())
            n_total += n
    if n_total == 0:
        raise ValueError("evaluate() got no samples")
    grad_norm = math.sqrt(sum(float((g / n_total).pow(2).sum()) for g in grads)) if grad else float("nan")
    return Metrics(total / n_total, correct / n_total, grad_norm, n_total)
