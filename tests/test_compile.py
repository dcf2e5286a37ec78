"""compile=True: compiled products equal eager ones in float64; a missing toolchain or graph is never silent."""

import pytest
import torch
from torch import nn

import curvscope.operators.compiled as compiled
from curvscope import GGN, GradientMoment, Hessian
from curvscope.operators.compiled import compile_unavailable

DT = torch.float64
CE = nn.CrossEntropyLoss()
REASON = compile_unavailable("cpu")


def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(DT)
    g = torch.Generator().manual_seed(0)
    return model, [(torch.randn(10, 4, dtype=DT, generator=g), torch.arange(10) % 3)]


def rel_err(A, B):
    return ((A - B).abs().max() / B.abs().max()).item()


@pytest.mark.skipif(REASON is not None, reason=f"torch.compile cannot run here: {REASON}")
@pytest.mark.parametrize(
    "Op", [Hessian, GGN, pytest.param(GradientMoment, marks=pytest.mark.slow)], ids=lambda c: c.__name__
)
def test_compiled_products_equal_eager_in_float64(Op):
    model, data = problem()
    op = Op(model, CE, data, compile=True, probe=False, cache_graphs=False)
    eager = Op(model, CE, data, strategy="loop", probe=False, cache_graphs=False)
    V = torch.randn(op.shape[0], 2, dtype=DT, generator=torch.Generator().manual_seed(1))
    assert rel_err(op @ V, eager @ V) <= 1e-12
    assert rel_err(op @ V[:, 0], eager @ V[:, 0]) <= 1e-12
    assert op.strategy_record == {"block": "compiled", "single": "compiled"}


def test_no_toolchain_raises_with_the_fix(monkeypatch):
    monkeypatch.setattr(compiled, "compile_unavailable", lambda device_type: "no C++ compiler found (install g++)")
    model, data = problem()
    with pytest.raises(RuntimeError, match=r"compile=True: no C\+\+ compiler found.*Pass compile=False"):
        Hessian(model, CE, data, compile=True)


def test_a_graph_the_compiler_refuses_falls_back_with_a_warning(monkeypatch):
    class Unsupported(RuntimeError):
        pass

    Unsupported.__module__ = "torch._dynamo.exc"

    def refuse(*args, **kwargs):
        raise Unsupported("cannot lower this graph")

    monkeypatch.setattr(compiled, "compile_unavailable", lambda device_type: None)
    monkeypatch.setattr(compiled.torch, "compile", lambda fn, **kw: refuse)
    model, data = problem()
    op = Hessian(model, CE, data, compile=True, probe=False, cache_graphs=False)
    v = torch.randn(op.shape[0], dtype=DT, generator=torch.Generator().manual_seed(2))
    with pytest.warns(RuntimeWarning, match="'compiled' product strategy cannot run this model"):
        got = op @ v
    assert op.strategy_record["single"] == "autograd"
    assert rel_err(got, Hessian(model, CE, data, probe=False, cache_graphs=False) @ v) <= 1e-12


def test_compiled_strategy_without_compile_true_says_how():
    model, data = problem()
    with pytest.raises(ValueError, match="'compiled' needs compile=True"):
        Hessian(model, CE, data, strategy="compiled")
