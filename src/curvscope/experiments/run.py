"""Run directories: config, environment, results with claims, arrays, declarative figures.

A run directory holds everything a report needs, so ``curvscope report`` never recomputes::

    RUN/config.json        what was asked (experiment, scale, seed, parameters)
    RUN/fingerprint.json   what is measured (config, settings, version, checkpoint and data hashes)
    RUN/environment.json   versions, device, threads, start time
    RUN/results.json       claims (kind, measured, criterion, verdict), metrics, figure specs, steps done
    RUN/arrays/*.safetensors  named tensors (spectra, densities, eigenvectors …)
    RUN/figures/*.png|svg  drawn by the report layer
    RUN/report.html        self-contained report

Every file is written atomically. Steps are resumable: :meth:`RunDir.step` returns the
saved result of a finished step instead of recomputing it, so a killed run re-run with
the same directory continues where it stopped. A directory whose fingerprint differs from
the current one (another checkpoint, dataset, settings or curvscope version) is refused with
an error naming what changed: its finished steps belong to another computation.

Claims have a *kind* and a *verdict* (``docs/science.md``, "Claim kinds and verdicts"):

- kind ``paper``: statement and criterion from the paper (``source`` cites it);
  ``regression``: a value measured by this project, kept as a guard; ``sanity``: an identity
  of the implementation (``H = G + H_res``, ``G ⪰ 0`` for cross-entropy, Weyl bounds).
- verdict ``pass`` / ``fail`` from ``passed``; ``reported`` when ``passed`` is ``None``; and
  ``inconclusive`` when a result the claim rests on (an eigensolve, a density, a sketch) did
  not reach a trusted status (:class:`curvscope.common.Status`), whatever ``passed`` says.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from curvscope.common import Status, as_status
from curvscope.io import atomic_write_json, load_tensors, read_json, save_tensors
from curvscope.operators.fingerprint import check_fingerprint

KINDS = ("paper", "regression", "sanity")
VERDICTS = ("pass", "fail", "inconclusive", "reported")
#: Status words written by older results (before the common vocabulary) that meant "fine".
_LEGACY_TRUSTED = {"ok": Status.COMPLETED}


def trusted(status: Any) -> bool:
    """Whether a stored status (a :class:`Status`, its string, or a legacy ``"ok"``) may back a claim.

    Unknown words count as untrusted: a claim never rests on a result it cannot vouch for.
    """
    if isinstance(status, str) and status in _LEGACY_TRUSTED:
        return True
    try:
        return as_status(status).trusted
    except ValueError:
        return False


def verdict(passed: bool | None, inputs: dict[str, Any] | None = None) -> str:
    """``pass`` / ``fail`` / ``reported``, or ``inconclusive`` when an input's status is not trusted."""
    if passed is None:
        return "reported"
    if inputs and not all(trusted(s) for s in inputs.values()):
        return "inconclusive"
    return "pass" if passed else "fail"


@dataclass
class Claim:
    """One checkable statement, with what was measured here, its kind and its verdict.

    Attributes:
        name: identifier, unique within a run.
        statement: what is claimed, in words.
        measured: the measured values (JSON-ready).
        criterion: the test applied to ``measured``.
        passed: the test's outcome; ``None`` for a quantity that is reported, not asserted.
        source: the paper section or figure (``paper``), or what the guard protects.
        kind: ``"paper"``, ``"regression"`` or ``"sanity"`` (see the module docstring).
        inputs: status of every result the claim rests on (``{"eigsh H": "converged"}``); one
            untrusted status makes the verdict ``inconclusive``.
        paper_value: for ``paper`` claims, what the paper itself reports for this statement — its
            number, or its qualitative finding where it gives only a figure — with the table or
            figure it comes from; reports show it beside ``measured`` ("paper vs ours").
    """

    name: str
    statement: str
    measured: Any
    criterion: str
    passed: bool | None
    source: str = ""
    # Required: every claim states whether it is the paper's, a regression guard or a sanity check.
    kind: str = field(kw_only=True)
    inputs: dict[str, str] = field(default_factory=dict)
    paper_value: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.passed is not None:
            self.passed = bool(self.passed)
        self.inputs = {k: str(v) for k, v in self.inputs.items()}

    @property
    def verdict(self) -> str:
        """``pass``, ``fail``, ``inconclusive`` or ``reported``."""
        return verdict(self.passed, self.inputs)

    def as_dict(self) -> dict:
        """JSON-ready dict (with the derived ``verdict``)."""
        return {**asdict(self), "verdict": self.verdict}


def claim_kind(claim: dict) -> str:
    """The kind of a stored claim (results written before kinds existed: ``paper``)."""
    return claim.get("kind", "paper")


def claim_verdict(claim: dict) -> str:
    """The verdict of a stored claim (older results: derived from ``passed``)."""
    return claim.get("verdict") or verdict(claim.get("passed"), claim.get("inputs"))


@dataclass
class Figure:
    """A declarative figure: the report layer draws it from arrays saved in the run.

    ``series`` items: ``{"label", "x", "y"}`` where ``x``/``y`` are lists or
    ``"arrays/NAME:key"`` references, optional ``"band": [lo, hi]`` references, ``"style"``
    (``"line"``, ``"scatter"``, ``"step"``, ``"bar"``). ``kind="heatmap"`` takes ``"z"`` and
    optional ``"xticklabels"``/``"yticklabels"``.
    """

    name: str
    title: str
    xlabel: str = ""
    ylabel: str = ""
    series: list[dict] = field(default_factory=list)
    kind: str = "xy"
    logx: bool = False
    logy: bool = False
    vlines: list[dict] = field(default_factory=list)
    hlines: list[dict] = field(default_factory=list)
    caption: str = ""
    z: Any = None
    xticklabels: list[str] | None = None
    yticklabels: list[str] | None = None
    #: log-y floor relative to the highest curve (default 1e-7; Gaussian tails reach 1e-300).
    ymin_ratio: float | None = None

    def as_dict(self) -> dict:
        """JSON-ready dict without empty fields."""
        return {k: v for k, v in asdict(self).items() if v not in (None, [], "")}


