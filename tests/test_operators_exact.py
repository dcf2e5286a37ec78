"""Exact tier: every curvature operator against the dense float64 reference on tiny models."""

import pytest
import torch
from torch import nn

from curvscope import GGN, ClassStructure, GradientCovariance, GradientMoment, Hessian, Residual
from curvscope.operators.dense import (
    dense_class_structure,
    dense_ggn,
    dense_gradient_moment,
    dense_hessian,
    dense_residual,
    finite_difference_hessian,
)
from curvscope.operators.strategies import CACHED
from tiny_models import CASES, make_case

RTOL = 1e-8


def assert_close(A, B, rtol=RTOL, what=""):
    scale = B.abs().max().item()
    err = (A - B).abs().max().item()
    assert err <= rtol * max(scale, 1e-300), f"{what}: max error {err:.3e} vs scale {scale:.3e}"


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return make_case(request.param)


@pytest.fixture(scope="module")
def dense(case):
    H = dense_hessian(case.model, case.loss_fn, case.full)
    G = dense_ggn(case.model, case.loss_fn, case.full)
    return {"H": H, "G": G}


def test_dense_hessian_matches_finite_differences(case, dense):
    fd = finite_difference_hessian(case.model, case.loss_fn, case.full)
    assert_close(dense["H"], fd, rtol=1e-6, what="dense vs finite differences")


@pytest.mark.parametrize(
    "Op,key",
    [(Hessian, "H"), (GGN, "G"), (Residual, "R")],
)
def test_operator_matches_dense_vectors_and_blocks(case, dense, Op, key):
    ref = dense["H"] - dense["G"] if key == "R" else dense[key]
    op = Op(case.model, case.loss_fn, case.batches)
    D = op.shape[0]
    g = torch.Generator().manual_seed(3)
    V = torch.randn(D, 5, dtype=torch.float64, generator=g)
    assert_close(op @ V, ref @ V, what=f"{Op.__name__} block")
    assert_close(op @ V[:, 0], ref @ V[:, 0], what=f"{Op.__name__} vector")
    assert_close(op.to_dense(), ref, what=f"{Op.__name__} to_dense")


