"""The fault table: bad inputs and faults, the error each one gives, and the fix.

Each :class:`Fault` is data: an id, the layer it hits, what the bad input is, a ``trigger`` that
produces it (given a fresh temporary directory), the expected exception (or warning) type, a phrase
of its message, and the fix in one line. ``tests/test_faults.py`` runs every trigger and checks the
type and the phrase; it also checks that ``docs/faults.md`` is this table rendered afresh::

    .venv/bin/python tests/faults_table.py > docs/faults.md

A fault whose error is not yet what the table says (unclear, wrong type, or swallowed) keeps its
expected error here and carries ``xfail`` with the reason: the test is a strict xfail, the
doc lists it under "known gaps", and the owner of the code fixes it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import nn

from curvscope import GGN, Hessian, eigsh, sketched_eigh, spectral_density, trace
from curvscope.distributed.comm import DistributedError
from curvscope.memory import check_budget
from curvscope.operators import DenseOperator
from curvscope.operators.fingerprint import StaleStateError
from curvscope.operators.probe import NondeterministicProductError
from curvscope.operators.strategies import ProductError

DT = torch.float64
#: ``expect`` values: what the trigger does when the fault is handled as the table says.
EXPECTS = ("raises", "warns", "returns", "exits")


@dataclass(frozen=True)
class Fault:
    """One row of the table.

    Attributes:
        id: short unique name (the test id).
        layer: where the fault enters (operator input, construction, linalg, resume, io, cli, …).
        bad_input: what is wrong, as the user would describe it.
        trigger: ``trigger(tmp_path)`` produces the fault.
        error: the exception (``raises``), warning category (``warns``), ``SystemExit`` (``exits``);
            unused for ``returns`` (``Exception`` by convention).
        phrase: a phrase the message must contain (for ``returns``: ``str`` of the return value;
            for ``exits``: the captured stderr).
        fix: what the user does about it, in one line.
        expect: one of :data:`EXPECTS`. ``returns``: the trigger returns a value (a partial
            result) instead of raising; ``exits``: the trigger returns ``(exit code, stderr)``
            of the CLI, and the code must be 2.
        xfail: non-empty when the code does not (yet) give this error: why (a bug for the owner).
    """

    id: str
    layer: str
    bad_input: str
    trigger: Callable[[Path], Any]
    error: type
    phrase: str
    fix: str
    expect: str = "raises"
    xfail: str = ""


# ----------------------------------------------------------------------------- helpers
def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mlp(hidden: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), hidden or nn.Tanh(), nn.Linear(4, 3)).to(DT)


def _data(n: int = 6) -> list:
    x = torch.randn(n, 3, dtype=DT, generator=_gen(1))
    y = torch.arange(n) % 3
    return [(x[:4], y[:4]), (x[4:], y[4:])]


def _hessian(**kwargs: Any) -> Hessian:
    return Hessian(_mlp(), nn.CrossEntropyLoss(), _data(), **kwargs)


def _dense(n: int = 3, top: float = 3.0) -> DenseOperator:
    return DenseOperator(torch.diag(torch.linspace(1.0, top, n, dtype=DT)))


def _quiet(fn: Callable[[], Any]) -> Any:
    """Call ``fn`` with incidental warnings silenced (a case that expects a warning never uses this)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def _cli(cwd: Path, *argv: str) -> tuple[int, str]:
    """``curvscope ARGV`` in-process, run in ``cwd`` (so nothing lands in the checkout): ``(exit code, stderr)``."""
    from curvscope.cli.main import main

    err, here = io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    finally:
        os.chdir(here)
    return code, err.getvalue()


