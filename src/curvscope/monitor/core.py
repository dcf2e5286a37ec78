"""Curvature during training: :class:`CurvatureMonitor`, measured on a fixed probe, training untouched.

Each measurement moves the operators to the current weights, runs the chosen metrics
(:mod:`curvscope.monitor.metrics`) and appends one row to :attr:`CurvatureMonitor.history`.
Training is bitwise unaffected: the ``torch`` (CPU and CUDA), ``random`` and NumPy RNG states,
every module's train/eval flag and the grad mode are saved before and restored after; the
products run on copies of the parameters (``functional_call``), never on the model itself.

Cost: the probe is validated once, at the first measurement (a forward pass over every batch);
the first product also measures the operators' noise floor (:mod:`curvscope.operators.probe`),
which is kept for later measurements (it is relative to ``‖H‖`` and the probe is fixed). Later
measurements copy the weights into the operators' parameter snapshot in place (no validation,
no probe), and Lanczos starts from the previous top eigenvectors, so a warm ``λ_max`` costs a
handful of products.
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from curvscope.data.probe import probe_batches
from curvscope.monitor.metrics import DEFAULT_METRICS, Measurement, resolve_metrics
from curvscope.monitor.sinks import Logger, make_logger, scalars, write_files
from curvscope.operators import GGN, Hessian, LossProblem, Residual

OPERATORS = {"hessian": Hessian, "ggn": GGN, "residual": Residual}
STATE_VERSION = 1


@contextlib.contextmanager
def preserved(model: Any) -> Iterator[None]:
    """Restore RNG states (torch CPU/CUDA, ``random``, NumPy), module flags and grad mode on exit."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    py = random.getstate()
    try:
        import numpy

        np_state = numpy.random.get_state()  # noqa: NPY002 - the legacy global RNG user code may draw from
    except ImportError:  # pragma: no cover
        numpy, np_state = None, None
    flags = [(m, m.training) for m in model.modules()] if isinstance(model, nn.Module) else []
    grad_mode = torch.is_grad_enabled()
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        random.setstate(py)
        if numpy is not None:
            numpy.random.set_state(np_state)
        for m, flag in flags:
            m.training = flag
        torch.set_grad_enabled(grad_mode)


def materialise(probe: Iterable[Any]) -> list[Any]:
    """A fixed list of batches: a list/tuple as it is, a loader's batches copied once."""
    if isinstance(probe, (list, tuple)):
        if not probe:
            raise ValueError("probe is empty: pass a list of batches (e.g. probe_batches(loader, 4))")
        return list(probe)
    if not hasattr(probe, "__len__"):
        raise TypeError("probe must be a list of batches or a sized loader; use probe_batches(loader, n)")
    return probe_batches(probe, len(probe))


