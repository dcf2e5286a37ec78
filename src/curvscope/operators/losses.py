"""Which loss an operator measures and what its **loss units** are.

An operator is the curvature of the mean loss over the dataset's loss units: samples for
classification, non-ignored target tokens for language modelling. Each batch's loss is turned into
its sum over units (``mean × units``), and the total is divided by the number of units read.

``loss_fn=None`` follows the HuggingFace convention: the model computes its own loss from the batch.
For known HF task heads the task's loss is computed from the logits in the compute dtype (exact in
float64; see :mod:`curvscope.integrations.hf`); for any other model ``outputs.loss`` is used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

logger = logging.getLogger("curvscope")

UNITS = ("auto", "samples", "tokens")
IGNORE_INDEX = -100


@dataclass(frozen=True)
class LossSpec:
    """The loss of a problem.

    Attributes:
        loss_fn: ``(outputs, targets) -> scalar`` mean over the batch's units (or sum).
        output_map: applied to the model's outputs before the loss (``logits`` of a task head).
        labels_to_model: pass the labels into the model (it computes its own loss).
        units: ``batch -> number of loss units`` (``None`` for samples: the leading dimension of the
            model inputs, counted by the problem).
        unit_name: ``"samples"``, ``"tokens"`` or ``"custom"``.
        description: for fingerprints and logs.
    """

    loss_fn: Callable[[Any, Any], Tensor]
    output_map: Callable[[Any], Any]
    labels_to_model: bool
    units: Callable[[Any], int] | None
    unit_name: str
    description: str


def _identity(outputs: Any) -> Any:
    return outputs


def _own_loss(outputs: Any, targets: Any) -> Tensor:
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else getattr(outputs, "loss", None)
    if loss is None:
        raise ValueError(
            "loss_fn=None: the model computes its own loss, but it returned none (outputs.loss is None). "
            "Give each batch its targets under 'labels' so the model can compute the loss, or pass a loss_fn."
        )
    return loss


def resolve_loss(model: Any, loss_fn: Callable | None, units: str | Callable[[Any], int]) -> LossSpec:
    """The :class:`LossSpec` for a model, a loss (``None``: the model's own) and a units choice.

    Raises:
        ValueError: an unknown ``units``, or ``loss_fn=None`` for a model that cannot compute a loss.
    """
    from curvscope.integrations import hf

    if not (callable(units) or units in UNITS):
        raise ValueError(f"units must be one of {UNITS} or a callable batch -> int, got {units!r}")
    head = hf.task_head(model) if loss_fn is None else None
    if loss_fn is None and head is None and not hf.is_hf_model(model):
        raise TypeError(
            "loss_fn=None means the model computes its own loss (HuggingFace convention), but "
            f"{type(model).__name__} is not a transformers model: pass loss_fn (e.g. nn.CrossEntropyLoss())"
        )
    if head is not None:
        fn, output_map, to_model, desc = head.loss, hf.logits_of, False, f"hf:{head.name}"
        natural = head.unit
    elif loss_fn is None:
        fn, output_map, to_model, desc, natural = _own_loss, _identity, True, "outputs.loss", "samples"
    else:
        fn, output_map, to_model, desc, natural = loss_fn, _identity, False, type(loss_fn).__name__, "samples"
    if callable(units):
        count, name = _checked_count(units), "custom"
    else:
        name = natural if units == "auto" else units
        count = head.units if (head is not None and name == head.unit) else _COUNTERS[name]
    if units == "auto":
        logger.info("curvscope: loss %s, loss units: %s", desc, name)
    return LossSpec(fn, output_map, to_model, count, name, desc)


def count_tokens(batch: Any) -> int:
    """Non-ignored target tokens (labels ``!= -100``); targets must have a sequence dimension."""
    labels = batch.get("labels", batch.get("label")) if isinstance(batch, Mapping) else batch[-1]
    if not isinstance(labels, Tensor) or labels.ndim < 2:
        raise ValueError(
            "units='tokens' needs labels with a sequence dimension [batch, tokens]; these batches have "
            f"{None if not isinstance(labels, Tensor) else tuple(labels.shape)}: use units='samples'"
        )
    return int((labels != IGNORE_INDEX).sum())


#: Unit counters; samples are counted by :meth:`LossProblem.batch_size` from the model inputs.
_COUNTERS: dict[str, Callable[[Any], int] | None] = {"samples": None, "tokens": count_tokens}


def _checked_count(fn: Callable[[Any], int]) -> Callable[[Any], int]:
    def count(batch: Any) -> int:
        n = fn(batch)
        if isinstance(n, Tensor):
            n = n.item()
        if int(n) != n or n < 0:
            raise ValueError(f"units(batch) must return a non-negative integer, got {n!r}")
        return int(n)

    return count
