"""Models by name: ``build_model("mlp", in_features=30, widths=(32, 32), num_classes=10, seed=0)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from curvscope.models.conv import LeNet, ResNet
from curvscope.models.mlp import MLP
from curvscope.models.transformer import TinyTransformer

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, factory: Callable[..., nn.Module], *, overwrite: bool = False) -> None:
    """Register ``factory(**kwargs) -> nn.Module`` under ``name`` (refuses to shadow unless ``overwrite``)."""
    if name in _MODELS and not overwrite:
        raise ValueError(f"model {name!r} is already registered: pass overwrite=True to replace it")
    _MODELS[name] = factory


def list_models() -> dict[str, str]:
    """Registered names → the first line of each factory's docstring."""
    return {k: (inspect.getdoc(f) or "").split("\n")[0] for k, f in sorted(_MODELS.items())}


def build_model(
    name: str,
    *,
    seed: int | None = 0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model with a seeded initialisation.

    The parameters are drawn under a forked global RNG seeded with ``seed``, so the same
    seed gives the same model and the caller's RNG state is left untouched.

    Args:
        name: ``"mlp"``, ``"lenet"``, ``"resnet"``, ``"transformer"`` or a registered name.
        seed: initialisation seed; ``None`` draws from (and advances) the global RNG.
        dtype: cast parameters and buffers (e.g. ``torch.float64`` for exact spectra).
        device: move the model.
        **kwargs: the model's constructor arguments.

    Raises:
        ValueError: unknown name (lists the valid ones) or an argument the model does not
            take (lists the ones it does).
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(_MODELS))}")
    factory = _MODELS[name]
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        params = {}
    if params and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ValueError(f"model {name!r} does not take {unknown}; its arguments are: {', '.join(params)}")
    if seed is None:
        model = factory(**kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = factory(**kwargs)
    if dtype is not None or device is not None:
        model = model.to(device=device, dtype=dtype)
    return model


register_model("mlp", MLP)
register_model("lenet", LeNet)
register_model("resnet", ResNet)
register_model("transformer", TinyTransformer)
