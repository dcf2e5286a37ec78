"""Checkpoints: safetensors and weights-only torch files load; corrupted or foreign ones are refused."""

import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from curvscope.experiments.checkpoint import build_model, import_factory, load_state_dict


def factory():
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


SPEC = f"{__name__}:factory"


def test_safetensors_and_torch_state_dicts_load(tmp_path):
    ref = factory()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "w.safetensors")
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        model = build_model(SPEC, tmp_path / name)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


def test_pickled_model_object_is_refused(tmp_path):
    torch.save(factory(), tmp_path / "model.pt")  # a whole module: needs unpickling code
    with pytest.raises(ValueError, match="cannot be loaded with weights_only=True"):
        load_state_dict(tmp_path / "model.pt")


def test_corrupted_and_foreign_files_are_refused(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_state_dict(tmp_path / "bad.safetensors")
    (tmp_path / "x.pt").write_bytes(b"hello world, not torch")
    with pytest.raises(ValueError, match="neither safetensors nor a torch checkpoint"):
        load_state_dict(tmp_path / "x.pt")
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(print))  # a raw pickle referencing a callable
    with pytest.raises(ValueError, match="refusing"):
        load_state_dict(tmp_path / "evil.pt")


def test_mismatched_checkpoint_and_bad_specs(tmp_path):
    save_file({"0.weight": torch.zeros(2, 2)}, tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="does not fit the model"):
        build_model(SPEC, tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match=r"package\.module:factory"):
        import_factory("nocolon")
    with pytest.raises(ValueError, match="cannot import"):
        import_factory("no_such_module_xyz:f")
    with pytest.raises(FileNotFoundError):
        load_state_dict(tmp_path / "missing.pt")
