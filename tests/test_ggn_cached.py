"""The Gauss–Newton family through a kept linearisation: exact, never stale, chosen by a recorded rule."""

import pytest
import torch
from torch import nn

import curvscope.operators.graphs as graphs
from curvscope import GGN, GradientMoment, Hessian, Residual
from curvscope.operators.dense import dense_ggn, dense_gradient_moment, dense_hessian
from curvscope.operators.strategies import rule_order
from tiny_models import CASES, make_case

DT = torch.float64
CE = nn.CrossEntropyLoss()
KEPT = {GGN: ("cached", "cached_batched", "linearize"), GradientMoment: ("cached", "cached_batched", "linearize")}
KEPT[Residual] = ("cached", "cached_batched")


def rel_err(A, B):
    return ((A - B).abs().max() / B.abs().max().clamp(min=1e-300)).item()


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return make_case(request.param)


@pytest.fixture(scope="module")
def dense(case):
    H = dense_hessian(case.model, case.loss_fn, case.full)
    G = dense_ggn(case.model, case.loss_fn, case.full)
    return {GGN: G, Residual: H - G, GradientMoment: dense_gradient_moment(case.model, case.loss_fn, case.full)}


@pytest.mark.parametrize("Op", [GGN, GradientMoment, Residual], ids=lambda c: c.__name__)
@pytest.mark.parametrize("strategy", ["cached", "cached_batched", "linearize"])
def test_kept_products_equal_the_rebuilt_ones_and_dense(case, dense, Op, strategy):
    """float64: the kept path equals the per-product rebuild and the dense matrix to 1e-12, twice (reuse)."""
    if strategy not in KEPT[Op]:
        pytest.skip(f"{Op.__name__} has no {strategy!r} strategy")
    op = Op(case.model, case.loss_fn, case.batches, strategy=strategy, cache_graphs=True)
    old = Op(case.model, case.loss_fn, case.batches, strategy="loop", cache_graphs=False, probe=False)
    V = torch.randn(op.shape[0], 3, dtype=DT, generator=torch.Generator().manual_seed(5))
    reference = old @ V
    assert rel_err(reference, dense[Op] @ V) <= 1e-12
    for _ in range(2):
        assert rel_err(op @ V, reference) <= 1e-12
        assert rel_err(op @ V[:, 0], reference[:, 0]) <= 1e-12
    assert op.strategy_record["block+cached"] == strategy and len(op._graphs) == len(case.batches)


def test_ggn_keeps_its_linearisation_by_default_and_the_rule_is_recorded(case):
    G = GGN(case.model, case.loss_fn, case.batches)
    assert G.cache_graphs
    G @ torch.randn(G.shape[0], dtype=DT)
    conv = case.name == "cnn_bn"
    assert G.strategy_record["single+cached"] == ("linearize" if conv else "cached")
    assert G.chosen_strategy(1) == G.strategy_record["single+cached"]


def test_rule_order_for_the_gauss_newton_family():
    kept = ["vmap", "loop", "cached", "cached_batched", "linearize"]
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert rule_order(kept, 1, convolutional=False, device=cpu, cached=True)[:2] == ["cached", "linearize"]
    assert rule_order(kept, 1, convolutional=True, device=cpu, cached=True)[:2] == ["linearize", "cached"]
    assert rule_order(kept, 8, convolutional=False, device=cpu, cached=True)[:3] == [
        "cached",
        "cached_batched",
        "linearize",
    ]
    assert rule_order(kept, 8, convolutional=False, device=gpu, cached=True)[0] == "cached_batched"
    assert rule_order(kept, 1, convolutional=True, device=cpu, cached=False)[0] == "loop"


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).to(DT)


def data(n=6, batches=3):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(n, 3, dtype=DT, generator=g), torch.arange(n) % 2) for _ in range(batches)]


@pytest.mark.parametrize("Op", [GGN, GradientMoment, Residual], ids=lambda c: c.__name__)
@pytest.mark.parametrize("strategy", ["cached", "linearize"])
def test_in_place_parameter_edit_never_uses_a_stale_linearisation(mlp, Op, strategy):
    if strategy not in KEPT[Op]:
        pytest.skip(f"{Op.__name__} has no {strategy!r} strategy")
    op = Op(mlp, CE, data(), strategy=strategy)
    v = torch.randn(op.shape[0], dtype=DT, generator=torch.Generator().manual_seed(2))
    before = op @ v
    kept = [op._graphs.entry(i) for i in range(3)]
    with torch.no_grad():
        for t in op.problem.values.values():
            t.mul_(1.3)
    after = op @ v
    fresh = Op(mlp, CE, data(), cache_graphs=False, probe=False)
    with torch.no_grad():
        for t in fresh.problem.values.values():
            t.mul_(1.3)
    expected = fresh @ v
    assert not torch.allclose(before, expected)
    assert rel_err(after, expected) <= 1e-12
    assert all(op._graphs.entry(i) is not kept[i] for i in range(3))


