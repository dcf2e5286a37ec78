"""An HTML report over training from a monitor's history, drawn by the run-directory renderer."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from curvscope.experiments.run import Figure, environment
from curvscope.io import atomic_write_json
from curvscope.report.html import render

#: Figures drawn when their keys are in the history: (name, title, y label, keys, log y).
PANELS = (
    ("lambda_max", "Largest Hessian eigenvalue", "λ_max", ("lambda_max", "ggn_lambda_max"), False),
    ("top_k", "Top-k eigenvalues", "λ_i", None, False),
    ("persistence", "Persistence of the top-k eigenspace", "overlap with previous", ("top_k/persistence",), False),
    ("trace", "Trace of the Hessian (Hutch++)", "Tr H", ("trace",), False),
    ("confinement", "Gradient in the top-k eigenspace", "‖V_kᵀg‖²/‖g‖²",
     ("gradient_confinement", "gradient_confinement/batch"), False),
    ("matvecs", "Cost per measurement", "Hessian-vector products", ("matvecs",), True),
)  # fmt: skip


def _series(history: list[dict[str, Any]], key: str) -> dict | None:
    pts = [(r["step"], r[key]) for r in history if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    if not pts:
        return None
    return {"label": key, "x": [p[0] for p in pts], "y": [float(p[1]) for p in pts], "style": "line"}


def figures(history: list[dict[str, Any]]) -> list[Figure]:
    """One figure per panel whose metrics were recorded."""
    out = []
    for name, title, ylabel, keys, logy in PANELS:
        if keys is None:
            keys = sorted({k for r in history for k in r if k.startswith("top_k/") and k[6:].isdigit()},
                          key=lambda k: int(k[6:]))  # fmt: skip
        series = [s for s in (_series(history, k) for k in keys) if s is not None]
        if series:
            out.append(Figure(name, title, "training step", ylabel, series, logy=logy))
    return out


def render_history(history: list[dict[str, Any]], path: Path, title: str, settings: dict) -> Path:
    """Write ``results.json`` (figures, a summary table) and ``config.json`` into ``path``; render."""
    path.mkdir(parents=True, exist_ok=True)
    last = history[-1] if history else {}
    metrics = {"measurements": len(history), "total products": sum(int(r.get("matvecs", 0)) for r in history),
               "total seconds": round(sum(float(r.get("seconds", 0.0)) for r in history), 3)}  # fmt: skip
    metrics.update({f"last {k}": v for k, v in last.items() if isinstance(v, (int, float, str))})
    results = {
        "title": title,
        "summary": f"{len(history)} measurements by curvscope.monitor on a fixed probe.",
        "claims": [],
        "metrics": metrics,
        "figures": [f.as_dict() for f in figures(history)],
    }
    atomic_write_json(path / "results.json", results)
    atomic_write_json(path / "config.json", {"experiment": "monitor", **settings})
    atomic_write_json(path / "environment.json", environment())
    return render(path)
