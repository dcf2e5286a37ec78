"""HuggingFace ``transformers`` models: task heads, loss units and the settings products need.

Nothing here imports ``transformers``: models are recognised by their class's module and name, so
the core stays free of the framework and this file costs nothing for other models.

With ``loss_fn=None`` a curvature operator measures the loss the model's task defines. For the
known task heads the loss is computed here **from the logits, in the operator's dtype** — HF's own
``ForCausalLMLoss`` casts logits with ``.float()``, so a float64 model's ``outputs.loss`` carries
float32 rounding — and the Hessian, the GGN and the residual share one definition:

- causal LM (``*ForCausalLM``, ``*LMHeadModel``): cross-entropy of logits ``[:, :-1]`` against
  labels ``[:, 1:]``, ``-100`` ignored; the loss unit is a non-ignored target token;
- sequence / image classification: by ``config.problem_type`` (inferred as HF does when unset):
  ``regression`` (MSE), ``single_label_classification`` (cross-entropy), ``multi_label_classification``
  (binary cross-entropy with logits); the unit is a sample;
- token classification: cross-entropy over tokens, ``-100`` ignored; the unit is a labelled token.

Other HF models fall back to ``outputs.loss`` (units: samples unless told), and the Gauss–Newton
family needs an explicit ``loss_fn`` on logits for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = -100


def is_hf_model(model: Any) -> bool:
    """Whether ``model`` is a ``transformers`` model (recognised without importing the library)."""
    return isinstance(model, nn.Module) and any(c.__module__.startswith("transformers.") for c in type(model).__mro__)


def logits_of(outputs: Any) -> Tensor:
    """The logits of a ``ModelOutput`` (or a dict with ``logits``)."""
    logits = outputs.get("logits") if isinstance(outputs, Mapping) else getattr(outputs, "logits", None)
    if not isinstance(logits, Tensor):
        raise TypeError(f"the model's outputs ({type(outputs).__name__}) have no logits tensor")
    return logits


@dataclass(frozen=True)
class TaskHead:
    """A known HF task: how to get logits, the loss of logits, and the loss units of a batch.

    Attributes:
        name: ``"causal_lm"``, ``"sequence_classification"``, ``"token_classification"`` or
            ``"image_classification"``.
        unit: ``"tokens"`` or ``"samples"``.
        num_labels: logits per position (classification heads).
        problem_type: the classification loss (``None`` for LM / token heads).
    """

    name: str
    unit: str
    num_labels: int | None = None
    problem_type: str | None = None

    def loss(self, logits: Tensor, batch: Any) -> Tensor:
        """The batch's mean loss over its units (0 for a batch with no unit), in the logits' dtype."""
        labels = _labels(batch)
        if self.name == "causal_lm":
            logits, labels = logits[:, :-1], labels[:, 1:]
        if self.name in ("causal_lm", "token_classification"):
            total = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
            )
            return total / max(self.units(batch), 1)
        kind = self.problem_type or _infer_problem_type(self.num_labels, labels)
        if kind == "regression":
            out = logits.squeeze(-1) if self.num_labels == 1 else logits
            return F.mse_loss(out, labels.to(logits.dtype).reshape(out.shape))
        if kind == "single_label_classification":
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))

    def units(self, batch: Any) -> int:
        """Loss units in a batch: non-ignored (shifted) target tokens, or samples."""
        labels = _labels(batch)
        if self.name == "causal_lm":
            return int((labels[:, 1:] != IGNORE_INDEX).sum())
        if self.name == "token_classification":
            return int((labels != IGNORE_INDEX).sum())
        return int(labels.shape[0])


def task_head(model: nn.Module) -> TaskHead | None:
    """The :class:`TaskHead` of a known HF task model, else ``None``."""
    if not is_hf_model(model):
        return None
    name = type(model).__name__
    config = getattr(model, "config", None)
    num_labels = getattr(config, "num_labels", None)
    if name.endswith("ForCausalLM") or name.endswith("LMHeadModel"):
        return TaskHead("causal_lm", "tokens")
    if name.endswith("ForTokenClassification"):
        return TaskHead("token_classification", "tokens", num_labels)
    for suffix, task in (("ForSequenceClassification", "sequence_classification"),
                         ("ForImageClassification", "image_classification")):  # fmt: skip
        if name.endswith(suffix):
            return TaskHead(task, "samples", num_labels, getattr(config, "problem_type", None))
    return None


def unwrap(model: Any) -> Any:
    """The module inside ``torch.compile`` (``OptimizedModule``), DDP and DataParallel wrappers.

    Curvature is computed with ``torch.func`` on the eager module, so parameter names carry no
    ``_orig_mod.`` / ``module.`` prefixes and products are exact.
    """
    while True:
        if type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def check_gradient_checkpointing(model: Any) -> None:
    """Refuse models with gradient checkpointing on, before any work (it re-runs forward in backward).

    ``torch.utils.checkpoint`` recomputes activations inside the backward pass, which the
    forward-over-reverse and double-backward products cannot differentiate through exactly.
    """
    flag = getattr(type(model), "is_activation_checkpointing", None)
    enabled = (
        model.is_activation_checkpointing if flag is not None else getattr(model, "is_gradient_checkpointing", False)
    )
    if enabled:
        raise ValueError(
            "the model has gradient checkpointing enabled: curvature products differentiate the backward "
            "pass, which checkpointing re-runs. Call model.gradient_checkpointing_disable() before building "
            "the operator (curvature needs the activations anyway), and enable it again afterwards."
        )


def forward_kwargs(model: nn.Module) -> dict[str, Any]:
    """Extra keyword arguments for products: ``use_cache=False`` when the forward takes it (no KV cache)."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return {}
    return {"use_cache": False} if "use_cache" in params else {}


def _labels(batch: Any) -> Tensor:
    """The targets of a batch: ``labels`` of a dict / ``BatchEncoding``, or of a tuple ``(inputs, labels)``.

    For tuple batches the loss receives the targets tensor itself, which is then the labels.
    """
    if isinstance(batch, Mapping):
        labels = batch.get("labels", batch.get("label"))
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        labels = batch[-1]
    else:
        labels = batch
    if not isinstance(labels, Tensor):
        raise KeyError(
            "the batch has no labels tensor: give a HuggingFace task model dict batches (or BatchEncoding) "
            "with the targets under 'labels', or tuples (input_ids, labels)"
        )
    return labels


def _infer_problem_type(num_labels: int | None, labels: Tensor) -> str:
    """HF's rule when ``config.problem_type`` is unset."""
    if num_labels == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int32, torch.int64):
        return "single_label_classification"
    return "multi_label_classification"
