"""HuggingFace ``Trainer``: :class:`CurvatureCallback`, a curvature monitor as a ``TrainerCallback``.

Optional: importing this module imports ``transformers``; the core of curvscope never does. The
model's own loss is measured (the HF convention, ``loss_fn=None``: task heads' losses from the
logits, else ``outputs.loss``; see :mod:`curvscope.operators.losses`).

Logging: after a measurement the callback asks the Trainer to log at that step
(``control.should_log``) and adds ``curvature/<metric>`` to those logs, so they land in
``trainer.state.log_history`` and reach the reporting integrations (TensorBoard, W&B, …) that run
after it. The Trainer puts callbacks given to ``Trainer(callbacks=[…])`` *after* its reporting
integrations; :meth:`CurvatureCallback.attach` puts it first, so every integration sees the values.

Resume: the monitor's state is saved as ``curvscope_monitor.pt`` in each checkpoint directory and
loaded by ``trainer.train(resume_from_checkpoint=…)``.

Example::

    cb = CurvatureCallback(probe_batches(trainer.get_train_dataloader(), 4), every=200)
    cb.attach(trainer)
    trainer.train()
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from curvscope.monitor import CurvatureMonitor
from curvscope.monitor.sinks import scalars

__all__ = ["STATE_FILE", "CurvatureCallback"]

#: The monitor's state in a Trainer checkpoint directory.
STATE_FILE = "curvscope_monitor.pt"


class CurvatureCallback(TrainerCallback):
    """Measure the Hessian of the model's own loss on a fixed probe every ``every`` optimiser steps.

    Args:
        probe: the fixed probe batches (dicts as the Trainer's collator makes them; a list, or a
            sized loader copied once).
        every: measurement interval in optimiser steps (``state.global_step``); step 0 is measured
            when training starts (recorded in ``log_history`` directly).
        **monitor_options: any keyword of :class:`~curvscope.monitor.CurvatureMonitor`.
    """

    def __init__(self, probe: Iterable[Any], *, every: int = 1000, **monitor_options: Any) -> None:
        self.probe, self.every, self.options = probe, int(every), monitor_options
        self.monitor: CurvatureMonitor | None = None
        self._pending: dict[str, float] | None = None

    def attach(self, trainer: Any) -> CurvatureCallback:
        """Insert this callback first in ``trainer``'s callbacks (before the reporting integrations)."""
        trainer.callback_handler.callbacks.insert(0, self)
        return self

    @property
    def history(self) -> list[dict]:
        """The monitor's rows (empty before training)."""
        return [] if self.monitor is None else self.monitor.history

    def _measure(self, state: Any, model: Any) -> dict[str, float] | None:
        if self.monitor is None:
            self.monitor = CurvatureMonitor(model, None, self.probe, every=self.every, **self.options)
        step = int(state.global_step)
        if self.monitor.history and self.monitor.history[-1]["step"] >= step:
            return None
        wants_grad = "gradient_confinement" in [m.name for m in self.monitor.metrics]
        has_grad = any(p.grad is not None for p in model.parameters())
        row = self.monitor.step(step, batch_gradient=True if wants_grad and has_grad else None)
        return None if row is None else scalars(row)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Create the monitor, load its state when resuming, and measure the starting step if due."""
        if self.monitor is None:
            self.monitor = CurvatureMonitor(model, None, self.probe, every=self.every, **self.options)
        if state.global_step > 0:
            saved = Path(args.output_dir) / f"checkpoint-{state.global_step}" / STATE_FILE
            if saved.exists():
                self.monitor.load_state_dict(torch.load(saved, weights_only=False))
        values = self._measure(state, model)
        if values:
            state.log_history.append({**values, "step": int(state.global_step)})

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        """Measure when due and ask the Trainer to log at this step."""
        values = self._measure(state, model)
        if values:
            self._pending = values
            control.should_log = True
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        """Add the pending ``curvature/…`` values to the logs and to the log-history entry of this step."""
        if not self._pending or logs is None:
            return
        logs.update(self._pending)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(self._pending)
        self._pending = None

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Save the monitor's state beside the Trainer's checkpoint."""
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if self.monitor is not None and folder.is_dir() and state.is_world_process_zero:
            torch.save(self.monitor.state_dict(), folder / STATE_FILE)

    def state_dict(self) -> dict[str, Any]:
        """The monitor's state (history and warm start)."""
        return {} if self.monitor is None else self.monitor.state_dict()
