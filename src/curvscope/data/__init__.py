"""Datasets as plain tensors: built-in (digits, Gaussian mixtures), Fashion-MNIST, local files.

>>> from curvscope.data import load_dataset, balanced_subset, batches
>>> data = balanced_subset(load_dataset("gmm", num_classes=3, dim=5, num_samples=90), 30, seed=1)
>>> data.class_counts().tolist(), len(batches(data, 8))
([10, 10, 10], 4)
"""

from curvscope.data.dataset import (
    TensorData,
    balanced_subset,
    batches,
    make_generator,
    make_loader,
    standardize,
    train_test_split,
)
from curvscope.data.formats import (
    CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    downsample,
    load_cifar10,
    load_fashion_mnist,
    load_idx,
    read_cifar10_batch,
    read_idx,
    write_cifar10_batch,
    write_idx,
)
from curvscope.data.probe import probe_batches
from curvscope.data.registry import list_datasets, load_dataset, register_dataset
from curvscope.data.synthetic import gaussian_mixture, load_digits

__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "TensorData",
    "balanced_subset",
    "batches",
    "downsample",
    "gaussian_mixture",
    "list_datasets",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_idx",
    "make_generator",
    "make_loader",
    "probe_batches",
    "read_cifar10_batch",
    "read_idx",
    "register_dataset",
    "standardize",
    "train_test_split",
    "write_cifar10_batch",
    "write_idx",
]
