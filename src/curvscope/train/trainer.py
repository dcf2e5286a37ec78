"""A small, deterministic, resumable trainer with snapshots (the training side of the experiments).

Determinism without global state: the permutation of epoch ``e`` is drawn from a
generator seeded by ``(seed, e)``, and each step runs under a forked global RNG seeded
by ``(seed, step)`` (so dropout is reproducible and the caller's RNG is untouched); the
learning rate is a pure function of the step. The state at step ``k`` is therefore just
the model, the optimizer state and ``k`` — which is what a snapshot stores, so resuming
from a snapshot continues bit-for-bit like an uninterrupted run.

Run directory (``out_dir``)::

    train_config.json                  the TrainConfig (a resume must match it)
    history.json                       per-step batch loss and lr, snapshot metrics
    snapshots/step_0000100.safetensors model state_dict (parameters and buffers)
    snapshots/step_0000100.optim.safetensors  optimizer state (for resuming)
    snapshots/step_0000100.json        metrics at that step; written last, marks it complete
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from curvscope.common import make_progress
from curvscope.io import atomic_write_json, load_tensors, read_json, save_tensors
from curvscope.train.evaluate import LossFn, evaluate, get_loss
from curvscope.train.snapshot_files import (
    Snapshot,
    list_snapshots,
    load_optim,
    optim_path,
    optim_tensors,
    snapshot_path,
)
from curvscope.train.snapshot_files import load_snapshot as load_snapshot  # re-exported: part of this module's API

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of a run (JSON-serialisable; saved beside the snapshots).

    Attributes:
        optimizer: ``"sgd"`` (with ``momentum``/``nesterov``), ``"adam"`` or ``"adamw"``.
        lr: base learning rate.
        momentum: SGD momentum.
        nesterov: SGD Nesterov momentum.
        betas: Adam betas.
        weight_decay: L2 (SGD, Adam) or decoupled (AdamW) weight decay.
        batch_size: samples per step; ``None`` is full-batch gradient descent.
        steps: number of optimizer steps; or give ``epochs`` (exactly one of the two).
        epochs: number of passes (may be fractional; rounded up to whole steps).
        shuffle: reshuffle every epoch (ignored for full batch).
        drop_last: drop a last short batch in each epoch.
        schedule: ``"constant"``, ``"cosine"`` (to ``min_lr_ratio · lr`` at the last step) or
            ``"step"`` (multiply by ``gamma`` at each of ``milestones``, in steps).
        warmup_steps: linear warm-up from ``lr / warmup_steps``.
        min_lr_ratio: the cosine schedule's floor.
        milestones: steps at which the ``"step"`` schedule decays.
        gamma: the ``"step"`` schedule's factor.
        max_grad_norm: clip the batch gradient's norm (``None``: no clipping).
        loss: ``"cross_entropy"`` or ``"mse"`` (``train(loss_fn=...)`` overrides).
        seed: seed of the shuffling and of each step's RNG.
        snapshot_steps: steps at which to snapshot (0 = initialisation); the last step is
            always snapshotted.
        snapshot_every: also snapshot every this many steps.
        metrics_mode: ``"eval"`` (default) or ``"train"``: the mode of the snapshot metrics.
        eval_batch_size: batch size of the metrics passes (``None``: one batch).
    """

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    batch_size: int | None = 64
    steps: int | None = None
    epochs: float | None = None
    shuffle: bool = True
    drop_last: bool = False
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    max_grad_norm: float | None = None
    loss: str = "cross_entropy"
    seed: int = 0
    snapshot_steps: tuple[int, ...] = ()
    snapshot_every: int | None = None
    metrics_mode: str = "eval"
    eval_batch_size: int | None = None

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps= or epochs= in TrainConfig")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.schedule == "step" and not self.milestones:
            raise ValueError("schedule='step' needs milestones=(step, …) at which the lr is multiplied by gamma")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None (full batch), got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.snapshot_every is not None and self.snapshot_every < 1:
            raise ValueError(f"snapshot_every must be >= 1, got {self.snapshot_every}")
        # Tuples, not lists, so configs compare equal after a JSON round trip.
        object.__setattr__(self, "betas", tuple(self.betas))
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        object.__setattr__(self, "snapshot_steps", tuple(int(s) for s in self.snapshot_steps))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


def steps_per_epoch(num_samples: int, config: TrainConfig) -> int:
    """Optimizer steps in one pass over ``num_samples``."""
    if config.batch_size is None:
        return 1
    spe = num_samples // config.batch_size if config.drop_last else math.ceil(num_samples / config.batch_size)
    if spe < 1:
        raise ValueError(f"batch_size={config.batch_size} > N={num_samples} with drop_last=True leaves no batch")
    return spe