@pytest.mark.parametrize("strategy", ["vmap", "loop", "autograd", "cached", "cached_batched"])
def test_every_hessian_strategy_matches_dense(case, dense, strategy):
    """Each way of computing a product, forced, on every model; twice, so retained graphs are reused."""
    if case.name == "mse_layernorm_silu" and strategy in ("vmap", "loop"):
        pytest.skip("torch 2.13: jvp(grad) through F.mse_loss raises 'ZeroTensors are immutable' (auto falls back)")
    op = Hessian(case.model, case.loss_fn, case.batches, strategy=strategy, cache_graphs=strategy in CACHED)
    V = torch.randn(op.shape[0], 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for _ in range(2):
        assert_close(op @ V, dense["H"] @ V, what=f"{strategy} block")
        assert_close(op @ V[:, 0], dense["H"] @ V[:, 0], what=f"{strategy} vector")
    assert (len(op._graphs or ()) == len(case.batches)) == (strategy in CACHED)


def test_residual_matches_dense_difference(case):
    R = dense_residual(case.model, case.loss_fn, case.full)
    op = Residual(case.model, case.loss_fn, case.batches)
    assert_close(op.to_dense(), R)


def test_gradient_moment_and_covariance(case):
    for centered, Op in ((False, GradientMoment), (True, GradientCovariance)):
        ref = dense_gradient_moment(case.model, case.loss_fn, case.full, centered=centered)
        op = Op(case.model, case.loss_fn, case.batches)
        assert_close(op.to_dense(), ref, what=Op.__name__)


def test_class_structure_terms(case):
    if case.classes is None:
        pytest.skip("class structure is defined for cross-entropy")
    ref = dense_class_structure(case.model, case.loss_fn, case.full)
    cs = ClassStructure(case.model, case.loss_fn, case.batches)
    got = {
        "ggn": cs.ggn,
        "class": cs.class_term,
        "cross": cs.cross_term,
        "within": cs.within_term,
        "papyan_between": cs.papyan_between,
        "papyan_within": cs.papyan_within,
    }
    for key, op in got.items():
        assert_close(op.to_dense(), ref[key], what=key)
    # the independent dense terms sum to G to round-off
    assert_close(ref["class"] + ref["cross"] + ref["within"], ref["ggn"], rtol=1e-12, what="identity")


def test_parameter_subset_is_dense_sub_block(case, dense):
    names = [n for n, _ in case.model.named_parameters()]
    chosen = [names[0], names[-1]]
    sizes = {n: p.numel() for n, p in case.model.named_parameters()}
    offsets, start = {}, 0
    for n in names:
        offsets[n] = (start, start + sizes[n])
        start += sizes[n]
    idx = torch.cat([torch.arange(*offsets[n]) for n in chosen])
    op = Hessian(case.model, case.loss_fn, case.batches, params=chosen)
    assert op.shape[0] == idx.numel()
    assert_close(op.to_dense(), dense["H"][idx][:, idx])


def test_float32_model_with_float64_operator():
    case = make_case("mlp_tanh")
    model32 = case.model.float()
    try:
        op = Hessian(model32, case.loss_fn, [(x.float(), y) for x, y in case.batches], dtype=torch.float64)
        assert op.dtype == torch.float64
        model64 = model32.double()
        full = [(x.float().double(), y) for x, y in case.full]  # the same rounded inputs
        assert_close(op.to_dense(), dense_hessian(model64, case.loss_fn, full), rtol=1e-8)
    finally:
        case.model.double()


def test_float32_operator_follows_parameters():
    case = make_case("mlp_relu")
    model = case.model.float()
    op = GGN(model, case.loss_fn, [(x.float(), y) for x, y in case.batches])
    assert op.dtype == torch.float32
    ref = dense_ggn(model.double(), case.loss_fn, case.full)
    assert_close(op.to_dense().double(), ref, rtol=1e-5)


def test_functional_model():
    g = torch.Generator().manual_seed(0)
    params = {"w": torch.randn(4, 3, dtype=torch.float64, generator=g), "b": torch.zeros(3, dtype=torch.float64)}

    def f(p, x):
        return torch.tanh(x @ p["w"]) + p["b"]

    data = [(torch.randn(6, 4, dtype=torch.float64, generator=g), torch.arange(6) % 3)]
    H = Hessian(f, nn.CrossEntropyLoss(), data, params=params).to_dense()
    mod = nn.Linear(4, 3, bias=True).double()  # same function, built as a module for the dense reference
    _ = mod

    from curvscope.operators.dense import finite_difference_hessian as fdh
    from curvscope.operators.problem import LossProblem

    fd = fdh(LossProblem(f, nn.CrossEntropyLoss(), data, params))
    assert_close(H, fd, rtol=1e-6)


def test_block_uses_loop_fallback_when_vmap_fails():
    case = make_case("mse_layernorm_silu")
    op = Hessian(case.model, case.loss_fn, case.batches)
    ref = dense_hessian(case.model, case.loss_fn, case.full)
    V = torch.randn(op.shape[0], 4, dtype=torch.float64)
    assert_close(op @ V, ref @ V)


def test_layernorm_hessian_is_symmetric_and_matches_fd():
    """Regression: torch.func.hessian is wrong for Linear→LayerNorm in torch 2.13; ours must not be."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)).double()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
    data = [(torch.randn(5, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1]))]
    fd = finite_difference_hessian(model, nn.CrossEntropyLoss(), data)
    H = Hessian(model, nn.CrossEntropyLoss(), data).to_dense()
    assert_close(H, H.T, rtol=1e-12, what="symmetry")
    assert_close(H, fd, rtol=1e-6, what="vs finite differences")
