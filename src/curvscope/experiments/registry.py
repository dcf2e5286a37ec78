"""Named experiment recipes: an explicit registry (no import-time magic beyond registration)."""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from curvscope.experiments.run import RunDir, default_fingerprint

#: ``quick``: minutes on a CPU; ``full``: the papers' kind of data and nets, ≤ 60 min on 2 CPU cores;
#: ``paper``: the papers' own sizes where they are larger than ``full`` (epochs, curvature subsets,
#: solver budgets): GPU-sized, and what ``full`` runs on a CUDA device.
SCALES = ("quick", "full", "paper")


def effective_scale(scale: str, device: torch.device) -> str:
    """The scale a run uses: ``full`` on a CUDA device runs the papers' own sizes (``paper``).

    Example:
        >>> effective_scale("full", torch.device("cuda")), effective_scale("full", torch.device("cpu"))
        ('paper', 'full')
    """
    return "paper" if scale == "full" and device.type == "cuda" else scale


def by_scale(scale: str, quick: Any, full: Any, paper: Any = None) -> Any:
    """A recipe's settings at ``scale`` (``paper`` falls back to ``full`` where the papers are no larger)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return {"quick": quick, "full": full, "paper": full if paper is None else paper}[scale]


@dataclass(frozen=True)
class Context:
    """What a recipe may depend on besides its own settings."""

    scale: str
    seed: int
    device: torch.device
    progress: bool = True
    #: A dataset that replaces the recipe's full-scale image data (``mnist-idx:PATH``, ``cifar10:PATH``,
    #: or a registered name); ``None`` keeps the recipe's default (Fashion-MNIST at the full scale).
    data: str | None = None

    @property
    def quick(self) -> bool:
        """True at the quick scale (≤ 3 min on 2 CPU cores)."""
        return self.scale == "quick"

    def image_data(self, default: str = "fashion-mnist") -> str:
        """The image dataset a full-scale recipe loads: the user's ``--data`` or ``default``."""
        return self.data or default


@dataclass(frozen=True)
class Recipe:
    """An experiment: ``run(run_dir, context)`` writes arrays, claims and figure specs."""

    name: str
    title: str
    summary: str
    run: Callable[[RunDir, Context], None]
    papers: str = ""
    #: ``settings(scale)``: the recipe's parameters at that scale (part of the run's fingerprint).
    settings: Callable[[str], Any] | None = None

    def params(self, scale: str) -> Any:
        """The recipe's parameters at ``scale`` as JSON-ready values (``None`` when it declares none)."""
        if self.settings is None:
            return None
        s = self.settings(scale)
        return dataclasses.asdict(s) if dataclasses.is_dataclass(s) else s


EXPERIMENTS: dict[str, Recipe] = {}


def register(recipe: Recipe, overwrite: bool = False) -> Recipe:
    """Add a recipe; refuses to replace one of the same name unless ``overwrite``."""
    if recipe.name in EXPERIMENTS and not overwrite:
        raise KeyError(f"an experiment named {recipe.name!r} is already registered (pass overwrite=True)")
    EXPERIMENTS[recipe.name] = recipe
    return recipe


def get(name: str) -> Recipe:
    """The recipe called ``name``, or an error listing the valid names."""
    _load_builtin()
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise KeyError(f"unknown experiment {name!r}; valid names: {', '.join(sorted(EXPERIMENTS))}") from None


def names() -> list[str]:
    """Registered experiment names (built-ins included)."""
    _load_builtin()
    return sorted(EXPERIMENTS)


def _load_builtin() -> None:
    import curvscope.experiments.builtin  # noqa: F401 - registers the built-in recipes


def run_experiment(
    name: str,
    scale: str = "quick",
    seed: int = 0,
    device: str = "cpu",
    out: str | Path | None = None,
    progress: bool = True,
    data: str | None = None,
) -> RunDir:
    """Run (or resume, when ``out`` holds a partial run of the same config) an experiment.

    ``data`` replaces the full scale's image dataset (e.g. ``"mnist-idx:/data/mnist"``); it is part of
    the run's fingerprint. Wall-clock and CPU seconds add up over a run's resumptions.

    Returns the :class:`RunDir`; the report is rendered by the caller (``curvscope.report``).
    """
    recipe = get(name)
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if data is not None and scale == "quick":
        raise ValueError("--data replaces the full scale's images: use it with --scale full")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    scale = effective_scale(scale, dev)
    if scale == "paper" and dev.type != "cuda":
        warnings.warn(
            f"{name}: --scale paper runs the papers' own (GPU-sized) settings on {dev}: expect hours; "
            f"--scale full fits an hour on 2 CPU cores",
            stacklevel=2,
        )
    out = Path(out) if out is not None else Path("runs") / f"{name}-{scale}-seed{seed}"
    config = {"experiment": name, "scale": scale, "seed": seed, "device": str(dev)}
    if data is not None:
        config["data"] = data
    fingerprint = default_fingerprint(config, params=recipe.params(scale), default_dtype=str(torch.get_default_dtype()))
    run_dir = RunDir(out, config, fingerprint=fingerprint)
    run_dir.results["title"] = recipe.title
    run_dir.results["summary"] = recipe.summary
    # An application-level choice (process-wide): late-training HVPs run ~4x slower with denormals.
    torch.set_flush_denormal(True)
    previous = run_dir.results.get("timing", {})
    t0, c0 = time.perf_counter(), time.process_time()

    def timing() -> dict:
        # Seconds of this segment plus those of earlier (killed, then resumed) segments.
        return {
            "wall_seconds": previous.get("wall_seconds", 0.0) + time.perf_counter() - t0,
            "cpu_seconds": previous.get("cpu_seconds", 0.0) + time.process_time() - c0,
            "segments": previous.get("segments", 0) + 1,
            "threads": torch.get_num_threads(),
        }

    try:
        recipe.run(run_dir, Context(scale=scale, seed=seed, device=dev, progress=progress, data=data))
    except BaseException:
        run_dir.results["timing"] = timing()  # a resumed run continues the count
        run_dir.flush()
        raise
    total = timing()
    run_dir.results["timing"] = total
    run_dir.finish(wall_seconds=total["wall_seconds"])
    return run_dir
