"""The loss problem behind every curvature operator: model, loss, data and parameters.

:class:`LossProblem` owns the bookkeeping shared by the matrix-free operators and the
dense reference: which parameters span the flat vector (in ``named_parameters`` order),
how a batch is split into model inputs and loss targets, how batches are weighted, the
train/eval policy, dtype/device casting, and the early validation of bad input.

Every batch contributes its *summed* loss ``Σ_{i∈b} ℓ_i`` (``n_b · mean`` for a loss with
``reduction="mean"``); operators divide the total by the number of samples ``N``. So a
short last batch is weighted exactly and the operator is the curvature of the mean loss
over the whole dataset, never an average of per-batch means.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from curvscope.integrations import hf
from curvscope.operators.batches import (  # noqa: F401  (re-exported)
    _WARNED_LOW_PRECISION,
    MODES,
    Batch,
    _map_tensors,
    _select_names,
    _tensor_leaves,
    compute_dtype_for,
    module_mode,
    slice_batch,
    tensors_digest_names,
)
from curvscope.operators.fingerprint import Digest, describe_callable, digest_of_text, tensors_digest
from curvscope.operators.graphs import tensor_key
from curvscope.operators.losses import resolve_loss

logger = logging.getLogger("curvscope")


class LossProblem:
    """Model + loss + data + parameter selection, with flat-vector bookkeeping.

    Args:
        model: an ``nn.Module`` called as ``model(x)`` for tuple batches ``(x, y)``
            (``model(*batch[:-1])`` for longer tuples) and ``model(**inputs)`` for dict
            batches; or a functional ``f(params: dict[str, Tensor], inputs)`` together
            with ``params`` given as that dict.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``; for dict batches ``targets`` is
            the whole batch (HuggingFace style). Must return the mean over the batch's
            loss units (``loss_reduction="mean"``, the default) or their sum (``"sum"``).
            ``None``: the model computes its own loss from the batch (HuggingFace convention;
            see :mod:`curvscope.operators.losses`).
        data: a re-iterable of batches (list, DataLoader). A one-shot iterator is refused.
        params: ``None`` (all trainable parameters), a name or glob pattern, a list of
            them (per-layer / per-block curvature), or for a functional model a dict of
            tensors — the point at which curvature is measured.
        mode: ``"eval"`` (default: dropout off, BatchNorm uses running statistics — the
            curvature of a deterministic function), ``"train"`` or ``"as_is"``. Module
            flags are set for each pass and restored afterwards.
        dtype: compute dtype of the products. Default: the parameters' dtype for float32 and
            float64 models; **float32 for bfloat16/float16 models** (products in 8- or 11-bit
            mantissas cannot certify an eigenvalue; a one-time warning says so). Parameters,
            buffers and floating inputs are cast copies; the model itself is never modified.
        device: compute device (default: the parameters').
        move_batches: move each batch to ``device`` (default: refuse a batch on another
            device with an error that says so).
        input_keys: for dict batches, the keys passed to the model (default: every key
            except ``labels``/``label``).
        check_data: run every batch forward once at construction (finite inputs, outputs and
            loss); otherwise only the first. Every batch is read either way (counts, fingerprint).
        units: the loss units the mean is over: ``"auto"`` (tokens for HF language-model and
            token-classification heads, samples otherwise; the choice is logged), ``"samples"``,
            ``"tokens"`` (labels ``!= -100``) or a callable ``batch -> int``. Each batch is weighted
            by its number of units and the operator divides by the total.
    """

    def __init__(
        self,
        model: nn.Module | Callable,
        loss_fn: Callable[[Any, Any], Tensor] | None,
        data: Iterable[Batch],
        params: str | Sequence[str] | Mapping[str, Tensor] | None = None,
        *,
        mode: str = "eval",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        loss_reduction: str = "mean",
        move_batches: bool = False,
        input_keys: Sequence[str] | None = None,
        check_data: bool = True,
        units: str | Callable[[Any], int] = "auto",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable (e.g. nn.CrossEntropyLoss()), got {type(loss_fn).__name__}")
        declared = getattr(loss_fn, "reduction", None)
        if declared in ("mean", "sum") and declared != loss_reduction:
            raise ValueError(
                f"loss_fn has reduction={declared!r} but loss_reduction={loss_reduction!r}: pass "
                f"loss_reduction={declared!r} so batches are weighted correctly"
            )
        if iter(data) is data:
            raise TypeError(
                "data is a one-shot iterator (e.g. a generator): curvature operators pass over the "
                "data once per product. Pass a list of batches or a DataLoader."
            )
        model = hf.unwrap(model)  # torch.compile / DDP / DataParallel: the eager module, unprefixed names
        if hf.is_hf_model(model):
            hf.check_gradient_checkpointing(model)
        self._forward_kwargs = hf.forward_kwargs(model) if hf.is_hf_model(model) else {}
        self.loss = resolve_loss(model, loss_fn, units)
        self.model, self.loss_fn, self.data = model, self.loss.loss_fn, data
        self.mode, self.loss_reduction, self.move_batches = mode, loss_reduction, move_batches
        self.input_keys = None if input_keys is None else list(input_keys)

        if isinstance(model, nn.Module):
            named = list(model.named_parameters())
            if isinstance(params, Mapping):
                raise TypeError("for an nn.Module pass params as names or glob patterns, not tensors")
            names = _select_names(named, params)
            source = dict(named)
            others = {n: p for n, p in named if n not in names}
            others.update(dict(model.named_buffers()))
        elif callable(model):
            if not isinstance(params, Mapping) or not params:
                raise TypeError(
                    "a functional model f(params, inputs) needs params as a non-empty dict of tensors "
                    "(the point at which curvature is measured)"
                )
            names, source, others = list(params), dict(params), {}
        else:
            raise TypeError(f"model must be an nn.Module or a callable f(params, inputs), got {type(model)}")

        first = source[names[0]]
        self.dtype = dtype or compute_dtype_for(first.dtype)
        self.device = torch.device(device) if device is not None else first.device
        if not self.dtype.is_floating_point:
            raise TypeError(f"curvature needs a floating dtype, got {self.dtype}")

        def cast(t: Tensor) -> Tensor:
            t = t.detach().to(self.device)
            return (t.to(self.dtype) if t.is_floating_point() else t).clone()

        self.names = names
        self.values = {n: cast(source[n]) for n in names}
        # Copies of buffers: a train-mode BatchNorm would otherwise update the user's stats.
        self.fixed = {n: cast(t) for n, t in others.items()}
        self.shapes = [self.values[n].shape for n in names]
        self.numels = [self.values[n].numel() for n in names]
        self.num_params = sum(self.numels)

        self._warn_hazards()
        #: bytes of one (the first) batch's activations, measured by forward hooks.
        self.activation_bytes = 0
        self.num_samples = self._validate_data(full=check_data)

    # ---------------------------------------------------------------- flat vectors
    def flatten(self, tensors: Mapping[str, Tensor]) -> Tensor:
        """Dict of per-parameter tensors → flat ``[D]`` (or ``[K, ...]`` leaves → ``[D, K]``)."""
        first = tensors[self.names[0]]
        batched = first.ndim == len(self.shapes[0]) + 1
        if batched:
            K = first.shape[0]
            return torch.cat([tensors[n].reshape(K, -1) for n in self.names], dim=1).T
        return torch.cat([tensors[n].reshape(-1) for n in self.names])

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Flat ``[D]`` → dict of parameter-shaped tensors; ``[D, K]`` → leaves ``[K, *shape]``."""
        if flat.ndim == 1:
            parts = flat.split(self.numels)
            return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes)}
        K = flat.shape[1]
        parts = flat.T.split(self.numels, dim=1)
        return {n: p.reshape(K, *s) for n, p, s in zip(self.names, parts, self.shapes)}

    def flat_params(self) -> Tensor:
        """The point θ as a flat ``[D]`` tensor."""
        return self.flatten(self.values)

    # ---------------------------------------------------------------------- batches
    def split(self, batch: Batch) -> tuple[Any, Any]:
        """``(model inputs, loss targets)`` of a batch."""
        if isinstance(batch, Mapping):
            to_model = self.loss.labels_to_model
            keys = self.input_keys or [k for k in batch if to_model or k not in ("labels", "label")]
            missing = [k for k in keys if k not in batch]
            if missing:
                raise KeyError(f"batch has no key(s) {missing}; its keys are {list(batch)}")
            return {k: batch[k] for k in keys}, batch
        if isinstance(batch, (tuple, list)) and len(batch) >= 2:
            return (batch[0] if len(batch) == 2 else tuple(batch[:-1])), batch[-1]
        raise TypeError(
            f"a batch must be a tuple/list (inputs, targets) or a dict of tensors, got "
            f"{type(batch).__name__}{'' if not isinstance(batch, (tuple, list)) else f' of length {len(batch)}'}"
        )

    def batch_size(self, batch: Batch) -> int:
        """Number of loss units in a batch: samples (leading dimension of the inputs), tokens, or custom."""
        if self.loss.unit_name != "samples":
            return self.loss.units(batch)
        leaves = _tensor_leaves(self.split(batch)[0])
        if not leaves or leaves[0].ndim == 0:
            raise TypeError("cannot find a batched input tensor in the batch (leading dimension = samples)")
        return int(leaves[0].shape[0])

    def prepare(self, batch: Batch, index: int) -> Batch:
        """Cast floating tensors to the compute dtype; check (or move) the device."""

        def fix(t: Tensor) -> Tensor:
            if t.device != self.device:
                if not self.move_batches:
                    raise ValueError(
                        f"batch {index} is on {t.device} but the model/operator is on {self.device}: "
                        f"move the data, or pass move_batches=True to move each batch"
                    )
                t = t.to(self.device, non_blocking=True)
            return t.to(self.dtype) if t.is_floating_point() else t

        return _map_tensors(batch, fix)

    def batches(self) -> Iterator[tuple[int, Batch]]:
        """Enumerate prepared batches."""
        for index, batch in enumerate(self.data):
            yield index, self.prepare(batch, index)

    # ---------------------------------------------------------------- model + loss
    def forward(self, values: Mapping[str, Tensor], inputs: Any) -> Any:
        """Model outputs at parameters ``values`` (a dict over ``self.names``)."""
        if not isinstance(self.model, nn.Module):
            return self.model(dict(values), inputs)
        tensors = {**self.fixed, **values}
        # The math attention kernel: fused SDPA kernels have no double backward / forward-mode AD.
        with module_mode(self.model, self.mode), sdpa_kernel(SDPBackend.MATH):
            if isinstance(inputs, Mapping):
                outputs = functional_call(self.model, tensors, args=(), kwargs={**inputs, **self._forward_kwargs})
            else:
                args = inputs if isinstance(inputs, tuple) else (inputs,)
                outputs = functional_call(self.model, tensors, args, kwargs=self._forward_kwargs or None)
        return self.loss.output_map(outputs)

    def loss_of_params(self, inputs: Any, targets: Any, n: int) -> Callable[[Mapping[str, Tensor]], Tensor]:
        """``p ↦ Σ_{i∈b} ℓ_i(p)`` for one batch (a closure for ``torch.func`` transforms)."""
        return lambda values: self.sum_loss(self.forward(values, inputs), targets, n)

    def loss_weight(self, batch_size: int) -> float:
        """Factor turning the batch loss into its sum over samples."""
        return float(batch_size) if self.loss_reduction == "mean" else 1.0

    def sum_loss(self, outputs: Any, targets: Any, batch_size: int) -> Tensor:
        """``Σ_{i∈b} ℓ_i`` from the model outputs."""
        return self.loss_fn(outputs, targets) * self.loss_weight(batch_size)

    # ------------------------------------------------------------------ validation
    def _warn_hazards(self) -> None:
        model = self.model
        if isinstance(model, nn.Module):
            training = self.mode == "train" or (self.mode == "as_is" and model.training)
            if training and any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
                warnings.warn(
                    "dropout is active (mode='train'): every product sees a different network and "
                    "the curvature is not well defined. Use mode='eval'.",
                    stacklevel=3,
                )
            if training and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
                warnings.warn(
                    "BatchNorm in train mode couples the samples of a batch (curvature depends on the "
                    "batching) — use mode='eval' unless that is what you want.",
                    stacklevel=3,
                )
        sampler = getattr(self.data, "sampler", None)
        if isinstance(sampler, torch.utils.data.RandomSampler):
            warnings.warn(
                "the DataLoader shuffles: the full-data curvature is order-independent up to round-off, "
                "but random augmentation in the dataset would make products inconsistent. "
                "Prefer shuffle=False for curvature.",
                stacklevel=3,
            )

    def _forward_measuring(self, inputs: Any) -> tuple[Any, int]:
        """Forward pass that also sums the bytes of every submodule's outputs (one batch's activations)."""
        total = 0

        def hook(_module, _inp, out):
            nonlocal total
            total += sum(t.numel() * t.element_size() for t in _tensor_leaves(out))

        handles = (
            [m.register_forward_hook(hook) for m in self.model.modules()] if isinstance(self.model, nn.Module) else []
        )
        try:
            # with a graph to leaves, so the loss can be checked to depend on the parameters
            with torch.enable_grad():
                outputs = self.forward({k: v.detach().requires_grad_(True) for k, v in self.values.items()}, inputs)
        finally:
            for h in handles:
                h.remove()
        if not handles:
            total = sum(t.numel() * t.element_size() for t in _tensor_leaves(outputs))
        return outputs, total

    def _validate_data(self, full: bool) -> int:
        """Read every batch once before any expensive work; return the number of samples read.

        Always: structure, sample count (what iterating ``data`` actually yields, so a
        ``drop_last`` loader or a ``DistributedSampler`` shard is counted right) and a hash of the
        contents for the fingerprint. The first batch is also run forward (activation size, a
        scalar finite loss); with ``full`` every batch is (finite inputs, outputs and loss).
        """
        total, seen, digests, shapes = 0, 0, [], None
        with torch.no_grad():
            for index, batch in self.batches():
                inputs, targets = self.split(batch)
                n = self.batch_size(batch)
                leaves = _tensor_leaves(batch)
                digest = Digest()
                for t in leaves:
                    digest.update(t)
                digests.append(digest.hexdigest())
                if shapes is None:
                    shapes = [list(t.shape) for t in leaves]
                if seen == 0 or full:
                    self._check_batch(index, inputs, targets, measure=seen == 0)
                total += n
                seen += 1
        if seen == 0 or total == 0:
            raise ValueError("data is empty: it yielded no batch (or only empty ones)")
        self._data_fingerprint = {
            "num_batches": seen,
            "num_samples": total,
            "shapes": shapes,
            # order-independent: a shuffling loader reads the same dataset in another order
            "contents": digest_of_text("\n".join(sorted(digests))),
        }
        self._data_key = self.data_key()
        logger.info(
            "curvscope: %d parameters, %d samples, mode=%r (default 'eval': dropout off, BatchNorm running stats)",
            self.num_params,
            total,
            self.mode,
        )
        return total

    def _check_batch(self, index: int, inputs: Any, targets: Any, measure: bool) -> None:
        for t in _tensor_leaves(inputs):
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise ValueError(f"batch {index}: the inputs contain NaN or Inf")
        if measure:
            outputs, self.activation_bytes = self._forward_measuring(inputs)
        else:
            outputs = self.forward(self.values, inputs)
        for t in _tensor_leaves(outputs):
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise ValueError(f"batch {index}: the model outputs contain NaN or Inf")
        with torch.enable_grad():
            loss = self.loss_fn(outputs, targets)
        if not isinstance(loss, Tensor):
            raise TypeError(
                f"the loss returned a {type(loss).__name__}, expected a scalar tensor: return the loss tensor "
                f"itself (not loss.item() or a number), so that it can be differentiated"
            )
        if loss.numel() != 1 or loss.ndim > 1:
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(
                f"the loss returned shape {shape}, expected a scalar: pass reduction='mean' "
                f"(or 'sum' together with loss_reduction='sum')"
            )
        if not math.isfinite(float(loss)):
            raise ValueError(f"batch {index}: the loss is {float(loss)}")
        if measure and not loss.requires_grad:
            raise ValueError(
                "the loss does not depend on the parameters (it has no graph to them): do not detach it, call "
                ".item() on it or compute it under torch.no_grad(); and check that params= selects parameters "
                "the loss uses"
            )

    # ----------------------------------------------------------------- fingerprints
    def data_key(self) -> tuple:
        """Identity and version of every batch tensor of a fixed list (empty for a loader).

        Changes when a batch is replaced (``data[i] = …``) or edited in place.
        """
        if not isinstance(self.data, (list, tuple)):
            return ()
        return (id(self.data), len(self.data), *(tensor_key(_tensor_leaves(b)) for b in self.data))

    def state_key(self) -> tuple:
        """:meth:`data_key` plus the versions of the parameter snapshot: caches keyed on it never go stale."""
        return (self.data_key(), tensor_key(self.values.values()))

    def data_fingerprint(self) -> dict:
        """Shapes, batch and sample counts and a hash of the contents, from the validation scan.

        A fixed list edited since is scanned again, so the fingerprint always describes the data.
        """
        if self._data_key != self.data_key():
            self.num_samples = self._validate_data(full=False)
        return dict(self._data_fingerprint)

    def fingerprint(self) -> dict:
        """What this problem measures: model, loss, parameter selection, policy, values and data."""
        loss = self.loss_fn
        return {
            "model": {"type": type(self.model).__name__, "structure": digest_of_text(describe_callable(self.model))},
            "loss": {
                "type": self.loss.description,
                "settings": digest_of_text(describe_callable(loss)),
                "reduction": getattr(loss, "reduction", self.loss_reduction),
                "units": self.loss.unit_name,
            },
            "params": {"count": len(self.names), "numel": self.num_params, "names": tensors_digest_names(self.names)},
            "mode": self.mode,
            "dtype": str(self.dtype),
            "values": tensors_digest({**self.values, **self.fixed}),
            "data": self.data_fingerprint(),
        }

    def astype(self, dtype: torch.dtype) -> LossProblem:
        """The same problem computed in ``dtype`` (copies of values and buffers; no new validation)."""
        twin = copy.copy(self)
        twin.dtype = dtype
        twin.values = {n: t.to(dtype) if t.is_floating_point() else t for n, t in self.values.items()}
        twin.fixed = {n: t.to(dtype) if t.is_floating_point() else t for n, t in self.fixed.items()}
        return twin
