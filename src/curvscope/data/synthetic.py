"""Built-in datasets that need no download: Gaussian mixtures and scikit-learn's digits."""

from __future__ import annotations

import numpy as np
import torch

from curvscope.data.dataset import TensorData, make_generator, standardize


def gaussian_mixture(
    num_classes: int = 10,
    dim: int = 30,
    num_samples: int = 2000,
    spread: float = 1.0,
    *,
    seed: int = 0,
    sample_seed: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> TensorData:
    """A C-class isotropic Gaussian mixture (the "GMM" setup of the small-scale experiments).

    ``μ_c ~ N(0, s² I_d)`` for each class ``c``, then ``x = μ_y + N(0, I_d)``. The spread
    ``s`` sets separability: the expected distance between two means is ``s √(2d)``
    against unit noise per coordinate (``s = 0.4, d = 30`` gives overlapping classes).
    Labels are balanced (``N // C`` per class, the remainder to the first classes) and
    shuffled.

    Args:
        num_classes: ``C``.
        dim: input dimension ``d``.
        num_samples: ``N``.
        spread: class-mean standard deviation ``s``.
        seed: draws the class means (and the samples unless ``sample_seed`` is given).
        sample_seed: draws labels and noise; pass a different one to get fresh samples
            (e.g. a test set) from the same mixture.
        dtype: floating dtype of ``x``; the draws are made in float64 first, so
            float32 and float64 datasets hold the same values up to rounding.

    Returns:
        :class:`TensorData` with ``x [N, d]``; ``meta["means"]`` holds ``[C, d]``.
    """
    if num_classes < 1 or dim < 1 or num_samples < num_classes:
        raise ValueError(
            f"need num_classes >= 1, dim >= 1 and num_samples >= num_classes; got C={num_classes}, "
            f"d={dim}, N={num_samples}"
        )
    if spread < 0:
        raise ValueError(f"spread must be >= 0, got {spread}")
    g_means = make_generator(seed)
    means = spread * torch.randn(num_classes, dim, generator=g_means, dtype=torch.float64)
    # By default the samples continue the stream that drew the means; a sample_seed starts
    # an offset stream, so sample_seed == seed still gives samples independent of the means.
    g = g_means if sample_seed is None else make_generator(int(sample_seed) + 7_919)
    y = torch.arange(num_samples) % num_classes
    y = y[torch.randperm(num_samples, generator=g)]
    x = means[y] + torch.randn(num_samples, dim, generator=g, dtype=torch.float64)
    return TensorData(
        x.to(dtype),
        y,
        num_classes,
        name=f"gmm-C{num_classes}-d{dim}-s{spread:g}",
        meta={"means": means, "spread": spread, "seed": seed, "sample_seed": sample_seed},
    )


def load_digits(
    *,
    flatten: bool = True,
    standardize_features: bool = True,
    dtype: torch.dtype = torch.float32,
) -> TensorData:
    """scikit-learn's handwritten digits: 1797 images of 8×8 pixels, 10 classes.

    Ships inside scikit-learn (no download). Pixels are integers 0–16.

    Args:
        flatten: ``x`` as ``[1797, 64]`` (default) or images ``[1797, 1, 8, 8]``.
        standardize_features: zero mean and unit variance per pixel over all 1797 samples
            (pixels that are always 0 stay 0); split afterwards with
            :func:`~curvscope.data.train_test_split`.
        dtype: floating dtype of ``x``.

    Returns:
        :class:`TensorData` named ``"digits"``.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    x = torch.from_numpy(np.asarray(bunch.data, dtype=np.float64))
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    data = TensorData(x, y, 10, name="digits")
    if standardize_features:
        data, (mean, std) = standardize(data)
        data = data.replace(meta={"mean": mean, "std": std})
    data = data.to(dtype)
    return data if flatten else data.images((1, 8, 8))
