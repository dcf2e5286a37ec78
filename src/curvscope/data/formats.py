"""Image datasets from local files: MNIST-style IDX (Fashion-MNIST, MNIST) and CIFAR-10 pickles.

Readers check what they read (IDX magic numbers, shapes, counts) and say how to fix a bad
folder. CIFAR-10's python batches are pickles; loading a pickle can run arbitrary code, so
:func:`read_cifar10_batch` uses an unpickler that only resolves the few numpy names an
array needs and refuses everything else.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from curvscope.data.dataset import TensorData, balanced_subset

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# IDX: two zero bytes, a type code, the number of dimensions, then big-endian int32 sizes.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_CODES = {(np.dtype(v).kind, np.dtype(v).itemsize): k for k, v in _IDX_TYPES.items()}
IDX_IMAGES_MAGIC = 0x00000803  # 2051: unsigned bytes, 3 dimensions [N, H, W]
IDX_LABELS_MAGIC = 0x00000801  # 2049: unsigned bytes, 1 dimension [N]
_IDX_NAME = re.compile(r"^(train|t10k|test)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$")


def _open_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw  # gzip by content, not by name


def read_idx(path: str | os.PathLike, expect_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array.

    Args:
        path: the file.
        expect_magic: the required magic number, e.g. :data:`IDX_IMAGES_MAGIC` (2051) or
            :data:`IDX_LABELS_MAGIC` (2049); ``None`` accepts any valid IDX header.

    Raises:
        ValueError: not an IDX file, the wrong kind of IDX file, or truncated.
    """
    path = Path(path)
    data = _open_maybe_gzip(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(
            f"{path} is not an IDX file: its first bytes are {data[:4].hex()}, expected 0000 then a type code "
            f"(08 for unsigned bytes) and the number of dimensions (images 00000803, labels 00000801)"
        )
    magic = int.from_bytes(data[:4], "big")
    if expect_magic is not None and magic != expect_magic:
        kinds = {IDX_IMAGES_MAGIC: "images [N, H, W]", IDX_LABELS_MAGIC: "labels [N]"}
        raise ValueError(
            f"{path} has IDX magic number {magic} (0x{magic:08x}) but {expect_magic} (0x{expect_magic:08x}, "
            f"{kinds.get(expect_magic, 'another kind')}) was expected: is this "
            f"{kinds.get(magic, 'a different IDX file')}? Check that image and label files are not swapped."
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = header + dtype.itemsize * int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise ValueError(f"{path}: header says shape {dims} ({expected} bytes) but the file has {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray | torch.Tensor, *, compress: bool | None = None) -> Path:
    """Write an array as an IDX file (gzipped when ``compress`` or the name ends in ``.gz``).

    ``uint8`` arrays of 3 and 1 dimensions give the standard image (2051) and label (2049)
    files.
    """
    path = Path(path)
    arr = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    code = _IDX_CODES.get((arr.dtype.kind, arr.dtype.itemsize))
    if code is None:
        raise TypeError(f"IDX stores uint8, int8, int16, int32, float32 or float64, not {arr.dtype}")
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    payload = header + arr.astype(_IDX_TYPES[code]).tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        payload = gzip.compress(payload, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def _find_idx(root: Path, split: str, kind: str) -> Path:
    prefixes = {"train": ("train",), "test": ("t10k", "test")}[split]
    found = []
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        m = _IDX_NAME.match(p.name)
        if m and m.group(1) in prefixes and m.group(2) == kind:
            found.append(p)
    if not found:
        listing = ", ".join(sorted(p.name for p in root.iterdir())[:20]) if root.is_dir() else "(no such folder)"
        raise FileNotFoundError(
            f"no IDX {kind} file for split {split!r} in {root}: expected a name like "
            f"{prefixes[0]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte[.gz]; the folder holds: {listing}"
        )
    return found[0]


def downsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """Average-pool images ``[N, C, H, W]`` to ``[N, C, size, size]``.

    Exact block averages when ``H`` and ``W`` are multiples of ``size`` (28 → 14 or 7);
    otherwise overlapping adaptive windows (28 → 16).
    """
    if x.ndim != 4:
        raise ValueError(f"downsample needs images [N, C, H, W], got shape {tuple(x.shape)}")
    if size < 1 or size > min(x.shape[-2:]):
        raise ValueError(f"size must be in [1, {min(x.shape[-2:])}], got {size}")
    return F.adaptive_avg_pool2d(x, size)


def _finish_images(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    name: str,
    num_classes: int | None,
    size: int | None,
    flatten: bool,
    subset: int | None,
    seed: int,
    dtype: torch.dtype,
    meta: dict,
) -> TensorData:
    """uint8 images ``[N, C, H, W]`` → floats in [0, 1], optionally subset and downsampled."""
    if len(images) != len(labels):
        raise ValueError(f"{name}: {len(images)} images but {len(labels)} labels; the files do not belong together")
    y = torch.from_numpy(labels.astype(np.int64))
    C = int(num_classes) if num_classes is not None else int(y.max()) + 1
    # Subset before the float conversion: a 1000-sample subset of 60000 images costs little.
    data = TensorData(torch.from_numpy(np.ascontiguousarray(images)), y, C, name=name, meta=meta)
    if subset is not None:
        data = balanced_subset(data, subset, seed=seed)
    x = data.x.to(torch.float64) / 255.0
    if size is not None:
        x = downsample(x, size)
    x = x.to(dtype)
    return data.replace(x=x.reshape(len(x), -1) if flatten else x)


def load_idx(
    root: str | os.PathLike,
    split: str = "train",
    *,
    size: int | None = None,
    flatten: bool = False,
    subset: int | None = None,
    seed: int = 0,
    num_classes: int | None = None,
    dtype: torch.dtype = torch.float32,
    name: str | None = None,
) -> TensorData:
    """MNIST-style images and labels from IDX files in a folder.

    The folder holds ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` and
    ``t10k-…`` (or ``test-…``) files, each optionally gzipped (``.gz``); the separator
    before ``idx`` may be ``-`` or ``.``.

    Args:
        root: the folder.
        split: ``"train"`` or ``"test"``.
        size: down-sample to ``size × size`` by average pooling (e.g. 16 or 14).
        flatten: ``x`` as ``[N, H·W]`` instead of ``[N, 1, H, W]``.
        subset: a class-balanced random subset of this many samples (seeded by ``seed``).
        seed: seed for ``subset``.
        num_classes: default ``max label + 1``.
        dtype: floating dtype of ``x``; pixel values are scaled to ``[0, 1]``
            (standardise with :func:`~curvscope.data.standardize`, fit on the train split).
        name: dataset name (default: the folder name).

    Returns:
        :class:`TensorData` with ``x [N, 1, H, W]`` (or flat) and ``y [N]``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    img_path, lab_path = _find_idx(root, split, "images"), _find_idx(root, split, "labels")
    images = read_idx(img_path, IDX_IMAGES_MAGIC)
    labels = read_idx(lab_path, IDX_LABELS_MAGIC)
    return _finish_images(
        images[:, None],
        labels,
        name=name or root.name,
        num_classes=num_classes,
        size=size,
        flatten=flatten,
        subset=subset,
        seed=seed,
        dtype=dtype,
        meta={"images": str(img_path), "labels": str(lab_path), "split": split},
    )


def load_fashion_mnist(
    split: str = "train",
    *,
    root: str | os.PathLike | None = None,
    size: int | None = None,
    flatten: bool = False,
    subset: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> TensorData:
    """Fashion-MNIST (60000 train / 10000 test 28×28 grey images, 10 classes).

    Read from Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``)
    or from ``root``. Arguments as in :func:`load_idx`; e.g. ``size=16`` gives
    ``[N, 1, 16, 16]``.

    Raises:
        FileNotFoundError: with the command that installs the data.
    """
    folder = Path(root) if root is not None else FASHION_MNIST_DIR
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {folder}: install it with `sudo apt-get install dataset-fashion-mnist` "
            "(Debian/Ubuntu), or download the four IDX files (train-images-idx3-ubyte.gz, …) into a folder and "
            "pass root=FOLDER"
        )
    data = load_idx(folder, split, size=size, flatten=flatten, subset=subset, seed=seed, num_classes=10, dtype=dtype)
    return data.replace(name="fashion-mnist", meta={**data.meta, "classes": FASHION_MNIST_CLASSES})


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals a pickled numpy array needs; anything else is refused."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # Python 3 writes bytes this way at protocol 2; it only makes bytes
        }
    )

    def find_class(self, module: str, name: str):
        """Resolve a global only if it is one of the allowed numpy names."""
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} from a CIFAR-10 batch: only numpy arrays, lists and dicts are "
            "allowed (a pickle naming other objects can run arbitrary code). Is this file really a CIFAR-10 batch?"
        )


def read_cifar10_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch safely.

    Returns:
        ``(images uint8 [N, 3, 32, 32], labels int64 [N])``.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        # latin1 is how Python 3 reads the Python 2 pickles that CIFAR-10 ships.
        obj = _NumpyOnlyUnpickler(io.BufferedReader(fh), encoding="latin1").load()
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: a CIFAR-10 batch is a pickled dict, found {type(obj).__name__}")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in d or "labels" not in d:
        raise ValueError(f"{path}: a CIFAR-10 batch needs keys 'data' and 'labels', found {sorted(d)}")
    data, labels = np.asarray(d["data"]), np.asarray(d["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must be uint8 [N, 3072], got {data.dtype} {data.shape}")
    if len(labels) != len(data):
        raise ValueError(f"{path}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: CIFAR-10 labels must lie in 0..9, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


def write_cifar10_batch(
    path: str | os.PathLike, images: np.ndarray, labels: Sequence[int], *, protocol: int = 2
) -> Path:
    """Write images ``uint8 [N, 3, 32, 32]`` and labels as a CIFAR-10 python batch."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != (3, 32, 32):
        raise ValueError(f"images must be uint8 [N, 3, 32, 32], got {images.dtype} {images.shape}")
    obj = {
        "batch_label": Path(path).name,
        "labels": [int(v) for v in labels],
        "data": images.reshape(len(images), -1),
        "filenames": [f"{i}.png" for i in range(len(images))],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def _cifar_folder(root: Path) -> Path:
    for cand in (root, root / "cifar-10-batches-py"):
        if (cand / "test_batch").is_file() or any(cand.glob("data_batch_*")):
            return cand
    raise FileNotFoundError(
        f"no CIFAR-10 python batches in {root} or {root / 'cifar-10-batches-py'}: expected data_batch_1 … "
        "data_batch_5 and test_batch (the 'CIFAR-10 python version' archive, extracted)"
    )


def load_cifar10(
    root: str | os.PathLike,
    split: str = "train",
    *,
    size: int | None = None,
    flatten: bool = False,
    subset: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> TensorData:
    """CIFAR-10 from its python batches in a local folder (``data_batch_*``, ``test_batch``).

    ``root`` may be the batch folder or its parent holding ``cifar-10-batches-py``. The
    train split concatenates every ``data_batch_K`` present, in order of ``K``. Other
    arguments as in :func:`load_idx`; ``x`` is ``[N, 3, 32, 32]`` in ``[0, 1]``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = _cifar_folder(Path(root))
    if split == "train":
        numbered = [(re.fullmatch(r"data_batch_(\d+)", p.name), p) for p in folder.iterdir()]
        files = sorted((p for m, p in numbered if m), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    else:
        files = [folder / "test_batch"] if (folder / "test_batch").is_file() else []
    if not files:
        raise FileNotFoundError(f"no CIFAR-10 {split} batch in {folder} (expected data_batch_1… or test_batch)")
    parts = [read_cifar10_batch(f) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return _finish_images(
        images,
        labels,
        name="cifar10",
        num_classes=10,
        size=size,
        flatten=flatten,
        subset=subset,
        seed=seed,
        dtype=dtype,
        meta={"files": [str(f) for f in files], "split": split, "classes": CIFAR10_CLASSES},
    )
