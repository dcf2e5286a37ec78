"""Loading a user's model and weights safely.

Weights come from ``.safetensors`` (no code execution possible) or from a torch file read
with ``torch.load(weights_only=True)`` (PyTorch's restricted unpickler); anything else — a
pickled model object, a corrupted or foreign file — is refused with a message, never
unpickled blindly.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn


def import_factory(spec: str) -> Any:
    """``"package.module:factory"`` → the callable."""
    if ":" not in spec:
        raise ValueError(f"--model must look like package.module:factory, got {spec!r}")
    module_name, attr = spec.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import {module_name!r} for --model ({err}); is it on PYTHONPATH?") from err
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{module_name} has no attribute {attr!r} (from --model {spec})") from None


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint (safetensors, or torch with ``weights_only=True``).

    Accepts a plain state dict or a dict holding one under ``state_dict`` / ``model``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with open(path, "rb") as fh:
        head = fh.read(16)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise ValueError(f"{path} is not a readable safetensors file ({err}); it may be corrupted") from err
    if not (head.startswith(b"PK") or head[:1] == b"\x80"):
        raise ValueError(
            f"{path} is neither safetensors nor a torch checkpoint (unknown header {head[:8]!r}); "
            f"save weights with safetensors.torch.save_file or torch.save(model.state_dict(), ...)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"refusing {path}: it cannot be loaded with weights_only=True ({type(err).__name__}). It may be "
            f"corrupted or contain pickled code (e.g. a whole model object); save model.state_dict() "
            f"or use safetensors."
        ) from err
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return obj


def build_model(spec: str, checkpoint: str | os.PathLike | None = None) -> nn.Module:
    """Call the factory and load the checkpoint into it (strictly: names and shapes must match)."""
    model = import_factory(spec)()
    if not isinstance(model, nn.Module):
        raise TypeError(f"--model factory {spec} returned {type(model).__name__}, expected an nn.Module")
    if checkpoint is not None:
        state = load_state_dict(checkpoint)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"checkpoint {checkpoint} does not fit the model from {spec}: {err}") from err
    return model
