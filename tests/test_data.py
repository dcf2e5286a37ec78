"""Datasets: containers, batching, subsets and splits, built-in data, IDX and CIFAR-10 files."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from curvscope.data import (
    FASHION_MNIST_DIR,
    TensorData,
    balanced_subset,
    batches,
    downsample,
    gaussian_mixture,
    list_datasets,
    load_cifar10,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_idx,
    make_loader,
    read_cifar10_batch,
    read_idx,
    register_dataset,
    standardize,
    train_test_split,
    write_cifar10_batch,
    write_idx,
)


def _toy(n_per_class=(5, 7, 9), dim=3) -> TensorData:
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    x = torch.arange(len(y) * dim, dtype=torch.float64).reshape(len(y), dim)
    return TensorData(x, y, len(n_per_class), name="toy")


# ---------------------------------------------------------------- container


@pytest.mark.parametrize(
    ("x", "y", "C", "match"),
    [
        (torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), 2, "4 samples but y has 3"),
        (torch.zeros(3, 2), torch.zeros(3), 2, "labels must be integers"),
        (torch.zeros(3, 2), torch.tensor([0, 1, 2]), 2, r"labels span \[0, 2\] but num_classes=2"),
        (torch.zeros(3, 2), torch.zeros(3, 1, dtype=torch.long), 2, "must be 1-D"),
    ],
)
def test_tensordata_rejects_bad_input(x, y, C, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TensorData(x, y, C)


def test_tensordata_views_and_dataset_protocol():
    d = _toy()
    assert len(d) == 21 and d.input_shape == (3,) and d.num_features == 3
    assert d.class_counts().tolist() == [5, 7, 9]
    xi, yi = d[6]
    assert torch.equal(xi, d.x[6]) and int(yi) == 1
    img = d.images((1, 3, 1))
    assert img.x.shape == (21, 1, 3, 1) and torch.equal(img.flat().x, d.x)
    with pytest.raises(ValueError, match="cannot reshape"):
        d.images((2, 2))
    assert d.to(torch.float32).x.dtype == torch.float32 and d.to(torch.float32).y.dtype == torch.long


# ---------------------------------------------------------------- batching


def test_batches_default_is_one_full_batch():
    d = _toy()
    (b,) = batches(d)
    assert b[0] is d.x and b[1] is d.y


def test_batches_cover_data_in_order_and_drop_last():
    d = _toy()
    bs = batches(d, 8)
    assert [len(y) for _, y in bs] == [8, 8, 5]
    assert torch.equal(torch.cat([x for x, _ in bs]), d.x)
    assert [len(y) for _, y in batches(d, 8, drop_last=True)] == [8, 8]
    with pytest.raises(ValueError, match="positive integer"):
        batches(d, 0)


def test_shuffled_batches_are_a_seeded_permutation():
    d = _toy()
    a = torch.cat([y for _, y in batches(d, 4, shuffle=True, seed=3)])
    b = torch.cat([y for _, y in batches(d, 4, shuffle=True, seed=3)])
    c = torch.cat([y for _, y in batches(d, 4, shuffle=True, seed=4)])
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a.sort().values, d.y.sort().values)


def test_make_loader_is_seeded():
    d = _toy()
    first = [y.tolist() for _, y in make_loader(d, 5, shuffle=True, seed=1)]
    again = [y.tolist() for _, y in make_loader(d, 5, shuffle=True, seed=1)]
    assert first == again and sorted(v for batch in first for v in batch) == d.y.tolist()
    assert len(list(make_loader(d))) == 1


# ---------------------------------------------------------------- subsets and splits


@pytest.mark.parametrize("size", [15, 16, 17])
def test_balanced_subset_counts_and_determinism(size):
    d = _toy()
    s = balanced_subset(d, size, seed=0)
    counts = s.class_counts()
    assert int(counts.sum()) == size and int(counts.max() - counts.min()) <= 1
    rows = {tuple(r) for r in s.x.tolist()}
    assert len(rows) == size  # no sample twice
    assert torch.equal(balanced_subset(d, size, seed=0).x, s.x)
    assert not torch.equal(balanced_subset(d, size, seed=1).x, s.x)


def test_balanced_subset_too_large_says_the_maximum():
    with pytest.raises(ValueError, match="at most 15 samples"):
        balanced_subset(_toy(), 19, seed=0)


def test_train_test_split_is_disjoint_stratified_and_seeded():
    d = gaussian_mixture(4, 3, 400, seed=0)
    tr, te = train_test_split(d, 0.25, seed=5)
    assert len(tr) + len(te) == 400 and len(te) == 100
    all_rows = torch.cat([tr.x, te.x])
    assert torch.unique(all_rows, dim=0).shape[0] == 400
    assert te.class_counts().tolist() == [25, 25, 25, 25]
    tr2, te2 = train_test_split(d, 0.25, seed=5)
    assert torch.equal(te.x, te2.x) and torch.equal(tr.y, tr2.y)
    _, te3 = train_test_split(d, 100, seed=6, stratify=False)
    assert len(te3) == 100 and not torch.equal(te3.x, te.x)
    with pytest.raises(ValueError, match="both parts must be non-empty"):
        train_test_split(d, 400)


def test_standardize_uses_train_statistics_for_test():
    d = gaussian_mixture(3, 4, 300, spread=3.0, seed=1)
    tr, te = train_test_split(d, 0.5, seed=0)
    tr_s, stats = standardize(tr)
    te_s, _ = standardize(te, stats)
    torch.testing.assert_close(tr_s.x.mean(0), torch.zeros(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(tr_s.x.std(0, unbiased=False), torch.ones(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(te_s.x, (te.x - stats[0]) / stats[1])


# ---------------------------------------------------------------- built-in data


def test_gaussian_mixture_follows_its_definition():
    d = gaussian_mixture(3, 5, 3000, spread=2.0, seed=7, dtype=torch.float64)
    means = d.meta["means"]
    assert d.x.shape == (3000, 5) and d.class_counts().tolist() == [1000] * 3
    for c in range(3):
        # x = μ_c + N(0, I): the class sample mean is within 5 standard errors of μ_c.
        assert (d.x[d.y == c].mean(0) - means[c]).abs().max() < 5 / 1000**0.5
        assert abs(float(d.x[d.y == c].var(0).mean()) - 1.0) < 0.1
    again = gaussian_mixture(3, 5, 3000, spread=2.0, seed=7, dtype=torch.float32)
    torch.testing.assert_close(again.x, d.x.float())
    fresh = gaussian_mixture(3, 5, 3000, spread=2.0, seed=7, sample_seed=7, dtype=torch.float64)
    assert torch.equal(fresh.meta["means"], means) and not torch.equal(fresh.x, d.x)
    assert torch.equal(gaussian_mixture(3, 5, 30, spread=0.0).meta["means"], torch.zeros(3, 5, dtype=torch.float64))


def test_load_digits_standardised_flat_and_images():
    d = load_digits(dtype=torch.float64)
    assert d.x.shape == (1797, 64) and d.num_classes == 10 and d.name == "digits"
    std = d.x.std(0, unbiased=False)
    varying = std > 0
    torch.testing.assert_close(d.x.mean(0), torch.zeros(64, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(std[varying], torch.ones(int(varying.sum()), dtype=torch.float64))
    img = load_digits(flatten=False, standardize_features=False)
    assert img.x.shape == (1797, 1, 8, 8) and float(img.x.max()) == 16.0


# ---------------------------------------------------------------- IDX files


def _write_mnist_like(folder, n=30, side=28, gz=True, sep="-", seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
    labels = (np.arange(n) % 3).astype(np.uint8)
    ext = ".gz" if gz else ""
    write_idx(folder / f"train-images{sep}idx3-ubyte{ext}", images)
    write_idx(folder / f"train-labels{sep}idx1-ubyte{ext}", labels)
    return images, labels


@pytest.mark.parametrize(("gz", "sep"), [(True, "-"), (False, "-"), (False, ".")])
def test_idx_round_trip(tmp_path, gz, sep):
    images, labels = _write_mnist_like(tmp_path, gz=gz, sep=sep)
    d = load_idx(tmp_path, dtype=torch.float64)
    assert d.x.shape == (30, 1, 28, 28) and d.num_classes == 3
    torch.testing.assert_close(d.x[:, 0], torch.from_numpy(images).double() / 255, rtol=0, atol=0)
    assert d.y.tolist() == labels.tolist()
    small = load_idx(tmp_path, size=14, flatten=True, dtype=torch.float64)
    expected = torch.from_numpy(images).double().reshape(30, 14, 2, 14, 2).mean((2, 4)) / 255
    torch.testing.assert_close(small.x, expected.reshape(30, -1))
    sub = load_idx(tmp_path, subset=9, seed=1)
    assert sub.class_counts().tolist() == [3, 3, 3]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_write_idx_any_dtype(tmp_path, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == np.uint8:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / "a.idx", arr))
    assert out.dtype == arr.dtype and np.array_equal(out, arr)


def test_idx_bad_magic_and_corrupt_files_say_what_is_wrong(tmp_path):
    _write_mnist_like(tmp_path, gz=False)
    img, lab = tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte"
    with pytest.raises(ValueError, match=r"magic number 2049 .* swapped"):
        read_idx(lab, expect_magic=2051)
    # Swap the two files' contents: the loader must refuse rather than misread.
    a, b = img.read_bytes(), lab.read_bytes()
    img.write_bytes(b)
    lab.write_bytes(a)
    with pytest.raises(ValueError, match="swapped"):
        load_idx(tmp_path)
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n....")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(junk)
    trunc = tmp_path / "trunc"
    trunc.write_bytes(a[:-10])
    with pytest.raises(ValueError, match="bytes"):
        read_idx(trunc)


def test_idx_missing_files_list_the_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\[\.gz\].*readme\.txt"):
        load_idx(tmp_path)


def test_downsample_exact_block_average_and_bad_size():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float64).reshape(2, 1, 4, 4)
    torch.testing.assert_close(downsample(x, 2), x.reshape(2, 1, 2, 2, 2, 2).mean((3, 5)))
    with pytest.raises(ValueError, match="size must be"):
        downsample(x, 5)


# ---------------------------------------------------------------- CIFAR-10 batches


def _cifar(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_round_trip(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    parts = [_cifar(6, s) for s in range(3)]
    # Numbered 1, 2, 10: the train split must concatenate them in numeric order.
    for k, (im, lab) in zip((1, 2, 10), parts):
        write_cifar10_batch(folder / f"data_batch_{k}", im, lab, protocol=protocol)
    test_im, test_lab = _cifar(4, 9)
    write_cifar10_batch(folder / "test_batch", test_im, test_lab, protocol=protocol)
    im, lab = read_cifar10_batch(folder / "test_batch")
    assert np.array_equal(im, test_im) and lab.tolist() == test_lab.tolist()
    tr = load_cifar10(tmp_path, dtype=torch.float64)  # the parent folder works too
    assert tr.x.shape == (18, 3, 32, 32) and tr.num_classes == 10
    expected = np.concatenate([p[0] for p in parts]).astype(np.float64) / 255
    torch.testing.assert_close(tr.x, torch.from_numpy(expected), rtol=0, atol=0)
    assert tr.y.tolist() == np.concatenate([p[1] for p in parts]).tolist()
    te = load_dataset(f"cifar10:{folder}", split="test", size=8)
    assert te.x.shape == (4, 3, 8, 8)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_cifar10_refuses_pickles_that_run_code(tmp_path):
    target = tmp_path / "pwned"
    bad = tmp_path / "test_batch"
    bad.write_bytes(pickle.dumps({"data": _Evil(target), "labels": [0]}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        read_cifar10_batch(bad)
    assert not target.exists()


def test_cifar10_wrong_content_and_missing_folder(tmp_path):
    bad = tmp_path / "test_batch"
    bad.write_bytes(pickle.dumps({"data": np.zeros((2, 10), np.uint8), "labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"uint8 \[N, 3072\]"):
        read_cifar10_batch(bad)
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        load_cifar10(tmp_path / "nowhere")


# ---------------------------------------------------------------- Fashion-MNIST and registry


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_from_debian_package():
    d = load_fashion_mnist("test", size=14, subset=200, seed=0)
    assert d.x.shape == (200, 1, 14, 14) and d.class_counts().tolist() == [20] * 10
    assert 0.0 <= float(d.x.min()) and float(d.x.max()) <= 1.0 and d.name == "fashion-mnist"
    again = load_dataset("fashion-mnist", split="test", size=14, subset=200, seed=0)
    assert torch.equal(again.x, d.x)


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(root=tmp_path / "absent")


def test_registry_names_paths_and_errors(tmp_path):
    _write_mnist_like(tmp_path)
    assert len(load_dataset(f"mnist-idx:{tmp_path}")) == 30
    assert load_dataset("gmm", num_classes=4, dim=2, num_samples=40).num_classes == 4
    assert {"digits", "fashion-mnist", "gmm", "mnist-idx:PATH", "cifar10:PATH"} <= set(list_datasets())
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'; valid names: .*digits.*mnist-idx:PATH"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="use 'cifar10:PATH'"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("digits", load_digits)
