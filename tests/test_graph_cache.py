"""Retained gradient graphs: when the Hessian keeps them, and that a kept graph never gives a stale product."""

import pytest
import torch
from torch import nn

import curvscope.operators.graphs as graphs
from curvscope import GGN, ClassStructure, GradientCovariance, Hessian
from curvscope.operators import NondeterministicProductError
from curvscope.operators.curvature import CurvatureOperator

DT = torch.float64
CE = nn.CrossEntropyLoss()


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).to(DT)


def data(n=6, batches=3):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(n, 3, dtype=DT, generator=g), torch.arange(n) % 2) for _ in range(batches)]


class Loader:
    """A re-iterable that is not a list: it could yield other samples on the next pass."""

    def __iter__(self):
        return iter(data())


def test_kept_for_a_fixed_list_that_fits_and_only_by_operators_with_a_graph(mlp, monkeypatch):
    assert Hessian(mlp, CE, data()).cache_graphs
    assert not Hessian(mlp, CE, Loader()).cache_graphs
    assert GGN(mlp, CE, data()).cache_graphs  # its linearisation (test_ggn_cached.py)

    class Plain(Hessian):  # an operator without a kept form
        _gradient_graph = CurvatureOperator._gradient_graph

    assert not Plain(mlp, CE, data()).cache_graphs
    with pytest.raises(ValueError, match="no gradient graph to cache; pass cache_graphs=False"):
        Plain(mlp, CE, data(), cache_graphs=True)
    with pytest.raises(ValueError, match="has no strategy 'cached'"):
        Hessian(mlp, CE, data(), strategy="cached", cache_graphs=False)
    monkeypatch.setattr(graphs, "GRAPH_CACHE_FRACTION", 0.0)  # graphs that would not fit are not kept
    assert not Hessian(mlp, CE, data()).cache_graphs


def test_graphs_are_kept_only_after_the_probe_and_used_by_the_rule(mlp):
    H = Hessian(mlp, CE, data())
    v = torch.randn(H.shape[0], dtype=DT)
    first = H @ v  # the probe runs first without kept graphs; the user's product then keeps them
    assert H.probe_report is not None and len(H._graphs) == 3
    assert H.strategy_record["single+cached"] == "cached" and H.strategy_record["single"] == "autograd"
    again = H @ v
    assert torch.allclose(first, again, rtol=1e-12, atol=1e-14)
    H.clear_graph_cache()
    assert len(H._graphs) == 0 and torch.allclose(H @ v, first, rtol=1e-12, atol=1e-14)


def test_in_place_parameter_edit_rebuilds_the_graphs(mlp):
    H = Hessian(mlp, CE, data(), strategy="cached")
    v = torch.randn(H.shape[0], dtype=DT)
    H @ v, H @ v
    kept = [H._graphs.entry(i) for i in range(3)]
    with torch.no_grad():
        for t in [*H.problem.values.values(), *mlp.parameters()]:
            t.mul_(1.1)
    fresh = Hessian(mlp, CE, data(), cache_graphs=False)
    assert torch.allclose(H @ v, fresh @ v, rtol=1e-12, atol=1e-14)
    assert all(H._graphs.entry(i) is not kept[i] for i in range(3))


def _edit_in_place(batches):
    with torch.no_grad():
        batches[1][0].mul_(-2.0)


def _replace(batches):
    x, y = batches[1]
    batches[1] = (x * 0.5 + 1.0, y.flip(0))


@pytest.mark.parametrize("edit", [_edit_in_place, _replace], ids=["edit_in_place", "replace_item"])
@pytest.mark.parametrize("kind", ["hessian_cached", "covariance", "class_structure"])
def test_changed_batches_give_fresh_products(mlp, edit, kind):
    """A kept graph, a cached mean gradient or cached class sums never outlive the batch they came from."""
    batches = data()

    def build(b):  # a product function reading the operator anew each time
        if kind == "hessian_cached":
            op = Hessian(mlp, CE, b, strategy="cached")
            return lambda V: op @ V
        if kind == "covariance":
            op = GradientCovariance(mlp, CE, b)
            return lambda V: op @ V
        cs = ClassStructure(mlp, CE, b)
        return lambda V: cs.cross_term @ V

    product = build(batches)
    V = torch.randn(32, 2, dtype=DT, generator=torch.Generator().manual_seed(1))
    before = product(V)
    edit(batches)
    after = product(V)
    expected = build([(x.clone(), y.clone()) for x, y in batches])(V)
    assert not torch.allclose(before, expected)
    torch.testing.assert_close(after, expected, rtol=1e-12, atol=1e-14)


def test_dropout_is_still_caught_with_graphs_allowed():
    model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Tanh(), nn.Linear(8, 2)).to(DT)
    with pytest.warns(UserWarning, match="dropout is active"):
        H = Hessian(model, CE, data(), mode="train")
    assert H.cache_graphs
    with pytest.raises(NondeterministicProductError):
        H @ torch.randn(H.shape[0], dtype=DT)