def _disk_full(*_args: Any, **_kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ----------------------------------------------------------------------------- triggers
def _wrong_length(_tmp: Path) -> Any:
    return _dense(3) @ torch.ones(4, dtype=DT)


def _wrong_dtype(_tmp: Path) -> Any:
    return _dense(3) @ torch.ones(3, dtype=torch.float32)


def _wrong_device(_tmp: Path) -> Any:
    return _dense(3) @ torch.ones(3, dtype=DT, device="meta")


def _not_a_tensor(_tmp: Path) -> Any:
    return _dense(3) @ np.ones(3)


def _not_an_operator(_tmp: Path) -> Any:
    return eigsh(SimpleNamespace(shape=(3, 3), dtype=DT), k=1)


def _not_square(_tmp: Path) -> Any:
    return eigsh(torch.ones(3, 4, dtype=DT), k=1)


def _integer_operator(_tmp: Path) -> Any:
    return spectral_density(torch.eye(3, dtype=torch.int64), num_probes=1, num_steps=2)


def _per_sample_loss(_tmp: Path) -> Any:
    return Hessian(_mlp(), nn.CrossEntropyLoss(reduction="none"), _data())


def _reduction_mismatch(_tmp: Path) -> Any:
    return Hessian(_mlp(), nn.CrossEntropyLoss(reduction="sum"), _data())


def _nan_inputs(_tmp: Path) -> Any:
    (x, y), rest = _data()[0], _data()[1:]
    x = x.clone()
    x[1, 2] = float("nan")
    return Hessian(_mlp(), nn.CrossEntropyLoss(), [*rest, (x, y)])


def _nan_outputs(_tmp: Path) -> Any:
    model = _mlp()
    with torch.no_grad():
        model[2].bias[0] = float("inf")
    return Hessian(model, nn.CrossEntropyLoss(), _data())


def _nan_targets(_tmp: Path) -> Any:
    x = torch.randn(4, 3, dtype=DT, generator=_gen(1))
    return Hessian(_mlp(), nn.MSELoss(), [(x, torch.full((4, 3), float("nan"), dtype=DT))])


def _empty_data(_tmp: Path) -> Any:
    return Hessian(_mlp(), nn.CrossEntropyLoss(), [])


def _generator_data(_tmp: Path) -> Any:
    return Hessian(_mlp(), nn.CrossEntropyLoss(), (batch for batch in _data()))


def _bad_glob(_tmp: Path) -> Any:
    return Hessian(_mlp(), nn.CrossEntropyLoss(), _data(), params=["layer3.*"])


def _functional_without_params(_tmp: Path) -> Any:
    return Hessian(lambda p, x: x @ p["W"], nn.CrossEntropyLoss(), _data(), params=None)


def _module_with_tensor_params(_tmp: Path) -> Any:
    model = _mlp()
    return Hessian(model, nn.CrossEntropyLoss(), _data(), params=dict(model.named_parameters()))


def _frozen_model(_tmp: Path) -> Any:
    model = _mlp().requires_grad_(False)
    return Hessian(model, nn.CrossEntropyLoss(), _data())


def _integer_dtype(_tmp: Path) -> Any:
    return Hessian(_mlp(), nn.CrossEntropyLoss(), _data(), dtype=torch.int64)


def _bad_device_string(_tmp: Path) -> Any:
    return Hessian(_mlp(), nn.CrossEntropyLoss(), _data(), device="gpu0")


def _batch_on_other_device(_tmp: Path) -> Any:
    return Hessian(_mlp(), nn.CrossEntropyLoss(), [(torch.ones(4, 3, dtype=DT, device="meta"), torch.arange(4) % 3)])


def _bare_tensor_batches(_tmp: Path) -> Any:
    return Hessian(_mlp(), nn.CrossEntropyLoss(), [torch.ones(4, 3, dtype=DT)])


def _missing_dict_key(_tmp: Path) -> Any:
    batch = {"pixels": torch.ones(4, 3, dtype=DT), "labels": torch.arange(4) % 3}
    return GGN(_mlp(), lambda out, b: nn.functional.cross_entropy(out, b["labels"]), [batch], input_keys=["features"])


def _loss_not_callable(_tmp: Path) -> Any:
    return GGN(_mlp(), "cross_entropy", _data())


def _bad_mode(_tmp: Path) -> Any:
    return GGN(_mlp(), nn.CrossEntropyLoss(), _data(), mode="inference")


def _bad_strategy(_tmp: Path) -> Any:
    return _hessian(strategy="fastest")


def _dropout_warning(_tmp: Path) -> Any:
    return Hessian(_mlp(nn.Dropout(0.5)), nn.CrossEntropyLoss(), _data(), mode="train")


def _dropout_product(_tmp: Path) -> Any:
    H = _quiet(lambda: Hessian(_mlp(nn.Dropout(0.5)), nn.CrossEntropyLoss(), _data(), mode="train"))
    return _quiet(lambda: H @ torch.ones(H.shape[0], dtype=DT))


class _NoSecondDerivative(torch.autograd.Function):
    """``tanh'`` whose own derivative is not implemented (like a fused kernel)."""

    @staticmethod
    def forward(ctx, x):
        return 1 - torch.tanh(x) ** 2

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError("no second derivative for this kernel")


class _OpaqueTanh(torch.autograd.Function):
    """``tanh`` as an old-style ``autograd.Function`` (no ``setup_context``: no ``torch.func``)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.tanh(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * _NoSecondDerivative.apply(x)


class _OpaqueNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.b(_OpaqueTanh.apply(self.a(x)))


def _no_strategy_works(_tmp: Path) -> Any:
    torch.manual_seed(0)
    H = Hessian(_OpaqueNet().to(DT), nn.CrossEntropyLoss(), _data(), method="exact")  # auto would fall back to fd
    return _quiet(lambda: H @ torch.ones(H.shape[0], dtype=DT))


def _loss_python_float(_tmp: Path) -> Any:
    return Hessian(_mlp(), lambda out, y: nn.functional.cross_entropy(out, y).item(), _data())


def _loss_detached(_tmp: Path) -> Any:
    H = Hessian(_mlp(), lambda out, y: nn.functional.cross_entropy(out, y).detach(), _data())
    return _quiet(lambda: H @ torch.ones(H.shape[0], dtype=DT))


def _labels_out_of_range(_tmp: Path) -> Any:
    x = torch.randn(4, 3, dtype=DT, generator=_gen(1))
    return Hessian(_mlp(), nn.CrossEntropyLoss(), [(x, torch.tensor([0, 1, 2, 5]))])


def _batch_size_mismatch(_tmp: Path) -> Any:
    x = torch.randn(4, 3, dtype=DT, generator=_gen(1))
    return Hessian(_mlp(), nn.CrossEntropyLoss(), [(x, torch.tensor([0, 1, 2]))])


def _shuffled_loader(_tmp: Path) -> Any:
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.randn(6, 3, dtype=DT, generator=_gen(1))
    loader = DataLoader(TensorDataset(x, torch.arange(6) % 3), batch_size=3, shuffle=True)
    return Hessian(_mlp(), nn.CrossEntropyLoss(), loader)


def _batchnorm_train(_tmp: Path) -> Any:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).to(DT)
    return Hessian(model, nn.CrossEntropyLoss(), _data(), mode="train")


def _model_edited_after(_tmp: Path) -> Any:
    model = _mlp()
    H = Hessian(model, nn.CrossEntropyLoss(), _data())
    v = torch.ones(H.shape[0], dtype=DT)
    before = H @ v
    with torch.no_grad():
        model[0].weight.mul_(2.0)  # e.g. a training step after the operator was built
    after = H @ v
    same = torch.allclose(before, after, rtol=1e-10, atol=0.0)
    return "products unchanged (the weights at construction)" if same else "products changed"


def _class_structure_weighted(_tmp: Path) -> Any:
    from curvscope import ClassStructure

    return ClassStructure(_mlp(), nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0], dtype=DT)), _data())


def _class_structure_num_classes(_tmp: Path) -> Any:
    from curvscope import ClassStructure

    return ClassStructure(_mlp(), nn.CrossEntropyLoss(), _data(), num_classes=5)


def _k_too_large(_tmp: Path) -> Any:
    return eigsh(_dense(5), k=6)


def _bad_which(_tmp: Path) -> Any:
    return eigsh(_dense(5), k=1, which="largest")


def _tol_below_noise(_tmp: Path) -> Any:
    return eigsh(_dense(5), k=1, tol=1e-20)


def _zero_start(_tmp: Path) -> Any:
    return eigsh(_dense(5), k=1, v0=torch.zeros(5, dtype=DT))


def _bad_density_method(_tmp: Path) -> Any:
    return spectral_density(_dense(5), method="lanczos", num_probes=1, num_steps=3)


def _bad_trace_method(_tmp: Path) -> Any:
    return trace(_dense(5), method="hutch", num_matvecs=6)


def _bad_storage(_tmp: Path) -> Any:
    return eigsh(_dense(5), k=1, storage="floppy")


def _negative_tol(_tmp: Path) -> Any:
    return eigsh(_dense(5), k=1, tol=-1e-8)


def _kpm_checkpoint(tmp: Path) -> Any:
    return spectral_density(_dense(5), "kpm", num_probes=1, num_steps=3, checkpoint=tmp / "kpm.safetensors")


def _trace_budget_too_small(_tmp: Path) -> Any:
    return trace(_dense(5), "hutch++", num_matvecs=2)


def _sketch_two_places(tmp: Path) -> Any:
    return sketched_eigh(_dense(30), k=2, num_matvecs=12, store=tmp / "a", checkpoint=tmp / "b")


def _not_symmetric(_tmp: Path) -> Any:
    A = DenseOperator(torch.triu(torch.ones(20, 20, dtype=DT)))
    result = eigsh(A, k=2)
    return f"status {result.status}: {result.message}"


def _nan_matrix() -> DenseOperator:
    M = torch.diag(torch.linspace(1.0, 2.0, 20, dtype=DT))
    M[3, 3] = float("nan")  # e.g. an overflow inside one product
    return DenseOperator(M)


def _eigsh_nan_products(_tmp: Path) -> Any:
    return eigsh(_nan_matrix(), k=2)


def _slq_nan_products(_tmp: Path) -> Any:
    return spectral_density(_nan_matrix(), num_probes=2, num_steps=5)


def _trace_nan_products(_tmp: Path) -> Any:
    result = trace(_nan_matrix(), num_matvecs=12)
    return f"estimate {result.estimate}, status {result.status}"


class _ShortOperator:
    """An operator from another library whose ``@`` drops the last row (a bug in the user's code)."""

    shape, dtype, device = (20, 20), DT, torch.device("cpu")

    def __matmul__(self, X):
        return (_dense(20) @ X)[:-1]


def _external_wrong_shape(_tmp: Path) -> Any:
    return eigsh(_ShortOperator(), k=2)


class _InterruptingOperator:
    """A diagonal operator that raises ``KeyboardInterrupt`` (Ctrl-C) at its 11th product."""

    def __init__(self) -> None:
        self.inner, self.calls = _dense(60, 2.0), 0
        self.shape, self.dtype, self.device = self.inner.shape, DT, torch.device("cpu")

    def __matmul__(self, X):
        self.calls += 1
        if self.calls > 10:
            raise KeyboardInterrupt
        return self.inner @ X


def _interrupted_eigsh(_tmp: Path) -> Any:
    result = eigsh(_InterruptingOperator(), k=2, tol=1e-12)
    return f"status {result.status}: {result.message}"


def _eigsh_checkpoint(tmp: Path, A: Any, k: int = 1) -> Any:
    return eigsh(A, k=k, ncv=3, tol=1e-12, num_matvecs=40, checkpoint=tmp / "eigsh.safetensors")


def _eigsh_stale(tmp: Path) -> Any:
    _eigsh_checkpoint(tmp, _dense(60, 2.0))
    return _eigsh_checkpoint(tmp, _dense(60, 3.0))  # same shape, other matrix


def _eigsh_other_settings(tmp: Path) -> Any:
    _eigsh_checkpoint(tmp, _dense(60, 2.0))
    return _eigsh_checkpoint(tmp, _dense(60, 2.0), k=2)


def _eigsh_no_fingerprint(tmp: Path) -> Any:
    from curvscope.linalg.checkpoint import save_state

    save_state(tmp / "eigsh.safetensors", {"written by": "an older curvscope"}, _gen(), {}, {})
    return _eigsh_checkpoint(tmp, _dense(60, 2.0))


def _eigsh_truncated(tmp: Path) -> Any:
    _eigsh_checkpoint(tmp, _dense(60, 2.0))
    path = tmp / "eigsh.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a disk error / a copy cut short
    return _eigsh_checkpoint(tmp, _dense(60, 2.0))


def _slq(tmp: Path, A: Any) -> Any:
    return spectral_density(A, num_probes=2, num_steps=5, block_size=1, seed=0, checkpoint=tmp / "slq.safetensors")


def _slq_stale(tmp: Path) -> Any:
    _slq(tmp, _dense(20, 2.0))
    return _slq(tmp, _dense(20, 3.0))


def _sketch_store_stale(tmp: Path) -> Any:
    store = tmp / "sketch"
    _quiet(lambda: sketched_eigh(_dense(30, 2.0), k=2, num_matvecs=12, error_probes=2, seed=0, store=store))
    return _quiet(lambda: sketched_eigh(_dense(30, 3.0), k=2, num_matvecs=12, error_probes=2, seed=0, store=store))


def _run_dir_other_config(tmp: Path) -> Any:
    from curvscope.experiments.run import RunDir

    RunDir(tmp / "run", {"experiment": "demo", "seed": 0})
    return RunDir(tmp / "run", {"experiment": "demo", "seed": 1})


def _run_dir_other_fingerprint(tmp: Path) -> Any:
    from curvscope.experiments.run import RunDir

    config = {"experiment": "analyze", "seed": 0}
    RunDir(tmp / "run", config, fingerprint={"checkpoint_sha256": "aaaa"})
    return RunDir(tmp / "run", config, fingerprint={"checkpoint_sha256": "bbbb"})


def _run_dir_no_fingerprint(tmp: Path) -> Any:
    from curvscope.experiments.run import RunDir
    from curvscope.io import atomic_write_json

    config = {"experiment": "demo", "seed": 0}
    atomic_write_json(tmp / "run" / "config.json", config)
    atomic_write_json(tmp / "run" / "results.json", {"steps": {}})  # written before fingerprints existed
    return RunDir(tmp / "run", config)


def _run_dir_disk_full(tmp: Path) -> Any:
    from curvscope.experiments.run import RunDir

    with mock.patch.object(Path, "write_bytes", _disk_full):
        return RunDir(tmp / "run", {"experiment": "demo"})


def _weights_pickle(tmp: Path) -> Any:
    from curvscope.experiments.checkpoint import load_state_dict

    path = tmp / "model.pt"
    torch.save(_mlp(), path)  # the whole module object, pickled
    return load_state_dict(path)


def _weights_foreign(tmp: Path) -> Any:
    from curvscope.experiments.checkpoint import load_state_dict

    path = tmp / "weights.bin"
    path.write_bytes(b"GGUF\x03\x00\x00\x00 not a torch file")
    return load_state_dict(path)


def _weights_truncated(tmp: Path) -> Any:
    from safetensors.torch import save_file

    from curvscope.experiments.checkpoint import load_state_dict

    path = tmp / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in _mlp().state_dict().items()}, str(path))
    path.write_bytes(path.read_bytes()[:-20])
    return load_state_dict(path)


