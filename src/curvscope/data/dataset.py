"""Labelled data as plain tensors, batching, class-balanced subsets and seeded splits.

Every dataset in curvscope is a :class:`TensorData`: inputs ``x`` ``[N, ...]`` and integer
labels ``y`` ``[N]`` held in memory. That is all the curvature code needs (it iterates over
a list of ``(x, y)`` batches, full-batch by default) and it keeps every random choice —
subsets, splits, shuffling — a pure function of a seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from curvscope.common import SeedLike, make_generator


@dataclass(frozen=True, eq=False)
class TensorData:
    """A labelled dataset held as two tensors.

    Indexing (``data[i] -> (x[i], y[i])``) and ``len`` make it usable as a
    ``torch.utils.data.Dataset``.

    Attributes:
        x: inputs ``[N, ...]`` (e.g. ``[N, 64]`` flat or ``[N, 1, 8, 8]`` images).
        y: integer class labels ``[N]`` (``int64``) in ``[0, num_classes)``.
        num_classes: number of classes ``C`` (may exceed the labels present in a subset).
        name: a short identifier (used in run directories and reports).
        meta: free-form provenance (source files, normalisation statistics, mixture means).
    """

    x: Tensor
    y: Tensor
    num_classes: int
    name: str = "data"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.x, Tensor) or not isinstance(self.y, Tensor):
            raise TypeError("TensorData needs tensors x and y: convert with torch.as_tensor(...) first")
        if self.y.ndim != 1:
            raise ValueError(f"labels y must be 1-D [N], got shape {tuple(self.y.shape)}")
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} samples but y has {self.y.shape[0]}: they must match")
        if self.y.dtype.is_floating_point or self.y.dtype == torch.bool:
            raise TypeError(f"labels must be integers (class indices), got {self.y.dtype}: use y.long()")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= self.num_classes):
            raise ValueError(
                f"labels span [{int(self.y.min())}, {int(self.y.max())}] but num_classes={self.num_classes}: "
                "labels must lie in [0, num_classes)"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.x[index], self.y[index]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. ``(64,)`` or ``(1, 8, 8)``."""
        return tuple(self.x.shape[1:])

    @property
    def num_features(self) -> int:
        """Number of scalars per input (``prod(input_shape)``)."""
        n = 1
        for s in self.input_shape:
            n *= s
        return n

    def class_counts(self) -> Tensor:
        """Samples per class, ``[C]``."""
        return torch.bincount(self.y, minlength=self.num_classes)

    def replace(self, **changes: Any) -> TensorData:
        """A copy with some fields replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def subset(self, indices: Tensor | Sequence[int], name: str | None = None) -> TensorData:
        """The samples at ``indices`` (in that order)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.replace(x=self.x[idx], y=self.y[idx], name=name or self.name)

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> TensorData:
        """Cast floating inputs to ``dtype`` and move both tensors to ``device``."""
        x = self.x.to(device=device) if device is not None else self.x
        if dtype is not None and x.is_floating_point():
            x = x.to(dtype)
        y = self.y.to(device) if device is not None else self.y
        return self.replace(x=x, y=y)

    def flat(self) -> TensorData:
        """Inputs flattened to ``[N, F]``."""
        return self.replace(x=self.x.reshape(len(self), -1))

    def images(self, shape: Sequence[int]) -> TensorData:
        """Inputs reshaped to ``[N, *shape]`` (e.g. ``(1, 8, 8)``)."""
        shape = tuple(int(s) for s in shape)
        n = 1
        for s in shape:
            n *= s
        if n != self.num_features:
            raise ValueError(f"cannot reshape inputs of {self.num_features} features to {shape}")
        return self.replace(x=self.x.reshape(len(self), *shape))


def batches(
    data: TensorData | tuple[Tensor, Tensor],
    batch_size: int | None = None,
    *,
    shuffle: bool = False,
    seed: SeedLike = 0,
    drop_last: bool = False,
) -> list[tuple[Tensor, Tensor]]:
    """Split a dataset into a list of ``(x, y)`` batches (views, no copies unless shuffled).

    Args:
        data: a :class:`TensorData` or a pair ``(x [N, ...], y [N])``.
        batch_size: samples per batch; ``None`` (default) gives one full batch — the
            usual choice for curvature, whose operators weight batches by sample count.
        shuffle: permute the samples first, with a generator seeded by ``seed``.
        seed: seed or generator for the permutation.
        drop_last: drop a last batch shorter than ``batch_size``.

    Returns:
        A list (re-iterable, as curvature operators need) of ``(x_b, y_b)``.
    """
    x, y = (data.x, data.y) if isinstance(data, TensorData) else data
    n = int(y.shape[0])
    if n == 0:
        raise ValueError("the dataset is empty")
    if shuffle:
        perm = torch.randperm(n, generator=make_generator(seed))
        x, y = x[perm.to(x.device)], y[perm.to(y.device)]
    if batch_size is None:
        return [(x, y)]
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None (full batch), got {batch_size}")
    stop = n - n % batch_size if drop_last else n
    out = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, stop, batch_size)]
    if not out:
        raise ValueError(f"drop_last=True with batch_size={batch_size} > N={n} leaves no batch")
    return out


