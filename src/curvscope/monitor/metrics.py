"""The metrics a :class:`~curvscope.monitor.CurvatureMonitor` can record: a named registry.

Each entry is a :class:`Metric`: a name, a one-line description, the keys it adds to a history
row, and a function ``fn(ctx) -> dict`` run on a :class:`Measurement` (the operators at the
current weights, the warm-start state of the previous measurement, the step's seed). Every key a
metric writes starts with its name (``lambda_max``, ``lambda_max/residual``, …); loggers prefix
them with ``curvature/``.

Cost is counted in Hessian-vector products (``…/matvecs``): one product is one pass of a
forward-over-reverse derivative over the probe batches, about 2–4× a training step on the same
number of samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from curvscope.common import make_generator
from curvscope.linalg.density import spectral_density
from curvscope.linalg.eigsh import EigshResult, eigsh
from curvscope.linalg.trace import trace
from curvscope.metrics.gradient import gradient_confinement
from curvscope.metrics.overlap import subspace_overlap


@dataclass
class Measurement:
    """What a metric sees at one measurement.

    Attributes:
        step: the training step.
        seed: the seed of this measurement (derived from the monitor's ``seed`` and ``step``).
        operators: ``name -> operator`` at the current weights (built lazily: ``"hessian"``,
            ``"ggn"``, ``"residual"``); see :meth:`operator`.
        state: the warm-start state carried between measurements (eigenvectors by metric name).
        options: the monitor's options (``k``, ``tol``, ``trace_matvecs``, …).
        batch_gradient: the last training mini-batch gradient ``[D]``, or ``None``.
        log_dir: where array files (densities) are written, or ``None``.
        shared: results computed earlier in the same measurement (``"top_k"`` eigenpairs).
    """

    step: int
    seed: int
    get_operator: Callable[[str], Any]
    state: dict[str, Tensor]
    options: dict[str, Any]
    batch_gradient: Tensor | None = None
    log_dir: Path | None = None
    shared: dict[str, Any] = field(default_factory=dict)

    def operator(self, name: str = "hessian") -> Any:
        """The operator ``name`` at the current weights."""
        return self.get_operator(name)


@dataclass(frozen=True)
class Metric:
    """A named metric: ``fn(measurement) -> {key: value}``."""

    name: str
    description: str
    fn: Callable[[Measurement], dict[str, Any]]
    needs: tuple[str, ...] = ()


def _start_vector(prev: Tensor | None, D: int, seed: int) -> Tensor | None:
    """Warm start: the sum of the previous eigenvectors with seeded positive weights (``None``: cold)."""
    if prev is None or prev.shape[0] != D:
        return None
    if prev.shape[1] == 1:
        return prev[:, 0]
    w = 1.0 + torch.rand(prev.shape[1], generator=make_generator(seed), dtype=torch.float64)
    return prev @ w.to(prev.dtype)


def warm_eigsh(m: Measurement, key: str, op_name: str, k: int, which: str = "LA") -> EigshResult:
    """Top eigenpairs of an operator, Lanczos warm-started from this metric's previous eigenvectors."""
    A = m.operator(op_name)
    prev = m.state.get(key)
    res = eigsh(
        A,
        k=k,
        which=which,
        tol=m.options["tol"],
        v0=_start_vector(prev, A.shape[0], m.seed),
        seed=m.seed,
        progress=False,
        num_matvecs=m.options["max_matvecs"],
        ncv=min(A.shape[0], k + m.options["ncv_extra"]),
    )
    m.state[key] = res.eigenvectors.detach().to("cpu", torch.float64).clone()
    return res


def _pairs(prefix: str, res: EigshResult) -> dict[str, Any]:
    return {
        f"{prefix}/residual": float(res.residuals[0] / max(res.anorm, 1e-300)),
        f"{prefix}/status": str(res.status),
        f"{prefix}/matvecs": int(res.num_matvecs),
    }


def _lambda_max(m: Measurement) -> dict[str, Any]:
    top = m.shared.get("top_k")
    if top is not None:  # the top-k solve already certified λ_max: no extra products
        return {"lambda_max": float(top.eigenvalues[0]), **_pairs("lambda_max", top), "lambda_max/matvecs": 0}
    res = warm_eigsh(m, "lambda_max", "hessian", 1)
    m.shared["lambda_max"] = res
    return {"lambda_max": float(res.eigenvalues[0]), **_pairs("lambda_max", res)}


def _top_k(m: Measurement) -> dict[str, Any]:
    k = m.options["k"]
    prev = m.state.get("top_k")
    res = warm_eigsh(m, "top_k", "hessian", k)
    m.shared["top_k"] = res
    out: dict[str, Any] = {f"top_k/{i + 1}": float(v) for i, v in enumerate(res.eigenvalues)}
    Q = m.state["top_k"]
    out["top_k/persistence"] = float(subspace_overlap(prev, Q)) if prev is not None and prev.shape == Q.shape else None
    out["top_k/max_residual"] = float(res.residuals.max() / max(res.anorm, 1e-300))
    out["top_k/status"] = str(res.status)
    out["top_k/matvecs"] = int(res.num_matvecs)
    return out


def _trace(m: Measurement) -> dict[str, Any]:
    res = trace(m.operator(), "hutch++", m.options["trace_matvecs"], seed=m.seed, progress=False)
    return {"trace": float(res.estimate), "trace/stderr": float(res.stderr), "trace/matvecs": int(res.num_matvecs)}


def _confinement(m: Measurement) -> dict[str, Any]:
    top = m.shared.get("top_k")
    if top is None:
        raise ValueError("gradient_confinement needs the top_k metric (list 'top_k' before it)")
    V = top.eigenvectors
    g = m.operator().gradient().to(V)
    out = {
        "gradient_confinement": float(gradient_confinement(g, V, orthonormalize=False)),
        "gradient_confinement/matvecs": 0,
    }
    if m.batch_gradient is not None:
        gb = m.batch_gradient.to(V)
        out["gradient_confinement/batch"] = float(gradient_confinement(gb, V, orthonormalize=False))
    return out


def _density(m: Measurement) -> dict[str, Any]:
    every = m.options["density_every"]
    if every is None or m.step % every != 0:
        return {}
    res = spectral_density(
        m.operator(), "slq", m.options["density_probes"], m.options["density_steps"], seed=m.seed, progress=False
    )
    out: dict[str, Any] = {"density/matvecs": int(res.num_matvecs), "density/status": str(res.status)}
    if m.log_dir is not None:
        path = m.log_dir / "densities" / f"density-step{m.step:08d}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        res.save(path)
        out["density/file"] = str(path.relative_to(m.log_dir))
    out["density/negative_mass"] = float(res.negative_mass())
    return out


def _ggn(m: Measurement) -> dict[str, Any]:
    res = warm_eigsh(m, "ggn_lambda_max", "ggn", 1)
    return {"ggn_lambda_max": float(res.eigenvalues[0]), **_pairs("ggn_lambda_max", res)}


def _residual(m: Measurement) -> dict[str, Any]:
    res = warm_eigsh(m, "residual", "residual", 1, which="LM")
    return {"residual": float(res.eigenvalues[0]), **_pairs("residual", res)}


#: The registry, in the order metrics run (top_k before those that reuse its eigenpairs).
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("top_k", "the k largest Hessian eigenvalues (certified), warm-started, and the persistence "
               "‖Q_prevᵀQ‖_F²/k of the top-k eigenspace since the previous measurement", _top_k),
        Metric("lambda_max", "the largest Hessian eigenvalue with its measured relative residual, by Lanczos "
               "warm-started from the previous top eigenvector (free when top_k runs)", _lambda_max),
        Metric("trace", "Tr(H) by Hutch++ with its standard error (trace_matvecs products)", _trace),
        Metric("gradient_confinement", "‖V_kᵀg‖²/‖g‖² of the probe gradient (and of the last mini-batch "
               "gradient when given) in the top-k eigenspace (Gur-Ari et al. 2018)", _confinement, ("top_k",)),
        Metric("density", "SLQ spectral density every density_every steps, saved under log_dir/densities",
               _density),
        Metric("ggn_lambda_max", "the largest Gauss–Newton eigenvalue (certified, warm-started)", _ggn),
        Metric("residual", "the largest-magnitude eigenvalue of H − G (certified, warm-started)", _residual),
    )
}  # fmt: skip

#: The default metrics: certified λ_max alone (a handful of products per warm measurement).
DEFAULT_METRICS = ("lambda_max",)


def resolve_metrics(names: Any) -> list[Metric]:
    """The :class:`Metric` entries for ``names`` in registry order; an unknown name lists the valid ones."""
    names = (names,) if isinstance(names, str) else tuple(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; valid: {', '.join(METRICS)}")
    chosen = set(names)
    for n in names:
        chosen.update(METRICS[n].needs)
    return [m for name, m in METRICS.items() if name in chosen]