def _write_then_check(tmp: Path, patch: str) -> Any:
    """An atomic JSON write that fails (disk full) must raise and leave the previous file intact, no temp file."""
    from curvscope.io import atomic_write_json

    target = tmp / "results.json"
    atomic_write_json(target, {"step": 1})
    try:
        with mock.patch(patch, _disk_full):
            atomic_write_json(target, {"step": 2})
    finally:
        leftovers = sorted(p.name for p in tmp.iterdir())
        assert leftovers == ["results.json"], f"partial files left: {leftovers}"
        assert target.read_text() == '{\n  "step": 1\n}\n', "the previous file was damaged"


def _disk_full_rename(tmp: Path) -> Any:
    return _write_then_check(tmp, "curvscope.io.os.replace")


def _disk_full_fsync(tmp: Path) -> Any:
    return _write_then_check(tmp, "curvscope.io.os.fsync")


def _memory_budget(_tmp: Path) -> Any:
    D = 10_000_000
    return check_budget(D * 301 * 8, "the eigsh basis (301 vectors of D=10000000)", ["storage='disk'"], budget=2**30)


def _to_dense_too_big(_tmp: Path) -> Any:
    return _dense(50).to_dense(max_dim=40)


def _dead_rank(_tmp: Path) -> Any:
    """A peer dies between products: the next all-reduce fails (simulated; the real two-process run
    is ``tests/test_distributed.py::test_a_dead_rank_fails_the_other_clearly``)."""
    import torch.distributed as dist

    from curvscope.distributed import comm

    def peer_gone(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29500")

    with contextlib.ExitStack() as stack:
        for name, value in (("get_world_size", lambda *a: 2), ("get_rank", lambda *a: 0),
                            ("get_backend", lambda *a: "gloo"), ("all_gather_object", lambda *a, **k: None),
                            ("all_reduce", peer_gone)):  # fmt: skip
            stack.enter_context(mock.patch.object(dist, name, value))
        stack.enter_context(mock.patch.object(comm, "is_distributed", lambda: True))
        H = _hessian(distributed=True)
        return H @ torch.ones(H.shape[0], dtype=DT)


def _eigsh_checkpoint_disk_full(tmp: Path) -> Any:
    try:
        with mock.patch("curvscope.io.os.replace", _disk_full):
            return _eigsh_checkpoint(tmp, _dense(60, 2.0))
    finally:
        leftovers = sorted(p.name for p in tmp.iterdir())
        assert leftovers == [], f"partial files left: {leftovers}"


def _cli_missing_model(tmp: Path) -> Any:
    return _cli(tmp, "analyze", "--data", "digits")


def _cli_unimportable_model(tmp: Path) -> Any:
    return _cli(tmp, "analyze", "--model", "no_such_package.models:make_net", "--data", "digits")


def _cli_report_not_a_run(tmp: Path) -> Any:
    return _cli(tmp, "report", str(tmp))


def _cli_unknown_paper(tmp: Path) -> Any:
    return _cli(tmp, "reproduce", "no-such-paper")


def _cli_model_spec_without_colon(tmp: Path) -> Any:
    return _cli(tmp, "analyze", "--model", "mypkg.models.make_net", "--data", "digits")


# ----------------------------------------------------------------------------- the table
FAULTS: list[Fault] = [
    # operator input: the LinearOperator protocol
    Fault("vector_wrong_length", "operator input", "`A @ v` with `v` of length 4 for a 3×3 operator",
          _wrong_length, ValueError, "the operator acts on the flat parameter vector of length 3",
          "build `v` over the same parameters as the operator (`A.shape[0]` entries)"),
    Fault("vector_wrong_dtype", "operator input", "a float32 vector for a float64 operator",
          _wrong_dtype, TypeError, "convert it with .to(torch.float64)", "`v.to(A.dtype)`"),
    Fault("vector_wrong_device", "operator input", "a vector on another device than the operator",
          _wrong_device, ValueError, "move it with .to('cpu')", "`v.to(A.device)`"),
    Fault("vector_not_a_tensor", "operator input", "a NumPy array instead of a tensor",
          _not_a_tensor, TypeError, "an operator multiplies torch tensors, got ndarray",
          "`torch.as_tensor(v, dtype=A.dtype)`, or use `A.to_scipy()` for NumPy"),
    Fault("not_an_operator", "operator input", "an object with `shape` and `dtype` but no `device` / `@`",
          _not_an_operator, TypeError, "is not an operator: it lacks ['device']",
          "wrap a matrix with `curvscope.DenseOperator(M)`, or give the object `shape, dtype, device, @`"),
    Fault("operator_not_square", "operator input", "a 3×4 matrix given to `eigsh`",
          _not_square, ValueError, "a symmetric operator must be square", "pass the square symmetric matrix"),
    Fault("operator_integer_dtype", "operator input", "an int64 matrix given to `spectral_density`",
          _integer_operator, TypeError, "dtype must be floating point", "`M.double()`"),
    # curvature operators: construction
    Fault("loss_per_sample", "construction", "`nn.CrossEntropyLoss(reduction='none')` (a loss per sample)",
          _per_sample_loss, ValueError, "expected a scalar: pass reduction='mean'",
          "`reduction='mean'`, or `'sum'` with `loss_reduction='sum'`"),
    Fault("loss_reduction_mismatch", "construction",
          "a `reduction='sum'` loss with the default `loss_reduction='mean'`",
          _reduction_mismatch, ValueError, "pass loss_reduction='sum'", "`Hessian(..., loss_reduction='sum')`"),
    Fault("nan_inputs", "construction", "a batch whose inputs contain NaN",
          _nan_inputs, ValueError, "batch 1: the inputs contain NaN or Inf", "clean or drop that batch"),
    Fault("nan_outputs", "construction", "a model (an Inf weight) whose outputs are not finite",
          _nan_outputs, ValueError, "the model outputs contain NaN or Inf",
          "measure at finite weights (check the checkpoint / the training run)"),
    Fault("nan_targets", "construction", "finite inputs but NaN regression targets (the loss is NaN)",
          _nan_targets, ValueError, "batch 0: the loss is nan", "clean the targets"),
    Fault("empty_data", "construction", "`data=[]`", _empty_data, ValueError, "data is empty",
          "pass at least one non-empty batch (check the loader / the shard)"),
    Fault("one_shot_generator", "construction", "a generator of batches (read once, products need many passes)",
          _generator_data, TypeError, "data is a one-shot iterator", "pass a list of batches or a `DataLoader`"),
    Fault("params_glob_no_match", "construction", "`params=['layer3.*']` matching no parameter name",
          _bad_glob, ValueError, "matches no parameter; names are: 0.weight",
          "use a name or glob from the listed names"),
    Fault("functional_without_params", "construction", "a functional model `f(params, x)` with `params=None`",
          _functional_without_params, TypeError, "needs params as a non-empty dict of tensors",
          "`params={'W': W}`: the point where the curvature is measured"),
    Fault("module_with_param_tensors", "construction", "an `nn.Module` with `params=dict(named_parameters())`",
          _module_with_tensor_params, TypeError, "pass params as names or glob patterns",
          "`params=['0.weight', ...]` (names), or `None` for all"),
    Fault("all_frozen", "construction", "a model whose parameters all have `requires_grad=False`",
          _frozen_model, ValueError, "the model has no trainable parameters",
          "unfreeze some, or pass `params=[names]`"),
    Fault("integer_compute_dtype", "construction", "`dtype=torch.int64`",
          _integer_dtype, TypeError, "curvature needs a floating dtype", "`dtype=torch.float64` (or float32)"),
    Fault("bad_device_string", "construction", "`device='gpu0'`",
          _bad_device_string, RuntimeError, "Invalid device string: 'gpu0'", "`device='cuda:0'` or `'cpu'`"),
    Fault("batch_on_other_device", "construction", "a batch on another device than the model",
          _batch_on_other_device, ValueError, "pass move_batches=True to move each batch",
          "move the data, or `move_batches=True`"),
    Fault("batch_wrong_type", "construction", "batches that are bare tensors (no targets)",
          _bare_tensor_batches, TypeError, "a batch must be a tuple/list (inputs, targets) or a dict",
          "yield `(inputs, targets)` or a dict with `labels`"),
    Fault("dict_batch_missing_key", "construction", "`input_keys=['features']` but the batch has no `features`",
          _missing_dict_key, KeyError, "batch has no key(s) ['features']",
          "fix `input_keys` (the batch keys are listed)"),
    Fault("loss_not_callable", "construction", "`loss_fn='cross_entropy'` (a string)",
          _loss_not_callable, TypeError, "loss_fn must be callable", "`nn.CrossEntropyLoss()`"),
    Fault("bad_mode", "construction", "`mode='inference'`", _bad_mode, ValueError,
          "mode must be one of ('eval', 'train', 'as_is')", "`mode='eval'` (the default)"),
    Fault("bad_strategy", "construction", "`strategy='fastest'`", _bad_strategy, ValueError,
          "strategy must be one of", "`strategy='auto'` (default) or `'tune'`"),
    Fault("labels_out_of_range", "construction", "class labels `5` for a 3-class model",
          _labels_out_of_range, IndexError, "Target 5 is out of bounds",
          "labels in `[0, C)`, or a model with C outputs"),
    Fault("batch_size_mismatch", "construction", "a batch with 4 inputs and 3 targets",
          _batch_size_mismatch, ValueError, "to match target batch_size (3)", "fix the collate function / the dataset"),
    Fault("loss_returns_python_float", "construction", "`loss_fn` returning `loss.item()` (a Python float)",
          _loss_python_float, TypeError, "expected a scalar tensor", "return the loss tensor, not `.item()`"),
    Fault("shuffled_loader", "construction", "a `DataLoader(..., shuffle=True)`",
          _shuffled_loader, UserWarning, "the DataLoader shuffles", "`shuffle=False` for curvature", expect="warns"),
    Fault("batchnorm_train_mode", "construction", "BatchNorm with `mode='train'`",
          _batchnorm_train, UserWarning, "BatchNorm in train mode", "`mode='eval'` (the default)", expect="warns"),
    Fault("class_structure_not_plain_ce", "construction", "`ClassStructure` with a class-weighted cross-entropy",
          _class_structure_weighted, ValueError, "the class structure of G is defined for cross-entropy",
          "`loss_fn=nn.CrossEntropyLoss()` (no class weights or ignored labels)"),
    Fault("class_structure_num_classes", "construction", "`ClassStructure(..., num_classes=5)` for 3 logits",
          _class_structure_num_classes, ValueError, "num_classes=5 but the model has 3 logits",
          "leave `num_classes=None` (read from the logits)"),
    # curvature operators: products
    Fault("dropout_train_mode_warning", "construction", "dropout with `mode='train'`",
          _dropout_warning, UserWarning, "dropout is active (mode='train')", "`mode='eval'` (the default)",
          expect="warns"),
    Fault("dropout_train_mode_product", "products", "the first product of an operator with active dropout",
          _dropout_product, NondeterministicProductError, "the same product computed twice differs",
          "`mode='eval'`; `probe=False` only if you accept a random matrix"),
    Fault("no_strategy_works", "products",
          "`method='exact'` on a model with an op without second derivatives (custom `autograd.Function`)",
          _no_strategy_works, ProductError, "every product strategy failed for this model",
          "`method='auto'` (finite differences, with a warning), or a twice-differentiable op"),
    Fault("loss_detached", "products", "`loss_fn` returning a detached loss (no graph to the parameters)",
          _loss_detached, ValueError, "does not depend on the parameters",
          "do not detach / `.item()` the loss or compute it under `torch.no_grad()`"),
    Fault("model_edited_after_construction", "stale state", "the model trained further after `H = Hessian(model, …)`",
          _model_edited_after, Exception, "products unchanged (the weights at construction)",
          "build a new operator after changing the weights (operators snapshot them)", expect="returns"),
    # linalg arguments
    Fault("eigsh_k_too_large", "linalg", "`eigsh(A, k=6)` on a 5×5 operator",
          _k_too_large, ValueError, "k must be between 1 and 5",
          "`k ≤ D`; for all pairs use `torch.linalg.eigh(A.to_dense())`"),
    Fault("eigsh_bad_which", "linalg", "`which='largest'`", _bad_which, ValueError,
          "which must be one of ('LA', 'SA', 'LM', 'BE')", "`which='LA'` (largest algebraic)"),
    Fault("eigsh_tol_below_noise", "linalg", "`tol=1e-20`, below the products' rounding",
          _tol_below_noise, UserWarning, "is below what the products can resolve",
          "leave `tol=None` (the default heeds the noise floor); the result's `tol_reason` says what was used",
          expect="warns"),
    Fault("eigsh_zero_start", "linalg", "`v0` all zeros", _zero_start, ValueError, "the start vector is zero",
          "pass a nonzero `v0`, or none (a seeded Gaussian)"),
    Fault("density_bad_method", "linalg", "`spectral_density(A, method='lanczos')`",
          _bad_density_method, ValueError, "method must be one of ('slq', 'kpm')", "`method='slq'` or `'kpm'`"),
    Fault("trace_bad_method", "linalg", "`trace(A, method='hutch')`", _bad_trace_method, ValueError,
          "unknown trace method 'hutch'; valid: ('hutchinson', 'hutch++', 'xtrace')", "a listed method"),
    Fault("eigsh_bad_storage", "linalg", "`storage='floppy'`", _bad_storage, ValueError,
          "unknown storage 'floppy'; valid names", "`'device'`, `'host'` or `'disk'`"),
    Fault("eigsh_negative_tol", "linalg", "`tol=-1e-8`", _negative_tol, ValueError, "tol must be positive",
          "a positive `tol`, or `None`"),
    Fault("kpm_checkpoint", "linalg", "`spectral_density(method='kpm', checkpoint=f)`",
          _kpm_checkpoint, ValueError, "KPM runs are not resumable", "`method='slq'` to resume"),
    Fault("trace_budget_too_small", "linalg", "`trace(A, 'hutch++', num_matvecs=2)`",
          _trace_budget_too_small, ValueError, "hutch++ needs num_matvecs ≥ 3", "a larger `num_matvecs`"),
    Fault("sketch_store_and_checkpoint", "linalg", "`sketched_eigh(store=a, checkpoint=b)` naming two places",
          _sketch_two_places, ValueError, "name two places: pass one of them", "pass one of them"),
    Fault("eigsh_not_symmetric", "linalg", "a non-symmetric matrix given to `eigsh`",
          _not_symmetric, Exception, "status unverified: the Lanczos estimates converged but 2 true residuals",
          "check the operator (`A.check_symmetric()`); curvature operators are symmetric", expect="returns"),
    Fault("eigsh_nan_products", "linalg", "an operator whose products contain NaN, given to `eigsh`",
          _eigsh_nan_products, ArithmeticError, "NaN",
          "find where the products overflow (a NaN batch with `check_data=False`, float16)"),
    Fault("slq_nan_products", "linalg", "an operator whose products contain NaN, given to `spectral_density`",
          _slq_nan_products, ArithmeticError, "NaN", "find where the products overflow"),
    Fault("trace_nan_products", "linalg", "an operator whose products contain NaN, given to `trace`",
          _trace_nan_products, ArithmeticError, "NaN", "find where the products overflow"),
    Fault("external_operator_wrong_shape", "operator input", "an outside operator whose `@` returns `[D-1, K]`",
          _external_wrong_shape, ValueError, "returned shape", "fix the operator's `__matmul__`"),
    Fault("eigsh_interrupted", "interrupted run", "Ctrl-C (`KeyboardInterrupt`) from the operator during `eigsh`",
          _interrupted_eigsh, Exception, "status interrupted: interrupted after 10 products",
          "read the partial result, or call again with `v0=result.eigenvectors[:, 0]` (or use `checkpoint=`)",
          expect="returns"),
    # resumed state
    Fault("eigsh_checkpoint_stale", "resume", "`eigsh(checkpoint=f)` resumed against another matrix",
          _eigsh_stale, StaleStateError, "was made for a different computation; what changed",
          "remove the file or pass another `checkpoint=` path"),
    Fault("eigsh_checkpoint_other_settings", "resume", "`eigsh(checkpoint=f)` resumed with another `k`",
          _eigsh_other_settings, ValueError, "was written for", "the same settings, or another `checkpoint=` path"),
    Fault("eigsh_checkpoint_no_fingerprint", "resume", "a checkpoint without a fingerprint (older curvscope)",
          _eigsh_no_fingerprint, StaleStateError, "carries no fingerprint", "remove it or pass another path"),
    Fault("slq_checkpoint_stale", "resume", "`spectral_density(checkpoint=f)` resumed against another matrix",
          _slq_stale, StaleStateError, "SLQ checkpoint", "remove the file or pass another `checkpoint=` path"),
    Fault("sketch_store_stale", "resume", "a `sketched_eigh(store=dir)` reused with another operator",
          _sketch_store_stale, StaleStateError, "was made for a different computation",
          "a new `store=` directory, or delete the old one"),
    Fault("run_dir_other_config", "resume", "a run directory re-opened with a different config",
          _run_dir_other_config, ValueError, "holds a run with a different config",
          "the same settings, or a new `--out`"),
    Fault("run_dir_other_fingerprint", "resume", "a run directory re-opened for other weights (same config)",
          _run_dir_other_fingerprint, StaleStateError, "what changed: checkpoint_sha256", "a new `--out`"),
    Fault("run_dir_no_fingerprint", "resume (stale)", "a run directory with results but no `fingerprint.json`",
          _run_dir_no_fingerprint, StaleStateError, "carries no fingerprint", "a new `--out`, or delete the old run"),
    # corrupted files
    Fault("eigsh_checkpoint_truncated", "corrupted file", "an `eigsh` checkpoint cut in half",
          _eigsh_truncated, ValueError, "corrupted", "delete the checkpoint (the run restarts from scratch)"),
    Fault("weights_pickled_model", "corrupted file", "`--checkpoint` holding a pickled `nn.Module` (not a state dict)",
          _weights_pickle, ValueError, "cannot be loaded with weights_only=True",
          "`torch.save(model.state_dict(), f)` or safetensors"),
    Fault("weights_foreign_file", "corrupted file", "`--checkpoint` that is not a torch / safetensors file",
          _weights_foreign, ValueError, "neither safetensors nor a torch checkpoint",
          "convert the weights to safetensors"),
    Fault("weights_truncated", "corrupted file", "a truncated `.safetensors` weights file",
          _weights_truncated, ValueError, "it may be corrupted", "copy / download the file again"),
    # io: full disk
    Fault("disk_full_on_rename", "io (full disk)", "ENOSPC while an atomic write renames its temp file",
          _disk_full_rename, OSError, "No space left on device",
          "free space and re-run: the previous file is intact and no temp file is left"),
    Fault("disk_full_on_fsync", "io (full disk)", "ENOSPC while an atomic write flushes its temp file",
          _disk_full_fsync, OSError, "No space left on device",
          "free space and re-run: the previous file is intact and no temp file is left"),
    Fault("eigsh_checkpoint_disk_full", "io (full disk)", "ENOSPC while `eigsh` saves its checkpoint at a restart",
          _eigsh_checkpoint_disk_full, OSError, "No space left on device",
          "free space and call again (no partial checkpoint is left; the run starts afresh)"),
    Fault("run_dir_disk_full", "io (full disk)", "a run directory on a full disk",
          _run_dir_disk_full, PermissionError, "choose another --out or free some space",
          "free space or another `--out`"),
    # memory guard
    Fault("memory_budget", "memory guard", "an eigsh basis of 301 × 10M float64 vectors with 1 GiB free",
          _memory_budget, MemoryError, "but the budget is 1.0 GiB; try: storage='disk'", "the options it lists"),
    Fault("to_dense_too_big", "memory guard", "`A.to_dense(max_dim=40)` of a 50×50 operator",
          _to_dense_too_big, MemoryError, "refused above max_dim=40", "matrix-free algorithms, or raise `max_dim`"),
    # distributed
    Fault("dead_rank", "distributed", "another rank dies between products (simulated; real run in test_distributed)",
          _dead_rank, DistributedError, "all-reduce of a curvature product failed",
          "read the dead rank's log; restart the job (finished work resumes)"),
    # command line
    Fault("cli_missing_model", "cli", "`curvscope analyze --data digits` (no `--model`)",
          _cli_missing_model, SystemExit, "the following arguments are required: --model",
          "`--model package.module:factory`", expect="exits"),
    Fault("cli_unimportable_model", "cli", "`--model no_such_package.models:make_net`",
          _cli_unimportable_model, SystemExit, "cannot import 'no_such_package.models' for --model",
          "put the package on `PYTHONPATH` (or install it)", expect="exits"),
    Fault("cli_report_not_a_run", "cli", "`curvscope report DIR` on a directory without `results.json`",
          _cli_report_not_a_run, SystemExit, "is not a curvscope run directory (no results.json)",
          "pass the `--out` directory of a run", expect="exits"),
    Fault("cli_unknown_paper", "cli", "`curvscope reproduce no-such-paper`",
          _cli_unknown_paper, SystemExit, "valid names", "`curvscope list` shows the experiments", expect="exits"),
    Fault("cli_model_spec_without_colon", "cli", "`--model mypkg.models.make_net` (no `:`)",
          _cli_model_spec_without_colon, SystemExit, "--model must look like package.module:factory",
          "`--model mypkg.models:make_net`", expect="exits"),
]  # fmt: skip


# ----------------------------------------------------------------------------- the doc
INTRO = """\
# Fault table

What curvscope does with bad input and faults: wrong shapes, dtypes and devices, NaN batches,
non-scalar losses, resumed state that belongs to another computation, corrupted files, a full disk,
an interrupted run, a memory guard refusal, a dead rank and command-line mistakes. Each row names the
bad input, the error it raises (or the warning, partial result or exit status), a phrase of the
message, and the fix. The table is generated from the cases in `tests/faults_table.py`, which
`tests/test_faults.py` runs one by one, checking the error type and the phrase, so this page cannot
drift from the code: regenerate it with `.venv/bin/python tests/faults_table.py > docs/faults.md`.
Rows marked *known gap* are cases where the code does not yet give the error shown (a strict
`xfail` in the tests, listed at the end).
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def error_label(fault: Fault) -> str:
    """The error column: the exception or warning type, a partial result, or an exit status."""
    name = fault.error.__name__
    if fault.expect == "warns":
        return f"`{name}` (warning)"
    if fault.expect == "returns":
        return "partial result (no exception)"
    if fault.expect == "exits":
        return "exit status 2, message on stderr"
    return f"`{name}`"


def render(faults: list[Fault] = FAULTS) -> str:
    """``docs/faults.md``: the intro, the table input → error → fix, and the known gaps."""
    lines = [
        INTRO,
        "| # | layer | bad input | error | message contains | fix |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, f in enumerate(faults, 1):
        error = error_label(f) + (" — *known gap*" if f.xfail else "")
        row = [f"{i}", f.layer, f"{f.bad_input} <br>(`{f.id}`)", error, f"“{f.phrase}”", f.fix]
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    gaps = [f for f in faults if f.xfail]
    if gaps:
        lines += ["", "## Known gaps", ""]
        lines += [f"- `{f.id}`: {f.xfail}." for f in gaps]
    return "\n".join(lines) + "\n"


def check_table(faults: list[Fault] = FAULTS) -> None:
    """Ids unique, ``expect`` known, every row filled in."""
    ids = [f.id for f in faults]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    assert not dupes, f"duplicate fault ids: {dupes}"
    for f in faults:
        assert f.expect in EXPECTS, (f.id, f.expect)
        assert f.bad_input and f.phrase and f.fix and f.layer, f.id


if __name__ == "__main__":
    check_table()
    sys.stdout.write(render())
