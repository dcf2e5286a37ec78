"""PyTorch Lightning: :class:`CurvatureCallback`, a :class:`~curvscope.monitor.CurvatureMonitor` as a ``Callback``.

Optional: importing this module imports ``pytorch_lightning`` (or ``lightning.pytorch``); the
core of curvscope never does.

Example::

    from curvscope.integrations.lightning import CurvatureCallback
    from curvscope.data import probe_batches

    cb = CurvatureCallback(nn.CrossEntropyLoss(), probe_batches(train_loader, 4), every=200)
    pl.Trainer(callbacks=[cb], logger=CSVLogger("logs")).fit(module, train_loader)
    # metrics.csv holds curvature/lambda_max, curvature/lambda_max/residual, … at the measured steps
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

try:
    from pytorch_lightning import Callback
except ImportError:  # pragma: no cover - the unified package
    try:
        from lightning.pytorch import Callback
    except ImportError as err:
        raise ImportError(
            "curvscope.integrations.lightning needs PyTorch Lightning: pip install pytorch-lightning"
        ) from err

from curvscope.monitor import CurvatureMonitor
from curvscope.monitor.sinks import scalars

__all__ = ["CurvatureCallback"]


class CurvatureCallback(Callback):
    """Measure the Hessian of the ``LightningModule``'s forward + ``loss_fn`` on a fixed probe during ``fit``.

    Measures before the first step (step 0) and whenever ``trainer.global_step % every == 0``
    after an optimiser step; logs through every logger of the trainer as ``curvature/<metric>``
    at ``trainer.global_step``. The monitor's state (history, warm start) is saved in Lightning
    checkpoints, so ``fit(ckpt_path=…)`` continues both.

    Args:
        loss_fn: ``loss_fn(module(x), y)`` (mean over the batch), or ``None`` when the module's
            forward returns an HF-style output with ``.loss``.
        probe: the fixed probe batches (a list, or a sized loader copied once); moved to the
            module's device for every product.
        every: measurement interval in optimiser steps.
        **monitor_options: any keyword of :class:`~curvscope.monitor.CurvatureMonitor`
            (``metrics``, ``k``, ``log_dir``, ``loggers``, ``seed``, ``tol`` …).
    """

    def __init__(self, loss_fn: Any, probe: Iterable[Any], *, every: int = 1000, **monitor_options: Any) -> None:
        super().__init__()
        self.loss_fn, self.probe, self.every, self.options = loss_fn, probe, int(every), monitor_options
        self.monitor: CurvatureMonitor | None = None
        self._pending_state: dict | None = None
        self._last_step: int | None = None

    @property
    def history(self) -> list[dict]:
        """The monitor's rows (empty before ``fit``)."""
        return [] if self.monitor is None else self.monitor.history

    def _ensure(self, trainer: Any, pl_module: Any) -> CurvatureMonitor:
        if self.monitor is None:
            self.monitor = CurvatureMonitor(pl_module, self.loss_fn, self.probe, every=self.every, **self.options)
            if self._pending_state is not None:
                self.monitor.load_state_dict(self._pending_state)
                self._pending_state = None
        return self.monitor

    def _measure(self, trainer: Any, pl_module: Any, step: int, force: bool = False) -> None:
        monitor = self._ensure(trainer, pl_module)
        if self._last_step == step or any(r["step"] == step for r in monitor.history[-1:]):
            return
        self._last_step = step
        wants_grad = "gradient_confinement" in [m.name for m in monitor.metrics]
        has_grad = any(p.grad is not None for p in pl_module.parameters())
        row = monitor.step(step, force=force, batch_gradient=True if wants_grad and has_grad else None)
        if row is not None:
            values = scalars(row)
            for logger in trainer.loggers:
                logger.log_metrics(values, step=step)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Measure at the starting step (0, or the resumed global step) when it is due."""
        self._measure(trainer, pl_module, trainer.global_step)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Measure after an optimiser step when ``global_step % every == 0``."""
        self._measure(trainer, pl_module, trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        """The monitor's state, saved in Lightning checkpoints."""
        if self.monitor is not None:
            return self.monitor.state_dict()
        return dict(self._pending_state or {})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the monitor's history and warm start (applied when training starts)."""
        if not state_dict:
            return
        if self.monitor is not None:
            self.monitor.load_state_dict(state_dict)
        else:
            self._pending_state = state_dict