def environment() -> dict:
    """Versions and machine facts recorded with every run."""
    import numpy

    return {
        "curvscope": __import__("curvscope").__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


class RunDir:
    """A run directory being written (or re-opened to resume or re-render).

    Args:
        path: the directory; created if missing. It must be writable: checked up front by
            writing and removing a probe file, before any computation.
        config: written to ``config.json``. Re-opening a directory with a different config
            is refused (its finished steps belong to another computation).
        fingerprint: what is measured, written to ``fingerprint.json`` (default: the config
            without its output options, and the curvscope version). Re-opening a directory
            whose fingerprint differs raises :class:`~curvscope.operators.fingerprint.StaleStateError`
            naming each change.
    """

    def __init__(self, path: str | os.PathLike, config: dict | None = None, fingerprint: dict | None = None) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-probe"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as err:
            raise PermissionError(
                f"cannot write to the run directory {self.path} ({err.strerror}): choose another --out "
                f"or free some space"
            ) from err
        cfg_path = self.path / "config.json"
        if config is not None:
            if cfg_path.exists():
                old = read_json(cfg_path)
                if _strip(old) != _strip(config):
                    raise ValueError(
                        f"{self.path} holds a run with a different config; resume needs the same settings "
                        f"(or choose a new --out). Differences: "
                        f"{sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))}"
                    )
            else:
                atomic_write_json(cfg_path, config)
            self._check_fingerprint(fingerprint if fingerprint is not None else default_fingerprint(config))
            if not (self.path / "environment.json").exists():
                atomic_write_json(self.path / "environment.json", environment())
        self._results = read_json(self.results_path) if self.results_path.exists() else {}
        self._results.setdefault("claims", [])
        self._results.setdefault("metrics", {})
        self._results.setdefault("figures", [])
        self._results.setdefault("steps", {})

    def _check_fingerprint(self, current: dict) -> None:
        current = json.loads(json.dumps(current, default=str))  # as it reads back (tuples -> lists)
        path = self.path / "fingerprint.json"
        if path.exists():
            check_fingerprint(read_json(path), current, f"run directory {self.path}")
        elif (self.path / "results.json").exists():
            check_fingerprint(None, current, f"run directory {self.path}")  # raises: cannot be checked
        else:
            atomic_write_json(path, current)

    # ------------------------------------------------------------------ state
    @property
    def results_path(self) -> Path:
        """``results.json``."""
        return self.path / "results.json"

    @property
    def config(self) -> dict:
        """The run's config."""
        return read_json(self.path / "config.json")

    @property
    def results(self) -> dict:
        """Everything recorded so far (claims, metrics, figures, steps)."""
        return self._results

    def flush(self) -> None:
        """Write ``results.json`` atomically."""
        atomic_write_json(self.results_path, self._results)

    # ------------------------------------------------------------------ steps
    def step(self, name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``compute`` once: its result (tensors + JSON values) is saved and reused on resume.

        Tensor values go to ``arrays/<name>.safetensors``, everything else into
        ``results.json`` under ``steps``; both are written before the step counts as done.
        """
        done = self._results["steps"].get(name)
        if done is not None:
            loaded = dict(done.get("values", {}))
            if done.get("arrays"):
                tensors, _ = load_tensors(self.path / "arrays" / f"{name}.safetensors")
                loaded.update(tensors)
            return loaded
        t0 = time.perf_counter()
        out = compute()
        tensors = {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
        values = {k: v for k, v in out.items() if not isinstance(v, torch.Tensor)}
        if tensors:
            save_tensors(self.path / "arrays" / f"{name}.safetensors", tensors)
        seconds = time.perf_counter() - t0
        self._results["steps"][name] = {"values": values, "arrays": sorted(tensors), "seconds": seconds}
        self.flush()
        return out

    def arrays(self, name: str) -> dict[str, torch.Tensor]:
        """Tensors saved by step ``name``."""
        return load_tensors(self.path / "arrays" / f"{name}.safetensors")[0]

    # ---------------------------------------------------------------- records
    def claim(self, claim: Claim) -> Claim:
        """Record (or replace) a claim by name."""
        claims = [c for c in self._results["claims"] if c["name"] != claim.name]
        self._results["claims"] = [*claims, claim.as_dict()]
        self.flush()
        return claim

    def metric(self, name: str, value: Any) -> None:
        """Record a named measurement."""
        self._results["metrics"][name] = value
        self.flush()

    def figure(self, figure: Figure) -> None:
        """Record (or replace) a figure spec by name."""
        figs = [f for f in self._results["figures"] if f["name"] != figure.name]
        self._results["figures"] = [*figs, figure.as_dict()]
        self.flush()

    def finish(self, **extra: Any) -> None:
        """Mark the run complete."""
        self._results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._results.update(extra)
        self.flush()


def default_fingerprint(config: dict, **extra: Any) -> dict:
    """What a run measures: its config (minus output options), the curvscope version, and ``extra``."""
    return {"config": _strip(config), "curvscope": __import__("curvscope").__version__, **extra}


def _strip(cfg: dict) -> dict:
    """Config keys that may differ between a run and its resumption."""
    return {k: v for k, v in cfg.items() if k not in ("out", "resume", "progress")}


def array_ref(step: str, key: str) -> str:
    """Reference to a saved tensor for figure specs: ``"arrays/STEP:KEY"``."""
    return f"arrays/{step}:{key}"