def total_steps(num_samples: int, config: TrainConfig) -> int:
    """Number of optimizer steps of the run."""
    if config.steps is not None:
        return int(config.steps)
    return math.ceil(config.epochs * steps_per_epoch(num_samples, config))


def lr_at(step: int, config: TrainConfig, num_steps: int) -> float:
    """Learning rate of step ``step`` (0-based) in a run of ``num_steps`` steps."""
    w = config.warmup_steps
    if step < w:
        return config.lr * (step + 1) / w
    if config.schedule == "cosine":
        t = (step - w) / max(1, num_steps - w - 1)
        return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
    if config.schedule == "step":
        return config.lr * config.gamma ** sum(step >= m for m in config.milestones)
    return config.lr


def _mix(*ints: int) -> int:
    """A well-mixed 63-bit seed from integers (so (seed, 1) and (seed + 1, 0) are unrelated)."""
    return int(np.random.SeedSequence([int(i) & 0xFFFFFFFF for i in ints]).generate_state(2, np.uint64)[0] >> 1)


@dataclass(frozen=True)
class TrainHistory:
    """What a run did.

    Attributes:
        config: the run's configuration.
        num_steps: total optimizer steps.
        steps_per_epoch: steps in one pass over the data.
        batch_loss: ``[num_steps]`` mini-batch loss of each step (before its update).
        lr: ``[num_steps]`` learning rate of each step.
        snapshots: in step order.
        resumed_from: the step a resumed run started from (``None`` for a fresh run).
        wall_time: seconds spent in this call.
    """

    config: TrainConfig
    num_steps: int
    steps_per_epoch: int
    batch_loss: tuple[float, ...]
    lr: tuple[float, ...]
    snapshots: tuple[Snapshot, ...]
    resumed_from: int | None = None
    wall_time: float = 0.0

    @property
    def final(self) -> Snapshot:
        """The last snapshot (always the final step)."""
        return self.snapshots[-1]

    def snapshot(self, step: int) -> Snapshot:
        """The snapshot at ``step``."""
        for s in self.snapshots:
            if s.step == step:
                return s
        raise KeyError(f"no snapshot at step {step}; snapshots at {[s.step for s in self.snapshots]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (states excluded; paths as strings)."""
        snaps = [{"step": s.step, "epoch": s.epoch, "metrics": s.metrics, "path": s.path} for s in self.snapshots]
        return {
            "config": self.config.to_dict(),
            "num_steps": self.num_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "batch_loss": list(self.batch_loss),
            "lr": list(self.lr),
            "snapshots": snaps,
            "resumed_from": self.resumed_from,
            "wall_time": self.wall_time,
        }


def _make_optimizer(params: Sequence[nn.Parameter], c: TrainConfig) -> torch.optim.Optimizer:
    if c.optimizer == "sgd":
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay)
    cls = torch.optim.Adam if c.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)


