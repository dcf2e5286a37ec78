"""Draw the declarative figure specs of a run directory with matplotlib (PNG and SVG).

Specs (see :class:`curvscope.experiments.run.Figure`) reference saved tensors as
``"arrays/STEP:KEY"``; nothing here recomputes a curvature quantity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np

from curvscope.io import load_tensors


class ArrayResolver:
    """Resolves ``"arrays/STEP:KEY"`` references of a run directory (files loaded once)."""

    def __init__(self, run_path: Path) -> None:
        self.run_path = Path(run_path)
        self._cache: dict[str, dict] = {}

    def __call__(self, value: Any) -> np.ndarray:
        """A reference or a literal list as a numpy array."""
        if isinstance(value, str) and value.startswith("arrays/"):
            step, key = value[len("arrays/") :].split(":", 1)
            if step not in self._cache:
                self._cache[step] = load_tensors(self.run_path / "arrays" / f"{step}.safetensors")[0]
            if key not in self._cache[step]:
                raise KeyError(f"{value}: no tensor {key!r} in step {step!r} (has {sorted(self._cache[step])})")
            return self._cache[step][key].double().numpy()
        return np.asarray(value, dtype=float)


def draw(spec: dict, resolve: ArrayResolver, out_dir: Path) -> dict[str, Path]:
    """Draw one figure spec; returns the written files ``{"png": …, "svg": …}``."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    if spec.get("kind") == "heatmap":
        z = resolve(spec["z"])
        im = ax.imshow(z, cmap=spec.get("cmap", "viridis"), aspect="auto")
        fig.colorbar(im, ax=ax)
        if spec.get("xticklabels"):
            ax.set_xticks(range(len(spec["xticklabels"])), spec["xticklabels"], rotation=90, fontsize=7)
        if spec.get("yticklabels"):
            ax.set_yticks(range(len(spec["yticklabels"])), spec["yticklabels"], fontsize=7)
    else:
        top = 0.0
        for s in spec.get("series", []):
            y = resolve(s["y"])
            top = max(top, float(np.nanmax(y)) if y.size else 0.0)
            x = resolve(s["x"]) if "x" in s else np.arange(1, len(y) + 1)  # no x: rank 1..n
            style = s.get("style", "line")
            kw = {"label": s.get("label")}
            if style == "scatter":
                ax.scatter(x, y, s=s.get("size", 12), **kw)
            elif style == "step":
                ax.step(x, y, where="mid", **kw)
            elif style == "bar":
                ax.bar(x, y, width=s.get("width", 0.8), alpha=0.8, **kw)
            else:
                ax.plot(x, y, marker=s.get("marker"), **kw)
            if "band" in s:
                lo, hi = resolve(s["band"][0]), resolve(s["band"][1])
                ax.fill_between(x, lo, hi, alpha=0.2)
        for line in spec.get("vlines", []):
            ax.axvline(line["x"], color=line.get("color", "gray"), ls="--", lw=0.8, label=line.get("label"))
        for line in spec.get("hlines", []):
            ax.axhline(line["y"], color=line.get("color", "gray"), ls=":", lw=0.8, label=line.get("label"))
        if spec.get("logx"):
            ax.set_xscale("log")
        if spec.get("logy"):
            ax.set_yscale("log")
            if top > 0:  # densities have Gaussian tails down to 1e-300: show ymin_ratio decades below the peak
                ax.set_ylim(bottom=top * spec.get("ymin_ratio", 1e-7), top=top * 3)
        if any(s.get("label") for s in spec.get("series", [])) or spec.get("vlines") or spec.get("hlines"):
            ax.legend(fontsize=8)
    ax.set_title(spec.get("title", ""), fontsize=10)
    ax.set_xlabel(spec.get("xlabel", ""))
    ax.set_ylabel(spec.get("ylabel", ""))
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for ext in ("png", "svg"):
        path = out_dir / f"{spec['name']}.{ext}"
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=ext)
        tmp.replace(path)  # atomic: a killed render never leaves half a figure
        files[ext] = path
    plt.close(fig)
    return files
