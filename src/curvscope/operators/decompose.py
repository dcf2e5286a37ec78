"""Papyan's class structure of the Gauss–Newton matrix for cross-entropy.

With ``A_i = diag(p_i) − p_i p_iᵀ = Σ_{c'} p_{ic'} (e_{c'} − p_i)(e_{c'} − p_i)ᵀ``, the GGN is a
weighted second moment of the vectors ``δ_{i,c'} = J_iᵀ (e_{c'} − p_i)``:
``G = (1/N) Σ_{i,c'} z_{i,c'} z_{i,c'}ᵀ`` with ``z_{i,c'} = √p_{ic'} δ_{i,c'}``. Grouping samples by
their true class ``c`` (``n_c`` samples) and by the "hypothetical" class ``c'`` gives, exactly,

- ``G_class = Σ_c (C n_c / N) z̄_c z̄_cᵀ`` — class means ``z̄_c = (1/C) Σ_{c'} z̄_{c,c'}`` (rank ≤ C),
- ``G_cross = Σ_{c,c'} (n_c / N) (z̄_{c,c'} − z̄_c)(z̄_{c,c'} − z̄_c)ᵀ`` — cross-class means (rank ≤ C(C−1)),
- ``G_within = G − G_class − G_cross = (1/N) Σ_{c, i∈c, c'} (z_{i,c'} − z̄_{c,c'})(…)ᵀ`` — the bulk,

where ``z̄_{c,c'} = (1/n_c) Σ_{i∈c} z_{i,c'}``; for balanced classes the weights reduce to
docs/science.md's ``Σ_c z̄_c z̄_cᵀ`` and ``(1/C) Σ_{c,c'}``. Papyan's own (2019) split uses
p-weighted means ``δ̄_{c,c'} = Σ_{i∈c} p_{ic'} δ_{i,c'} / W_{c,c'}``, ``W_{c,c'} = Σ_{i∈c} p_{ic'}``:
``G_B = (1/N) Σ_{c,c'} W_{c,c'} δ̄_{c,c'} δ̄_{c,c'}ᵀ`` (rank ≤ C(C−1)) and ``G_W = G − G_B``.

All means come from one pass over the data with ``2C²`` vector–Jacobian products per batch
(batched), and are kept as ``[D, C²]`` factors; the terms are low-rank operators. When the GGN
keeps its per-batch linearisations (:mod:`curvscope.operators.linearised`), the sums run through
them, so the forward pass is shared with every later GGN product (``within_term``, ``papyan_within``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import vjp, vmap

from curvscope.distributed.comm import all_reduce_sum
from curvscope.memory import available_bytes
from curvscope.operators.autodiff import accumulation_dtype, tf32_disabled
from curvscope.operators.base import LinearOperator
from curvscope.operators.batches import _tensor_leaves
from curvscope.operators.compose import LowRankOperator, SumOperator
from curvscope.operators.ggn import GGN
from curvscope.operators.graphs import GRAPH_CACHE_FRACTION
from curvscope.operators.lossgrad import closed_form_kind
from curvscope.operators.strategies import is_benign


def fresh_property(method: Callable[[Any], Any]) -> property:
    """A cached property recomputed whenever the problem's data or parameters changed.

    Keyed on :meth:`LossProblem.state_key` (identity and version of every batch tensor of a fixed
    list, versions of the parameter snapshot); the cache holds the batches it was computed from so
    their ids cannot be reused while the key lives.
    """
    name = method.__name__

    @functools.wraps(method)
    def getter(self: Any) -> Any:
        key = self.problem.state_key()
        cache = self.__dict__.setdefault("_fresh_cache", {})
        if cache.get("__key__") != key:
            data = self.problem.data
            cache.clear()
            cache.update({"__key__": key, "__pins__": list(data) if isinstance(data, (list, tuple)) else None})
        if name not in cache:
            cache[name] = method(self)
        return cache[name]

    return property(getter)


def class_cotangents(p: Tensor, onehot: Tensor) -> Tensor:
    """Output-space cotangents for the class sums, ``[2, C, C, B, C]``.

    ``[0, c, c', i] = 1[y_i = c] √p_{ic'} (e_{c'} − p_i)`` (sums of ``z``) and
    ``[1, c, c', i] = 1[y_i = c] p_{ic'} (e_{c'} − p_i)`` (Papyan's p-weighted sums of ``δ``).
    """
    C = p.shape[1]
    eye = torch.eye(C, dtype=p.dtype, device=p.device)
    diff = eye[:, None, :] - p[None, :, :]  # [c', B, C]: e_{c'} − p_i
    pw = p.T[:, :, None]  # [c', B, 1]: p_{ic'}
    mask = onehot.T[:, None, :, None]  # [c, 1, B, 1]
    z = mask * (pw.sqrt() * diff)[None]
    d = mask * (pw * diff)[None]
    return torch.stack([z, d])


def default_labels(batch: Any) -> Tensor:
    """Integer labels of a batch: ``batch[-1]`` for tuples, ``batch["labels"]`` or ``batch["label"]`` for dicts."""
    if isinstance(batch, dict):
        for key in ("labels", "label"):
            if key in batch:
                return batch[key]
        raise KeyError(f"no 'labels' key in the batch (keys: {list(batch)}); pass labels=lambda batch: ...")
    return batch[-1]


def check_cross_entropy(problem: Any, outputs: Any, targets: Any, y: Tensor) -> None:
    """Refuse anything but plain cross-entropy on ``[B, C]`` logits, checked by value on one batch."""
    ok = isinstance(outputs, Tensor) and outputs.ndim == 2 and isinstance(y, Tensor) and not y.is_floating_point()
    if ok and closed_form_kind(problem, outputs, targets) != "ce":
        n = outputs.shape[0]
        want = torch.nn.functional.cross_entropy(outputs, y, reduction="sum")
        got = problem.sum_loss(outputs, targets, n)
        ok = bool(torch.allclose(got, want, rtol=1e-6, atol=1e-12))
    if not ok:
        raise ValueError(
            "the class structure of G is defined for cross-entropy on [B, C] logits with integer labels: "
            "pass loss_fn=nn.CrossEntropyLoss() (no class weights, no ignored labels), or a loss equal to it"
        )


def _vjp_block(vjp_fn: Callable, part: Tensor) -> dict[str, Tensor]:
    """``vmap`` of a ``torch.func`` vjp over a block of cotangents (a loop if it has no batching rule)."""
    try:
        return vmap(vjp_fn)(part)[0]
    except Exception as err:
        if not is_benign(err):
            raise
        outs = [vjp_fn(u)[0] for u in part]
        return {k: torch.stack([o[k] for o in outs]) for k in outs[0]}


class ClassStructure:
    """The class-structure terms of the GGN for a cross-entropy loss (Papyan 2019/2020).

    Args:
        model, loss_fn, data, params: as for :class:`~curvscope.operators.GGN`; ``loss_fn``
            must be ``nn.CrossEntropyLoss()`` (no class weights) or ``F.cross_entropy`` on
            ``[B, C]`` logits with integer labels.
        num_classes: ``C`` (default: the logit dimension).
        labels: ``batch -> [B]`` integer labels (default: ``batch[-1]``, or ``batch["labels"]``
            for dict batches).
        **kwargs: forwarded to :class:`GGN` (``mode``, ``dtype``, ``max_block``, …).

    Attributes (computed on first use, one pass over the data):
        class_counts: ``[C]`` samples per class ``n_c``.
        cross_class_means: ``[D, C, C]`` ``z̄_{c,c'}``.
        class_means: ``[D, C]`` ``z̄_c``.
        papyan_means: ``[D, C, C]`` ``δ̄_{c,c'}`` and ``papyan_weights`` ``[C, C]`` ``W_{c,c'}``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from curvscope.operators import ClassStructure
        >>> g = torch.Generator().manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
        >>> data = [(torch.randn(9, 4, dtype=torch.float64, generator=g), torch.arange(9) % 3)]
        >>> cs = ClassStructure(model, nn.CrossEntropyLoss(), data)
        >>> G = cs.ggn.to_dense()
        >>> parts = cs.class_term.to_dense() + cs.cross_term.to_dense() + cs.within_term.to_dense()
        >>> bool(torch.allclose(G, parts, atol=1e-12))
        True
    """

    def __init__(
        self,
        model: nn.Module | Callable,
        loss_fn: Callable,
        data: Iterable,
        params: str | Sequence[str] | Mapping[str, Tensor] | None = None,
        *,
        num_classes: int | None = None,
        labels: Callable[[Any], Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        self.ggn = GGN(model, loss_fn, data, params, **kwargs)
        self._labels = labels or default_labels
        problem = self.ggn.problem
        _, batch = next(problem.batches())
        inputs, targets = problem.split(batch)
        with torch.no_grad():
            outputs = problem.forward(problem.values, inputs)
            check_cross_entropy(problem, outputs, targets, self._labels(batch))
        self.num_classes = int(num_classes or outputs.shape[-1])
        if self.num_classes != outputs.shape[-1]:
            raise ValueError(f"num_classes={num_classes} but the model has {outputs.shape[-1]} logits")

    @property
    def problem(self):
        """The shared :class:`~curvscope.operators.problem.LossProblem`."""
        return self.ggn.problem

    @fresh_property
    def _sums(self) -> dict[str, Tensor]:
        with tf32_disabled(self.ggn.device, self.ggn.allow_tf32):
            return self._class_sums()

    def _class_sums(self) -> dict[str, Tensor]:
        problem, C = self.problem, self.num_classes
        D = problem.num_params
        acc = accumulation_dtype(problem.dtype)  # float64 sums for float32 problems, when they fit:
        if 2 * C * C * D * 8 * 2 > GRAPH_CACHE_FRACTION * available_bytes(problem.device):
            acc = problem.dtype  # 2C²·D sums are not D-sized: float64 copies would not fit beside them
        sums = torch.zeros(2 * C * C, D, dtype=acc, device=problem.device)
        counts = torch.zeros(C, dtype=acc, device=problem.device)
        weights = torch.zeros(C, C, dtype=acc, device=problem.device)
        chunk = self.ggn.max_block
        graphs = self.ggn._graphs  # the GGN's kept linearisations: the sums share their forward pass
        for index, raw in enumerate(problem.data):
            batch = problem.prepare(raw, index)
            inputs, targets = problem.split(batch)
            y = self._labels(batch)
            if y.min() < 0 or y.max() >= C:
                raise ValueError(f"batch {index}: labels must lie in [0, {C}), got [{y.min()}, {y.max()}]")

            if graphs is not None:
                lin = graphs.get(index, tuple(_tensor_leaves(raw)), inputs, targets, problem.batch_size(batch))
                outputs, vjp_block = lin.outputs, lambda part, lin=lin: lin.vjp(part, batched=True)
            else:

                def f(p, inputs=inputs):
                    return problem.forward(p, inputs)

                outputs, vjp_fn = vjp(f, problem.values)
                vjp_block = functools.partial(_vjp_block, vjp_fn)
            p = torch.softmax(outputs.detach(), dim=-1)
            onehot = torch.nn.functional.one_hot(y, C).to(p.dtype)
            cot = class_cotangents(p, onehot).reshape(2 * C * C, *p.shape)
            for s in range(0, cot.shape[0], chunk):
                part = cot[s : s + chunk]
                sums[s : s + part.shape[0]] += problem.flatten(vjp_block(part)).T
            counts += onehot.sum(0)
            weights += onehot.T @ p
        if self.ggn.distributed:  # each rank holds a shard: sum the class sums over ranks
            for t in (sums, counts, weights):
                all_reduce_sum(t)
        out = {"sums": sums.reshape(2, C, C, D), "counts": counts, "weights": weights}
        return {k: v.to(problem.dtype) for k, v in out.items()}

    # ----------------------------------------------------------------- the means
    @property
    def class_counts(self) -> Tensor:
        """``[C]`` samples per class."""
        return self._sums["counts"]

    @property
    def num_samples(self) -> int:
        """``N``."""
        return self.ggn.num_samples

    @fresh_property
    def cross_class_means(self) -> Tensor:
        """``z̄_{c,c'}`` as ``[D, C, C]`` (zero for a class with no sample)."""
        counts = self.class_counts.clamp(min=1)
        return (self._sums["sums"][0] / counts[:, None, None]).permute(2, 0, 1)

    @fresh_property
    def class_means(self) -> Tensor:
        """``z̄_c = (1/C) Σ_{c'} z̄_{c,c'}`` as ``[D, C]``."""
        return self.cross_class_means.mean(dim=2)

    @property
    def papyan_weights(self) -> Tensor:
        """``W_{c,c'} = Σ_{i∈c} p_{ic'}``, ``[C, C]``."""
        return self._sums["weights"]

    @fresh_property
    def papyan_means(self) -> Tensor:
        """``δ̄_{c,c'} = Σ_{i∈c} p_{ic'} δ_{i,c'} / W_{c,c'}`` as ``[D, C, C]``."""
        W = self.papyan_weights.clamp(min=torch.finfo(self.problem.dtype).tiny)
        return (self._sums["sums"][1] / W[:, :, None]).permute(2, 0, 1)

    # ------------------------------------------------------------- the operators
    @fresh_property
    def class_term(self) -> LinearOperator:
        """``G_class = Σ_c (C n_c / N) z̄_c z̄_cᵀ`` (rank ≤ C)."""
        w = self.num_classes * self.class_counts / self.num_samples
        return LowRankOperator(self.class_means, w)

    @fresh_property
    def cross_term(self) -> LinearOperator:
        """``G_cross = Σ_{c,c'} (n_c / N)(z̄_{c,c'} − z̄_c)(…)ᵀ`` (rank ≤ C(C−1))."""
        C = self.num_classes
        centred = self.cross_class_means - self.class_means[:, :, None]
        w = (self.class_counts / self.num_samples)[:, None].expand(C, C)
        return LowRankOperator(centred.reshape(-1, C * C), w.reshape(-1))

    @fresh_property
    def within_term(self) -> LinearOperator:
        """``G_within = G − G_class − G_cross`` (PSD; the bulk)."""
        return SumOperator([self.ggn, self.class_term, self.cross_term], [1.0, -1.0, -1.0])

    @fresh_property
    def papyan_between(self) -> LinearOperator:
        """Papyan's ``G_B = (1/N) Σ_{c,c'} W_{c,c'} δ̄_{c,c'} δ̄_{c,c'}ᵀ`` (rank ≤ C(C−1))."""
        C = self.num_classes
        return LowRankOperator(self.papyan_means.reshape(-1, C * C), self.papyan_weights.reshape(-1) / self.num_samples)

    @fresh_property
    def papyan_within(self) -> LinearOperator:
        """Papyan's ``G_W = G − G_B``."""
        return SumOperator([self.ggn, self.papyan_between], [1.0, -1.0])