def make_loader(
    data: TensorData,
    batch_size: int | None = None,
    *,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over ``data`` whose shuffling uses its own seeded generator.

    ``batch_size=None`` means one full batch. Prefer :func:`batches` for in-memory work:
    it is faster and gives the same batches for ``shuffle=False``.
    """
    bs = len(data) if batch_size is None else batch_size
    return torch.utils.data.DataLoader(
        data, batch_size=bs, shuffle=shuffle, drop_last=drop_last, generator=make_generator(seed) if shuffle else None
    )


def _per_class_quota(size: int, num_classes: int, available: Tensor, gen: torch.Generator) -> Tensor:
    base, extra = divmod(size, num_classes)
    quota = torch.full((num_classes,), base, dtype=torch.long)
    if bool((available < base).any()) or int((available > base).sum()) < extra:
        raise ValueError(
            f"a class-balanced subset of {size} samples needs {base}+ per class but the class counts are "
            f"{available.tolist()}: ask for at most {num_classes * int(available.min())} samples"
        )
    # The remainder goes to randomly chosen classes that have samples to spare.
    spare = (available > base).nonzero().flatten()
    quota[spare[torch.randperm(len(spare), generator=gen)[:extra]]] += 1
    return quota


def balanced_subset(data: TensorData, size: int, *, seed: SeedLike = 0, shuffle: bool = True) -> TensorData:
    """A class-balanced random subset of ``size`` samples.

    Each class gets ``size // C`` samples; the remainder ``size % C`` adds one to as many
    randomly chosen classes. Samples are drawn without replacement with a seeded
    generator, so the same seed gives the same subset.

    Args:
        data: the dataset to draw from.
        size: total number of samples.
        seed: seed or generator.
        shuffle: interleave the classes (default) rather than grouping them by class.

    Raises:
        ValueError: if a class has fewer samples than its share.
    """
    if size < 1 or size > len(data):
        raise ValueError(f"size must be in [1, {len(data)}], got {size}")
    gen = make_generator(seed)
    C = data.num_classes
    quota = _per_class_quota(size, C, data.class_counts(), gen)
    y = data.y.cpu()
    chosen = []
    for c in range(C):
        members = (y == c).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=gen)[: int(quota[c])]])
    idx = torch.cat(chosen)
    idx = idx[torch.randperm(len(idx), generator=gen)] if shuffle else idx
    return data.subset(idx)


def train_test_split(
    data: TensorData,
    test_size: int | float = 0.2,
    *,
    seed: SeedLike = 0,
    stratify: bool = True,
) -> tuple[TensorData, TensorData]:
    """Split into train and test sets, deterministically from ``seed``.

    Args:
        data: the dataset to split.
        test_size: number of test samples, or a fraction in ``(0, 1)``.
        seed: seed or generator.
        stratify: keep the class proportions in both parts (per class, the test share is
            rounded; totals may differ from ``test_size`` by less than ``C``).

    Returns:
        ``(train, test)``, disjoint and together covering ``data``.
    """
    n = len(data)
    n_test = round(test_size * n) if isinstance(test_size, float) else int(test_size)
    if not 0 < n_test < n:
        raise ValueError(f"test_size={test_size} leaves {n_test} test samples of {n}: both parts must be non-empty")
    gen = make_generator(seed)
    if not stratify:
        perm = torch.randperm(n, generator=gen)
        test_idx, train_idx = perm[:n_test], perm[n_test:]
    else:
        y = data.y.cpu()
        tests, trains = [], []
        for c in range(data.num_classes):
            members = (y == c).nonzero().flatten()
            members = members[torch.randperm(len(members), generator=gen)]
            k = round(len(members) * n_test / n)
            tests.append(members[:k])
            trains.append(members[k:])
        test_idx, train_idx = torch.cat(tests), torch.cat(trains)
        test_idx = test_idx[torch.randperm(len(test_idx), generator=gen)]
        train_idx = train_idx[torch.randperm(len(train_idx), generator=gen)]
        if len(test_idx) == 0 or len(train_idx) == 0:
            raise ValueError(f"test_size={test_size} is too small or large for a stratified split of {n} samples")
    return data.subset(train_idx, name=data.name), data.subset(test_idx, name=data.name)


def standardize(
    data: TensorData, stats: tuple[Tensor, Tensor] | None = None, *, per: str = "feature"
) -> tuple[TensorData, tuple[Tensor, Tensor]]:
    """Subtract the mean and divide by the standard deviation.

    Compute the statistics on the training set and pass them back in for the test set:
    ``train, st = standardize(train); test, _ = standardize(test, st)``.

    Args:
        data: the dataset; floating inputs ``[N, ...]``.
        stats: ``(mean, std)`` to apply; computed from ``data`` when ``None``.
        per: ``"feature"`` (one mean per input coordinate, ``[*input_shape]``) or
            ``"channel"`` (images ``[N, C, H, W]``: one per channel, ``[C, 1, 1]``).
            Constant coordinates (std 0) are only centred.

    Returns:
        ``(standardised data, (mean, std))``.
    """
    x = data.x if data.x.is_floating_point() else data.x.float()
    if stats is None:
        if per == "feature":
            mean, std = x.mean(0), x.std(0, unbiased=False)
        elif per == "channel":
            if x.ndim != 4:
                raise ValueError(f"per='channel' needs images [N, C, H, W], got shape {tuple(x.shape)}")
            mean = x.mean((0, 2, 3), keepdim=True)[0]
            std = x.std((0, 2, 3), unbiased=False, keepdim=True)[0]
        else:
            raise ValueError(f"per must be 'feature' or 'channel', got {per!r}")
        std = torch.where(std > 0, std, torch.ones_like(std))
    else:
        mean, std = stats
    return data.replace(x=(x - mean) / std), (mean, std)