@pytest.mark.parametrize("strategy", ["cached", "linearize"])
def test_edited_or_replaced_batch_gives_fresh_ggn_products(mlp, strategy):
    batches = data()
    G = GGN(mlp, CE, batches, strategy=strategy)
    V = torch.randn(G.shape[0], 2, dtype=DT, generator=torch.Generator().manual_seed(1))
    before = G @ V
    with torch.no_grad():
        batches[1][0].mul_(-2.0)
    x, y = batches[2]
    batches[2] = (x * 0.5 + 1.0, y.flip(0))
    expected = GGN(mlp, CE, [(x.clone(), y.clone()) for x, y in batches], cache_graphs=False, probe=False) @ V
    assert not torch.allclose(before, expected)
    assert rel_err(G @ V, expected) <= 1e-12


def test_linearisations_are_kept_only_within_the_memory_budget(mlp, monkeypatch):
    assert GGN(mlp, CE, data()).cache_graphs and Residual(mlp, CE, data()).cache_graphs
    monkeypatch.setattr(graphs, "GRAPH_CACHE_FRACTION", 0.0)
    assert not GGN(mlp, CE, data()).cache_graphs and not GradientMoment(mlp, CE, data()).cache_graphs
    with pytest.raises(ValueError, match="has no strategy 'linearize'"):
        GGN(mlp, CE, data(), strategy="linearize")
    with pytest.raises(ValueError, match="has no strategy 'linearize'"):
        Hessian(mlp, CE, data(), strategy="linearize")


def test_linearize_that_cannot_trace_falls_back_loudly_to_the_double_vjp(mlp):
    """A model torch.func.linearize cannot trace (data-dependent control flow) still gets exact products."""

    class Branchy(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            out = self.inner(x)
            return out * 2 if bool(out.sum() > -1e9) else out  # .item()-style branch: untraceable

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)).to(DT)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 1, 4, 4, dtype=DT, generator=g), torch.arange(4) % 2) for _ in range(2)]
    G = GGN(Branchy(model), CE, batches)
    reference = GGN(Branchy(model), CE, batches, cache_graphs=False, probe=False, strategy="loop")
    V = torch.randn(G.shape[0], 2, dtype=DT, generator=g)
    with pytest.warns(RuntimeWarning, match="'linearize' product strategy cannot run this model"):
        got = G @ V
    assert G.strategy_record["block+cached"] == "cached"
    assert rel_err(got, reference @ V) <= 1e-12


def test_class_sums_share_the_ggn_linearisations(mlp):
    """ClassStructure's one pass builds the GGN's kept linearisations; the within term's products reuse them."""
    from curvscope import ClassStructure

    batches = data()
    cs = ClassStructure(mlp, CE, batches)
    plain = ClassStructure(mlp, CE, batches, cache_graphs=False)
    V = torch.randn(cs.ggn.shape[0], 2, dtype=DT, generator=torch.Generator().manual_seed(3))
    assert rel_err(cs.class_term @ V, plain.class_term @ V) <= 1e-12
    assert len(cs.ggn._graphs) == len(batches)
    kept = [cs.ggn._graphs.entry(i) for i in range(len(batches))]
    assert rel_err(cs.within_term @ V, plain.within_term @ V) <= 1e-12
    assert all(cs.ggn._graphs.entry(i) is kept[i] for i in range(len(batches)))


def test_block_rule_is_one_vector_per_call_on_a_cpu_and_the_block_on_a_gpu(mlp):
    from curvscope.operators.strategies import block_width

    assert block_width(torch.device("cpu"), 32) == 1 and block_width(torch.device("cuda"), 32) == 32
    assert GGN(mlp, CE, data(), max_block=16).block_width == 1  # these tests run on the CPU
    G = GGN(mlp, CE, data(), probe=False)
    G @ torch.randn(G.shape[0], 4, dtype=DT)
    assert G.strategy_record["block+cached"] == "cached"  # looped, not batched, on the CPU
