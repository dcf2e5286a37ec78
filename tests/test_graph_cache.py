"""Retained gradient graphs: when the Hessian keeps them, and that a kept graph never gives a stale product."""

import pytest
import torch
from torch import nn

import curvscope.operators.curvature as curvature
from curvscope import GGN, Hessian
from curvscope.operators import NondeterministicProductError

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
    assert not GGN(mlp, CE, data()).cache_graphs
    with pytest.raises(ValueError, match="no gradient graph to cache; pass cache_graphs=False"):
        GGN(mlp, CE, data(), cache_graphs=True)
    with pytest.raises(ValueError, match="strategy must be 'auto' or one of"):
        Hessian(mlp, CE, data(), strategy="cached", cache_graphs=False)
    monkeypatch.setattr(curvature, "GRAPH_CACHE_FRACTION", 0.0)  # graphs that would not fit are not kept
    assert not Hessian(mlp, CE, data()).cache_graphs


def test_auto_calibrates_again_once_graphs_are_allowed(mlp):
    H = Hessian(mlp, CE, data())
    v = torch.randn(H.shape[0], dtype=DT)
    first = H @ v  # first product and the determinism probe: no graph is kept yet
    assert not H._graphs and H.chosen_strategy() in ("loop", "autograd")
    again = H @ v
    assert "single+cached" in H._chosen and torch.allclose(first, again, rtol=1e-12, atol=1e-14)
    if H.chosen_strategy() in curvature.CACHED:
        assert len(H._graphs) == 3
    H.clear_graph_cache()
    assert not H._graphs and torch.allclose(H @ v, first, rtol=1e-12, atol=1e-14)


def test_in_place_parameter_edit_rebuilds_the_graphs(mlp):
    H = Hessian(mlp, CE, data(), strategy="cached")
    v = torch.randn(H.shape[0], dtype=DT)
    H @ v, H @ v
    kept = dict(H._graphs)
    with torch.no_grad():
        for t in [*H.problem.values.values(), *mlp.parameters()]:
            t.mul_(1.1)
    fresh = Hessian(mlp, CE, data(), cache_graphs=False)
    assert torch.allclose(H @ v, fresh @ v, rtol=1e-12, atol=1e-14)
    assert all(H._graphs[i] is not kept[i] for i in kept)


def test_dropout_is_still_caught_with_graphs_allowed():
    model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Tanh(), nn.Linear(8, 2)).to(DT)
    with pytest.warns(UserWarning, match="dropout is active"):
        H = Hessian(model, CE, data(), mode="train")
    assert H.cache_graphs
    with pytest.raises(NondeterministicProductError):
        H @ torch.randn(H.shape[0], dtype=DT)
