"""Operator policies: counts as read, fingerprints, strategy failures, determinism, noise floor, precision."""

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import curvscope.operators.batches as problem_mod
from curvscope import GGN, Hessian
from curvscope.operators.dense import dense_hessian
from curvscope.operators.fingerprint import fingerprint_differences
from curvscope.operators.strategies import ProductError, is_benign

DT = torch.float64
CE = nn.CrossEntropyLoss()


def mlp(dtype=DT, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).to(dtype)


def tensors(n=10, dtype=DT, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, dtype=torch.float64, generator=g).to(dtype), torch.arange(n) % 2


def batches(n=10, size=4, dtype=DT, seed=0):
    x, y = tensors(n, dtype, seed)
    return [(x[i : i + size], y[i : i + size]) for i in range(0, n, size)]


# --------------------------------------------------------------- counts as read
@pytest.mark.parametrize("check_data", [True, False])
def test_drop_last_loader_counts_what_it_yields(check_data):
    x, y = tensors(10)
    loader = DataLoader(TensorDataset(x, y), batch_size=4, drop_last=True)
    H = Hessian(mlp(), CE, loader, check_data=check_data)
    assert H.num_samples == 8  # len(dataset) would say 10
    expected = dense_hessian(mlp(), CE, [(x[:8], y[:8])])
    torch.testing.assert_close(H.to_dense(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("check_data", [True, False])
def test_distributed_sampler_shard_counts_its_samples(check_data):
    x, y = tensors(11)
    sampler = DistributedSampler(TensorDataset(x, y), num_replicas=2, rank=1, shuffle=False, drop_last=True)
    loader = DataLoader(TensorDataset(x, y), batch_size=3, sampler=sampler)
    assert Hessian(mlp(), CE, loader, check_data=check_data, distributed=False).num_samples == 5


# ------------------------------------------------------------------ fingerprints
def test_fingerprint_is_stable_and_names_each_change():
    base = Hessian(mlp(), CE, batches()).fingerprint()
    assert Hessian(mlp(), CE, batches()).fingerprint() == base

    def changed(**kw):
        args = {"model": mlp(), "loss_fn": CE, "data": batches(), **kw.pop("args", {})}
        op = kw.pop("op", Hessian)(**args, **kw)
        return " ".join(fingerprint_differences(base, op.fingerprint()))

    assert "kind" in changed(op=GGN)
    assert "values" in changed(args={"model": mlp(seed=1)})
    assert "data.contents" in changed(args={"data": batches(seed=1)})
    assert "data.num_samples" in changed(args={"data": batches(n=9)})
    assert "mode" in changed(mode="train")
    assert "dtype" in changed(dtype=torch.float32)
    assert "params" in changed(params=["2.*"])
    assert "loss.settings" in changed(args={"loss_fn": nn.CrossEntropyLoss(label_smoothing=0.3)})
    relu = mlp()
    relu[1] = nn.ReLU()  # same weights, another activation: another Hessian
    assert "model.structure" in changed(args={"model": relu})


def test_fingerprint_of_a_shuffling_loader_is_order_independent():
    x, y = tensors(12)
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)
    with pytest.warns(UserWarning, match="shuffles"):
        first = Hessian(mlp(), CE, loader).fingerprint()
        assert Hessian(mlp(), CE, loader).fingerprint() == first


def test_fingerprint_follows_an_edited_batch_list():
    data = batches()
    H = Hessian(mlp(), CE, data)
    before = H.fingerprint()
    with torch.no_grad():
        data[0][0].add_(1.0)
    assert "data.contents" in " ".join(fingerprint_differences(before, H.fingerprint()))


# ---------------------------------------------------------- strategy failures
class Flaky(nn.Module):
    """Runs fine during validation, then raises the given error inside products."""

    def __init__(self, error):
        super().__init__()
        self.net, self.error, self.calls = mlp(), error, 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 1:  # the first call is the validation forward
            raise self.error
        return self.net(x)


@pytest.mark.parametrize(
    "error",
    [ValueError("user bug in forward"), MemoryError("host out of memory"), KeyError("labels")],
    ids=["user_error", "out_of_memory", "key_error"],
)
def test_fatal_errors_propagate_at_once(error):
    model = Flaky(error)
    H = Hessian(model, CE, batches(), probe=False, cache_graphs=False, check_data=False)
    with pytest.raises(type(error), match=str(error.args[0])):
        H @ torch.randn(H.shape[0], dtype=DT)
    assert model.calls == 2  # no second strategy was tried


def test_keyboard_interrupt_is_never_swallowed():
    H = Hessian(Flaky(KeyboardInterrupt()), CE, batches(), probe=False, cache_graphs=False, check_data=False)
    with pytest.raises(KeyboardInterrupt):
        H @ torch.randn(H.shape[0], dtype=DT)


def test_benign_failure_warns_and_falls_back_and_all_failures_are_listed():
    assert is_benign(RuntimeError("Batching rule not implemented for aten::foo")) and is_benign(NotImplementedError())
    assert not is_benign(RuntimeError("CUDA out of memory. Tried to allocate")) and not is_benign(ValueError("vmap"))
    model = Flaky(RuntimeError("vmap: data-dependent control flow is not supported"))
    H = Hessian(model, CE, batches(), probe=False, cache_graphs=False, check_data=False)
    with pytest.warns(RuntimeWarning, match="cannot run this model"), pytest.raises(ProductError) as info:
        H @ torch.randn(H.shape[0], 3, dtype=DT)
    assert all(f"{s}: RuntimeError" in str(info.value) for s in ("vmap", "autograd", "loop"))


# ------------------------------------------------------------ determinism rule
def test_default_products_are_bitwise_reproducible_and_recorded():
    V = torch.randn(32, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    ops = [Hessian(mlp(), CE, batches()) for _ in range(2)]
    results = [(op @ V, op @ V[:, 0], op @ V) for op in ops]
    for a, b in zip(*results):
        assert torch.equal(a, b)
    assert ops[0].strategy_record == ops[1].strategy_record
    assert set(ops[0].strategy_record) >= {"single", "single+cached", "block+cached"}  # probe repeat: fresh


def test_tune_is_explicit_and_gives_the_same_products_to_round_off():
    V = torch.randn(32, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    tuned = Hessian(mlp(), CE, batches(), strategy="tune")
    torch.testing.assert_close(tuned @ V, Hessian(mlp(), CE, batches()) @ V, rtol=1e-12, atol=1e-14)
    assert tuned.strategy_record


# ------------------------------------------------------------ noise and precision
@pytest.mark.parametrize("dtype,low,high", [(torch.float64, 1e-16, 1e-12), (torch.float32, 1e-8, 1e-5)])
def test_noise_floor_is_measured_at_the_dtypes_rounding(dtype, low, high):
    H = Hessian(mlp(dtype), CE, batches(dtype=dtype))
    floor = H.noise_floor
    assert low <= floor <= high, floor
    assert H.probe_report.reference == ("repeat" if dtype == torch.float64 else "float64")


def test_bf16_model_is_computed_in_float32_with_one_warning():
    problem_mod._WARNED_LOW_PRECISION.discard(torch.bfloat16)
    model = mlp(torch.bfloat16)
    with pytest.warns(UserWarning, match="run in float32 on upcast copies"):
        H = Hessian(model, CE, batches(dtype=torch.bfloat16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Hessian(model, CE, batches(dtype=torch.bfloat16))  # warned once per process
    assert H.dtype == torch.float32 and next(model.parameters()).dtype == torch.bfloat16
    exact = dense_hessian(mlp(torch.bfloat16).double(), CE, batches(dtype=torch.bfloat16))
    torch.testing.assert_close(H.to_dense().double(), exact, rtol=1e-5, atol=1e-6)
    assert H.noise_floor < 1e-5  # no nondeterminism error: float32 rounding is noise, not randomness


def test_float32_products_summed_over_100_batches_match_float64():
    x, y = tensors(1000, seed=3)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    data64 = [(x[i : i + 10], y[i : i + 10]) for i in range(0, 1000, 10)]
    data32 = [(a.float(), b) for a, b in data64]
    V = torch.randn(98, 4, dtype=DT, generator=torch.Generator().manual_seed(0))
    exact = Hessian(model, CE, data64) @ V
    got = Hessian(model.float(), CE, data32) @ V.float()
    err = ((got.double() - exact).norm(dim=0) / exact.norm(dim=0)).max().item()
    assert err < 3e-6, err


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_operators_export_to_dense_and_scipy(dtype):
    import numpy as np

    from curvscope.operators import DenseOperator

    M = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=dtype)
    A = DenseOperator(M)
    assert torch.equal(A.to_dense(), M)
    S = A.to_scipy()
    assert S.dtype == np.float32
    np.testing.assert_allclose(S @ np.ones(2, dtype=np.float32), [3.0, 4.0])
    np.testing.assert_allclose(S @ np.eye(2, dtype=np.float32), M.float().numpy())
