"""Datasets by name: ``load_dataset("digits")``, ``load_dataset("mnist-idx:/data/mnist")``.

A name is either a registered key (``digits``, ``fashion-mnist``, ``gmm``) or
``FORMAT:PATH`` for a local folder (``mnist-idx:PATH``, ``cifar10:PATH``). Keyword
arguments go to the loader. New datasets are added with :func:`register_dataset`
(``overwrite=False`` by default, so two plugins cannot silently shadow each other).
"""

from __future__ import annotations

from collections.abc import Callable

from curvscope.data.dataset import TensorData
from curvscope.data.formats import load_cifar10, load_fashion_mnist, load_idx
from curvscope.data.synthetic import gaussian_mixture, load_digits

_DATASETS: dict[str, tuple[Callable[..., TensorData], str]] = {}
_PATH_FORMATS: dict[str, tuple[Callable[..., TensorData], str]] = {}


def register_dataset(
    name: str, loader: Callable[..., TensorData], *, description: str = "", takes_path: bool = False, overwrite=False
) -> None:
    """Register a loader under ``name``.

    Args:
        name: the key (no ``:``).
        loader: ``loader(**kwargs) -> TensorData``, or ``loader(path, **kwargs)`` with
            ``takes_path=True`` (then used as ``name:PATH``).
        description: one line shown by :func:`list_datasets`.
        takes_path: the loader reads a local folder given after ``name:``.
        overwrite: replace an existing entry instead of raising.
    """
    if ":" in name:
        raise ValueError(f"dataset names cannot contain ':' (it separates the format from the path): {name!r}")
    table = _PATH_FORMATS if takes_path else _DATASETS
    if not overwrite and (name in _DATASETS or name in _PATH_FORMATS):
        raise ValueError(f"dataset {name!r} is already registered: pass overwrite=True to replace it")
    table[name] = (loader, description)


def list_datasets() -> dict[str, str]:
    """Valid names (``FORMAT:PATH`` for folder formats) → description."""
    out = {k: d for k, (_, d) in sorted(_DATASETS.items())}
    out.update({f"{k}:PATH": d for k, (_, d) in sorted(_PATH_FORMATS.items())})
    return out


def load_dataset(name: str, **kwargs) -> TensorData:
    """Load a dataset by name.

    Args:
        name: ``"digits"``, ``"fashion-mnist"``, ``"gmm"``, ``"mnist-idx:PATH"``,
            ``"cifar10:PATH"`` or any registered name.
        **kwargs: passed to the loader (e.g. ``split="test"``, ``size=16``,
            ``num_classes=5`` for ``gmm``).

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    fmt, sep, path = name.partition(":")
    if sep:
        if fmt in _PATH_FORMATS:
            if not path:
                raise ValueError(f"{name!r}: give the folder after the colon, e.g. '{fmt}:/data/{fmt}'")
            return _PATH_FORMATS[fmt][0](path, **kwargs)
    elif name in _DATASETS:
        return _DATASETS[name][0](**kwargs)
    elif name in _PATH_FORMATS:
        raise ValueError(f"dataset format {name!r} reads a local folder: use '{name}:PATH'")
    valid = ", ".join(list_datasets())
    raise ValueError(f"unknown dataset {name!r}; valid names: {valid}")


register_dataset("digits", load_digits, description="scikit-learn digits: 1797 8×8 images, 10 classes (built in)")
register_dataset(
    "fashion-mnist",
    load_fashion_mnist,
    description="Fashion-MNIST 28×28, 10 classes (apt-get install dataset-fashion-mnist)",
)
register_dataset("gmm", gaussian_mixture, description="Gaussian mixture: C classes in d dimensions, spread s")
register_dataset(
    "mnist-idx", load_idx, takes_path=True, description="MNIST-style IDX files (train-images-idx3-ubyte[.gz], …)"
)
register_dataset(
    "cifar10", load_cifar10, takes_path=True, description="CIFAR-10 python batches (data_batch_1…5, test_batch)"
)