def _as_tensors(data: Any, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    if hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
    else:
        raise TypeError(
            f"training data must be a TensorData or a pair (x [N, ...], y [N]) of tensors, got {type(data).__name__}: "
            "the trainer batches and shuffles in memory (wrap a DataLoader's dataset with curvscope.data.TensorData)"
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    x = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)
    return x, y.to(device)


def train(
    model: nn.Module,
    data: Any,
    config: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    eval_data: Any = None,
    loss_fn: LossFn | None = None,
    resume: bool = True,
    on_snapshot: Callable[[Snapshot, nn.Module], None] | None = None,
    progress: bool = False,
) -> TrainHistory:
    """Train ``model`` in place and snapshot it at the chosen steps.

    Args:
        model: the network; trained in place (in train mode; its flags are restored).
        data: training set, a :class:`~curvscope.data.TensorData` or a pair ``(x [N, ...], y [N])``;
            moved once to the model's device (floating inputs cast to its dtype).
        config: hyperparameters.
        out_dir: run directory for snapshots (safetensors, atomic writes) and history;
            ``None`` keeps the snapshots' states in memory.
        eval_data: optional held-out set; its loss and accuracy join each snapshot's metrics.
        loss_fn: overrides ``config.loss`` with a mean-reduced ``loss_fn(logits, y)``.
        resume: continue from the latest complete snapshot in ``out_dir`` (its config must
            equal ``config``); ``False`` refuses a directory that already has snapshots.
        on_snapshot: called as ``on_snapshot(snapshot, model)`` after each snapshot, with the
            model at that step (e.g. to measure the top Hessian eigenvalue).
        progress: show a tqdm bar.

    Returns:
        The :class:`TrainHistory` (of the whole run, also when resumed).
    """
    t0 = time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    dtype, device = params[0].dtype, params[0].device
    x, y = _as_tensors(data, dtype, device)
    ev = _as_tensors(eval_data, dtype, device) if eval_data is not None else None
    N = int(y.shape[0])
    loss_f = loss_fn or get_loss(config.loss)
    spe, T = steps_per_epoch(N, config), total_steps(N, config)
    wanted = {s for s in config.snapshot_steps if 0 <= s <= T} | {T}
    if config.snapshot_every:
        wanted |= set(range(0, T + 1, config.snapshot_every))
    opt = _make_optimizer(params, config)
    run = _Run(model, params, opt, config, x, y, ev, loss_f, spe, T, t0, on_snapshot)

    start = 0
    if out_dir is not None:
        run.out_dir = Path(out_dir)
        start, run.batch_loss, run.lrs, run.snaps = _prepare_dir(run.out_dir, config, model, opt, resume)
    resumed_from = start if start > 0 or run.snaps else None
    if start == 0 and 0 in wanted and not run.snaps:
        _take_snapshot(run, 0)
    _run_steps(run, start, wanted, progress)
    return _history(
        config, T, spe, run.batch_loss, run.lrs, run.snaps, resumed_from, time.perf_counter() - t0, typed=True
    )


@dataclass
class _Run:
    """One call of :func:`train`: what it was given, and the history it grows step by step."""

    model: nn.Module
    params: list[nn.Parameter]
    opt: torch.optim.Optimizer
    config: TrainConfig
    x: Tensor
    y: Tensor
    eval_data: tuple[Tensor, Tensor] | None
    loss_fn: LossFn
    steps_per_epoch: int
    num_steps: int
    t0: float
    on_snapshot: Callable[[Snapshot, nn.Module], None] | None
    out_dir: Path | None = None
    batch_loss: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    snaps: list[Snapshot] = field(default_factory=list)


def _run_steps(run: _Run, start: int, wanted: set[int], progress: bool) -> None:
    """Optimizer steps ``start … T − 1``, with a snapshot after each step in ``wanted``.

    The modules' train/eval flags are restored before each snapshot and at the end, also on error.
    """
    flags = [(m, m.training) for m in run.model.modules()]
    bar = _progress(run.num_steps, start, progress)
    try:
        for step, xb, yb in _batches(run, start):
            lr = lr_at(step, run.config, run.num_steps)
            loss = _optimizer_step(run, xb, yb, lr, step)
            run.batch_loss.append(float(loss.detach()))
            run.lrs.append(lr)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{run.batch_loss[-1]:.4f}", refresh=False)
            if step + 1 in wanted:
                for m, flag in flags:
                    m.training = flag
                _take_snapshot(run, step + 1)
    finally:
        for m, flag in flags:
            m.training = flag
        if bar is not None:
            bar.close()


def _batches(run: _Run, start: int) -> Iterator[tuple[int, Tensor, Tensor]]:
    """``(step, x, y)`` of each step from ``start``: the full batch, or the next slice of the epoch's order.

    The order of epoch ``e`` comes from a generator seeded by ``(seed, e)``, so a resumed run slices
    the same permutation as an uninterrupted one.
    """
    config, N = run.config, int(run.y.shape[0])
    shuffle = config.shuffle and config.batch_size is not None
    perm, perm_epoch = None, -1
    for step in range(start, run.num_steps):
        epoch, pos = divmod(step, run.steps_per_epoch)
        if config.batch_size is None:
            yield step, run.x, run.y
            continue
        if shuffle and perm_epoch != epoch:
            g = torch.Generator().manual_seed(_mix(config.seed, epoch))
            perm, perm_epoch = torch.randperm(N, generator=g).to(run.params[0].device), epoch
        sl = slice(pos * config.batch_size, min(N, (pos + 1) * config.batch_size))
        idx = perm[sl] if shuffle else sl
        yield step, run.x[idx], run.y[idx]


def _optimizer_step(run: _Run, xb: Tensor, yb: Tensor, lr: float, step: int) -> Tensor:
    """One update at learning rate ``lr``, under the global RNG seeded by ``(seed, step)``; its batch loss."""
    for group in run.opt.param_groups:
        group["lr"] = lr
    run.model.train()
    device = run.params[0].device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        _seed_step(_mix(run.config.seed, step, 1), device)
        run.opt.zero_grad(set_to_none=True)
        loss = run.loss_fn(run.model(xb), yb)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the training loss became {float(loss.detach())} at step {step}: lower the learning rate "
                f"(lr={lr:g}) or clip gradients (max_grad_norm)"
            )
        loss.backward()
        if run.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(run.params, run.config.max_grad_norm)
        run.opt.step()
    return loss


