"""The model zoo: parameter counts, shapes, seeded builds, init scaling, second derivatives."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from curvscope.models import (
    MLP,
    LeNet,
    TinyTransformer,
    activation,
    build_model,
    count_parameters,
    list_models,
    register_model,
)

# (name, kwargs, input shape, documented parameter count D)
CASES = [
    ("mlp", {"in_features": 30, "widths": (32, 32), "num_classes": 10}, (4, 30), 2378),
    ("mlp", {"in_features": 64, "widths": (32, 32), "num_classes": 10}, (4, 64), 3466),
    ("mlp", {"in_features": 64, "widths": (16, 16), "num_classes": 10, "bias": False}, (4, 1, 8, 8), 1440),
    ("lenet", {}, (2, 1, 28, 28), 107_786),
    ("lenet", {"image_size": 16}, (2, 256), 44_426),
    ("lenet", {"image_size": 8}, (2, 1, 8, 8), 21_386),
    ("lenet", {"in_channels": 3, "image_size": 32}, (2, 3, 32, 32), 136_886),
    ("lenet", {"image_size": 8, "batchnorm": True}, (2, 1, 8, 8), 21_386 + 44),
    ("resnet", {}, (2, 3, 32, 32), 78_042),
    ("resnet", {"in_channels": 1}, (2, 1, 16, 16), 77_754),
    ("transformer", {}, (2, 64), 13_770),
    ("transformer", {}, (2, 1, 8, 8), 13_770),
]


@pytest.mark.parametrize(("name", "kwargs", "shape", "D"), CASES, ids=lambda v: str(v)[:40])
def test_documented_parameter_counts_and_output_shapes(name, kwargs, shape, D):
    model = build_model(name, **kwargs)
    assert count_parameters(model) == D
    out = model(torch.randn(*shape))
    assert out.shape == (shape[0], kwargs.get("num_classes", 10))


def test_transformer_token_inputs():
    model = build_model("transformer", vocab_size=7, seq_len=5, num_classes=3)
    assert model(torch.randint(0, 7, (4, 5))).shape == (4, 3)
    with pytest.raises(ValueError, match="seq_len"):
        TinyTransformer(vocab_size=7)


def test_build_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a = build_model("lenet", image_size=8, seed=3)
    b = build_model("lenet", image_size=8, seed=3)
    c = build_model("lenet", image_size=8, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), n
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_dtype_argument_gives_float64_models():
    model = build_model("resnet", in_channels=1, blocks=(1,), widths=(4,), dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model(torch.randn(2, 1, 6, 6, dtype=torch.float64)).dtype == torch.float64


def test_registry_errors_list_what_is_valid():
    with pytest.raises(ValueError, match=r"unknown model 'vgg'; valid names: .*lenet, mlp, resnet, transformer"):
        build_model("vgg")
    with pytest.raises(ValueError, match=r"does not take \['hidden_sizes'\]; its arguments are: in_features, widths"):
        build_model("mlp", in_features=3, hidden_sizes=(4,))
    with pytest.raises(ValueError, match="already registered"):
        register_model("mlp", MLP)
    with pytest.raises(ValueError, match="valid names: relu, tanh"):
        activation("swish2")
    assert set(list_models()) >= {"mlp", "lenet", "resnet", "transformer"}


def test_init_scale_multiplies_default_init_but_not_norm_layers():
    ref = build_model("lenet", image_size=8, batchnorm=True, seed=0)
    scaled = build_model("lenet", image_size=8, batchnorm=True, init_scale=3.0, seed=0)
    for (n, p), q in zip(ref.named_parameters(), scaled.parameters()):
        is_norm = isinstance(ref.get_submodule(n.rsplit(".", 1)[0]), nn.BatchNorm2d)
        torch.testing.assert_close(q, p if is_norm else 3.0 * p, msg=n)


def test_width_multiplier_bias_and_activation_options():
    m = MLP(10, (8, 6), 3, width_multiplier=2.0, bias=False, activation="tanh")
    assert m.sizes == (10, 16, 12, 3)
    assert all("bias" not in n for n, _ in m.named_parameters())
    assert sum(isinstance(x, nn.Tanh) for x in m.modules()) == 2
    wide = LeNet(image_size=8, width_multiplier=0.5)
    assert wide.features[0].out_channels == 3 and wide.classifier[0].out_features == 60


def _hvp_symmetry(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    params = [p for p in model.parameters() if p.requires_grad]
    loss = nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    gen = torch.Generator().manual_seed(0)
    u = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    v = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    Hu = torch.autograd.grad(grads, params, u, retain_graph=True)
    Hv = torch.autograd.grad(grads, params, v)
    return float(sum((a * b).sum() for a, b in zip(v, Hu))), float(sum((a * b).sum() for a, b in zip(u, Hv)))


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("transformer", {"num_classes": 3, "dim": 8, "image_size": 4, "patch": 2}, (5, 1, 4, 4)),
        ("lenet", {"num_classes": 3, "image_size": 4, "channels": (2, 2), "hidden": (4,)}, (5, 1, 4, 4)),
        ("resnet", {"num_classes": 3, "in_channels": 1, "blocks": (1,), "widths": (2,)}, (5, 1, 4, 4)),
    ],
)
def test_models_have_symmetric_second_derivatives(name, kwargs, shape):
    # Hessian-vector products must exist (the fused attention kernels have no double backward)
    # and vᵀ(Hu) = uᵀ(Hv) in float64.
    model = build_model(name, dtype=torch.float64, **kwargs).eval()
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1])
    vHu, uHv = _hvp_symmetry(model, x, y)
    assert abs(vHu) > 1e-8
    assert abs(vHu - uHv) <= 1e-10 * max(1.0, abs(vHu))


def test_transformer_flat_and_image_inputs_agree():
    model = build_model("transformer", dtype=torch.float64)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(model(x), model(x.reshape(3, 64)))