def _is_main() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class CurvatureMonitor:
    """Measure Hessian curvature of ``model`` on a fixed probe every ``every`` steps.

    Args:
        model: the ``nn.Module`` being trained (DDP / compiled wrappers are unwrapped).
        loss_fn: ``loss_fn(outputs, targets)`` (mean over the batch), or ``None`` for the
            HuggingFace convention (the model computes its loss from the batch).
        probe: the batches curvature is measured on, the same at every measurement (a list, or a
            sized loader copied once). Under torchrun each rank passes its own shard; products
            are summed over ranks and only rank 0 writes files and logs.
        every: measure when ``step % every == 0`` (``step(…, force=True)`` measures anyway). The
            default 1000 keeps the default metrics within 5% of the training time when the probe
            is one training batch (a warm λ_max is ~5 products of ~3 training steps each, plus a
            one-time ~20 products at the first measurement; ``benchmarks/monitor.py``).
        metrics: names from :data:`~curvscope.monitor.metrics.METRICS` (default ``("lambda_max",)``).
        k: eigenpairs of the ``top_k`` metric.
        log_dir: directory for ``history.csv``, ``history.jsonl``, densities and the report.
        loggers: callables ``(metrics, step)``, ``SummaryWriter`` objects, ``"tensorboard"`` or
            ``"wandb"``; they receive the numeric values as ``curvature/<key>``.
        seed: every random choice of a measurement is seeded from ``seed`` and the step.
        tol: relative residual ``‖Hv − λv‖/‖H‖`` certifying eigenpairs (default 1e-3; the
            eigenvalue's relative error is at most that, usually about its square over the gap).
        max_matvecs: product budget of each eigensolve.
        ncv_extra: Lanczos basis size beyond ``k`` (default 10). Small, so convergence is checked
            after every product (eigsh checks every ``ncv // 10``): a warm start stops as soon as
            its residual meets ``tol``; a cold start restarts (thickly) more often.
        trace_matvecs: Hutch++ budget of the ``trace`` metric.
        density_every: the ``density`` metric runs when ``step % density_every == 0`` (default
            ``10 * every``); ``density_probes``, ``density_steps``: its SLQ size.
        mode: train/eval policy of the products (default ``"eval"``; the model's flags are restored).
        **operator_kwargs: forwarded to the operators (``params``, ``dtype``, ``max_block``, …).
    """

    def __init__(
        self,
        model: Any,
        loss_fn: Any,
        probe: Iterable[Any],
        *,
        every: int = 1000,
        metrics: Sequence[str] | str = DEFAULT_METRICS,
        k: int = 5,
        log_dir: str | Path | None = None,
        loggers: Sequence[Any] = (),
        seed: int = 0,
        tol: float = 1e-3,
        max_matvecs: int = 300,
        ncv_extra: int = 10,
        trace_matvecs: int = 30,
        density_every: int | None = None,
        density_probes: int = 4,
        density_steps: int = 40,
        mode: str = "eval",
        **operator_kwargs: Any,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.model, self.loss_fn, self.probe = model, loss_fn, materialise(probe)
        self.every, self.seed, self.mode = int(every), int(seed), mode
        self.metrics = resolve_metrics(metrics)
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.main = _is_main()
        self.loggers: list[Logger] = [make_logger(s, self.log_dir) for s in loggers] if self.main else []
        self.options = {"k": int(k), "tol": float(tol), "max_matvecs": int(max_matvecs), "ncv_extra": int(ncv_extra),
                        "trace_matvecs": int(trace_matvecs), "density_probes": int(density_probes),
                        "density_steps": int(density_steps),
                        "density_every": 10 * self.every if density_every is None else int(density_every)}  # fmt: skip
        operator_kwargs.setdefault("move_batches", True)
        self.operator_kwargs = operator_kwargs
        self.history: list[dict[str, Any]] = []
        self._state: dict[str, Tensor] = {}
        self._problem: LossProblem | None = None
        self._ops: dict[str, Any] = {}

    # ------------------------------------------------------------------ operators
    _PROBLEM_KEYS = ("params", "dtype", "device", "loss_reduction", "move_batches", "input_keys", "units")

    def _operator(self, name: str) -> Any:
        if self._problem is None:
            kw = {k: v for k, v in self.operator_kwargs.items() if k in self._PROBLEM_KEYS}
            self._problem = LossProblem(self.model, self.loss_fn, self.probe, mode=self.mode, **kw)
        if name not in self._ops:
            kw = {k: v for k, v in self.operator_kwargs.items() if k not in self._PROBLEM_KEYS}
            self._ops[name] = OPERATORS[name].from_problem(self._problem, **kw)
        return self._ops[name]

    def _sync(self) -> None:
        """Copy the current parameters and buffers into the operators' snapshot, in place."""
        problem = self._problem
        if problem is None:
            return
        model = problem.model
        current = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        with torch.no_grad():
            for store in (problem.values, problem.fixed):
                for name, dst in store.items():
                    dst.copy_(current[name].detach())

    def _batch_gradient(self, given: Tensor | bool | None) -> Tensor | None:
        if given is None or given is False:
            return None
        if isinstance(given, Tensor):
            return given.detach().reshape(-1)
        problem = self._problem
        params = dict(problem.model.named_parameters())
        parts = [params[n].grad if params[n].grad is not None else torch.zeros_like(params[n]) for n in problem.names]
        return torch.cat([p.detach().reshape(-1) for p in parts])

    # ------------------------------------------------------------------ measuring
    def seed_for(self, step: int) -> int:
        """The seed of the measurement at ``step`` (the same on resume and on every rank)."""
        return (self.seed * 1_000_003 + int(step)) % (2**62)

    def due(self, step: int) -> bool:
        """Whether :meth:`step` measures at ``step``."""
        return int(step) % self.every == 0

    def step(self, step: int, *, force: bool = False, batch_gradient: Tensor | bool | None = None) -> dict | None:
        """Measure at ``step`` if due (or ``force``); returns the new history row, or ``None``.

        Args:
            step: the training step just finished (call after ``optimizer.step()``).
            force: measure whatever the schedule says.
            batch_gradient: the last mini-batch gradient ``[D]`` for ``gradient_confinement``,
                or ``True`` to read the parameters' ``.grad``.
        """
        if not (force or self.due(step)):
            return None
        with preserved(self.model):
            row = self._measure(int(step), batch_gradient)
        self.history.append(row)
        self._emit(row)
        return row

    def _measure(self, step: int, batch_gradient: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        self._operator("hessian")  # builds and validates the problem at the first measurement
        self._sync()
        m = Measurement(step, self.seed_for(step), self._operator, self._state, self.options,
                        self._batch_gradient(batch_gradient), self.log_dir if self.main else None)  # fmt: skip
        row: dict[str, Any] = {"step": step}
        for metric in self.metrics:
            row.update(metric.fn(m))
        row["matvecs"] = sum(v for key, v in row.items() if key.endswith("/matvecs") and isinstance(v, int))
        row["seconds"] = time.perf_counter() - t0
        return row

    def _emit(self, row: dict[str, Any]) -> None:
        if not self.main:
            return
        if self.log_dir is not None:
            write_files(self.log_dir, self.history)
        values = scalars(row)
        for logger in self.loggers:
            logger(values, row["step"])

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """History, warm-start eigenvectors and settings: save it with the training checkpoint."""
        return {
            "version": STATE_VERSION,
            "history": copy.deepcopy(self.history),
            "warm_start": {k: v.clone() for k, v in self._state.items()},
            "settings": {"every": self.every, "seed": self.seed, "metrics": [m.name for m in self.metrics],
                         **self.options},
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a saved monitor: its history, its warm start; the files are rewritten to match."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported monitor state version {state.get('version')!r} (expected {STATE_VERSION})")
        mine = self.state_dict()["settings"]
        changed = sorted(k for k in mine if state["settings"].get(k) != mine[k])
        if changed:
            raise ValueError(
                f"the saved monitor was made with other settings ({', '.join(changed)}): its history and warm "
                f"start belong to another measurement; construct the monitor with the saved settings"
            )
        self.history = copy.deepcopy(state["history"])
        self._state = {k: v.clone() for k, v in state["warm_start"].items()}
        if self.main and self.log_dir is not None:
            write_files(self.log_dir, self.history)

    # ------------------------------------------------------------------ report
    def report(self, path: str | Path | None = None, title: str = "Curvature during training") -> Path:
        """Render ``report.html`` over training (``path`` or ``log_dir/report``); returns its path."""
        from curvscope.monitor.report import render_history

        if path is None:
            if self.log_dir is None:
                raise ValueError("report() needs a path, or a monitor with log_dir")
            path = self.log_dir / "report"
        return render_history(self.history, Path(path), title, self.state_dict()["settings"])