def _take_snapshot(run: _Run, step: int) -> None:
    """Measure the model at ``step``, keep its state (in memory or on disk), then call ``on_snapshot``."""
    m = _snapshot_metrics(run)
    state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    spe = run.steps_per_epoch
    if run.out_dir is None:
        snap = Snapshot(step, step / spe, m, None, state)
        run.snaps.append(snap)
    else:
        path = snapshot_path(run.out_dir, step)
        ot, groups = optim_tensors(run.opt)
        # Order matters: the metrics JSON is written last and marks the snapshot complete.
        save_tensors(optim_path(run.out_dir, step), ot, {"param_groups": groups, "step": step})
        save_tensors(path, state, {"step": step})
        snap = Snapshot(step, step / spe, m, path)
        run.snaps.append(snap)
        history = _history(run.config, run.num_steps, spe, run.batch_loss, run.lrs, run.snaps, None, 0.0)
        atomic_write_json(run.out_dir / "history.json", history)
        atomic_write_json(path.with_suffix(".json"), {"step": step, "epoch": step / spe, **m})
    if run.on_snapshot is not None:
        run.on_snapshot(snap, run.model)


def _snapshot_metrics(run: _Run) -> dict[str, float]:
    """Loss, accuracy and gradient norm on the training set (and the held-out set), lr, wall time."""

    def in_batches(xx: Tensor, yy: Tensor) -> list[tuple[Tensor, Tensor]]:
        bs = run.config.eval_batch_size or len(yy)
        return [(xx[i : i + bs], yy[i : i + bs]) for i in range(0, len(yy), bs)]

    mode = run.config.metrics_mode
    m = evaluate(run.model, in_batches(run.x, run.y), run.loss_fn, mode=mode).as_dict()
    if run.eval_data is not None:
        m.update(evaluate(run.model, in_batches(*run.eval_data), run.loss_fn, mode=mode, grad=False).as_dict("test_"))
    m["lr"] = run.lrs[-1] if run.lrs else lr_at(0, run.config, run.num_steps)
    m["wall_time"] = time.perf_counter() - run.t0
    return m


def _seed_step(seed: int, device: torch.device) -> None:
    # Not torch.manual_seed: it also queues lazy seeding of every accelerator backend,
    # which records a stack trace each time (~0.3 ms per step).
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def _progress(total: int, start: int, enabled: bool):
    if not enabled:
        return None
    bar = make_progress(total, True, "train", unit="step")
    bar.update(start)
    return bar


def _history(config, T, spe, batch_loss, lrs, snaps, resumed_from, wall, typed=False):
    h = TrainHistory(config, T, spe, tuple(batch_loss), tuple(lrs), tuple(snaps), resumed_from, wall)
    return h if typed else h.to_dict()


def _prepare_dir(out_dir: Path, config: TrainConfig, model: nn.Module, opt, resume: bool):
    """Write or check ``train_config.json``; on resume load the latest snapshot into model and optimizer."""
    cfg_path = out_dir / "train_config.json"
    steps = list_snapshots(out_dir)
    if cfg_path.exists():
        saved = TrainConfig.from_dict(read_json(cfg_path))
        if steps and saved != config:
            diff = {k: (v, getattr(config, k)) for k, v in saved.to_dict().items() if v != getattr(config, k)}
            raise ValueError(
                f"{out_dir} holds a run with a different config (saved vs given: {diff}): use a new out_dir, "
                "or the same config to resume"
            )
    if steps and not resume:
        raise FileExistsError(f"{out_dir} already holds snapshots {steps}: pass resume=True or use a new out_dir")
    atomic_write_json(cfg_path, config.to_dict())
    if not steps:
        return 0, [], [], []
    step = steps[-1]
    state, _ = load_tensors(snapshot_path(out_dir, step))
    model.load_state_dict(state)
    tensors, meta = load_tensors(optim_path(out_dir, step))
    load_optim(opt, tensors, meta["param_groups"])
    hist = read_json(out_dir / "history.json")
    snaps = [
        Snapshot(s["step"], s["epoch"], s["metrics"], Path(s["path"]))
        for s in hist["snapshots"]
        if s["step"] <= step and s["step"] in steps
    ]
    return step, list(hist["batch_loss"][:step]), list(hist["lr"][:step]), snaps
