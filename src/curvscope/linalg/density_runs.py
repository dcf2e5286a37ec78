"""The product loops of :func:`curvscope.linalg.density.spectral_density`: SLQ probe blocks and KPM moments.

Internal module: the maths and references are in :mod:`curvscope.linalg.density`. Both runs
receive the operator already seen in the working dtype (:mod:`curvscope.linalg.precision`)
and return the fields of a :class:`~curvscope.linalg.density.Density` as a dict.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import torch
from torch import Tensor

from curvscope.common import Status
from curvscope.linalg.checkpoint import jsonable, load_state, save_state
from curvscope.linalg.lanczos import lanczos
from curvscope.linalg.products import check_finite, check_product
from curvscope.linalg.space import LocalSpace, space_of
from curvscope.operators.fingerprint import check_fingerprint, operator_fingerprint

F64 = torch.float64
METHODS = ("slq", "kpm")
KPM_KERNELS = ("jackson", "lorentz", "none")


def jackson(M: int) -> Tensor:
    """Jackson damping factors ``g_k`` ``[M]`` (Weiße et al. 2006, Eq. 71)."""
    k = torch.arange(M, dtype=F64)
    q = math.pi / (M + 1)
    return ((M - k + 1) * torch.cos(q * k) + torch.sin(q * k) / math.tan(q)) / (M + 1)


def kernel(name: str, M: int) -> Tensor:
    """Damping factors ``[M]`` of a KPM kernel."""
    if name == "jackson":
        return jackson(M)
    if name == "lorentz":
        lam = 4.0
        return torch.sinh(lam * (1 - torch.arange(M, dtype=F64) / M)) / math.sinh(lam)
    if name == "none":
        return torch.ones(M, dtype=F64)
    raise ValueError(f"unknown KPM kernel {name!r}; valid: {KPM_KERNELS}")


def check_arguments(method, num_probes, num_steps, storage, spectral_range, margin, range_steps, checkpoint):
    """Refuse arguments without a meaning for the method (never accepted and ignored)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if num_probes < 1 or num_steps < 1:
        raise ValueError(f"num_probes and num_steps must be positive, got {num_probes} and {num_steps}")
    if method == "kpm" and checkpoint is not None:
        raise ValueError("checkpoint= resumes SLQ probe blocks; KPM runs are not resumable: use method='slq'")
    if method == "kpm" and storage != "device":
        raise ValueError("storage= places the SLQ Krylov basis; KPM keeps only 3 vectors per probe: drop storage=")
    if method == "slq" and (spectral_range is not None or margin != 0.05 or range_steps != 30):
        raise ValueError("spectral_range, margin and range_steps set KPM's rescaling; SLQ needs none: drop them")


def unit_probes(kind: str, space: LocalSpace, P: int, gen: torch.Generator, dtype, device) -> Tensor:
    """``P`` probes of the named kind, each normalised to unit length ``[D, P]`` (this process's rows)."""
    V = space.probes(kind, P, gen, dtype, device)
    return V / space.colnorms(V).unsqueeze(0)


def fingerprint_of(A: Any) -> dict:
    """The operator's fingerprint as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(operator_fingerprint(A), default=str))


# -------------------------------------------------------------------------------------- SLQ
class _SlqState:
    """Nodes, weights and residual bounds of the finished probes, and the SLQ checkpoint file."""

    def __init__(self, P: int, m: int, checkpoint, config: dict, fingerprint: dict | None) -> None:
        self.nodes, self.weights, self.resid = (torch.zeros(P, m, dtype=F64) for _ in range(3))
        self.checkpoint, self.config, self.fingerprint = checkpoint, config, fingerprint
        self.start, self.matvecs = 0, 0

    def resume(self, gen: torch.Generator) -> None:
        """Load finished probe blocks (refusing a checkpoint made for another operator)."""
        state = load_state(self.checkpoint, self.config, gen)
        if state is None:
            return
        tensors, values = state
        check_fingerprint(values.get("fingerprint"), self.fingerprint, f"SLQ checkpoint {self.checkpoint}")
        self.start, self.matvecs = int(values["done"]), int(values["matvecs"])
        n = self.start
        self.nodes[:n], self.weights[:n], self.resid[:n] = tensors["nodes"], tensors["weights"], tensors["resid"]

    def record(self, s: int, res: Any) -> None:
        check_finite(torch.cat([res.alpha.reshape(-1), res.beta.reshape(-1)]), "spectral_density (SLQ)")
        for b in range(res.num_runs):
            theta, S, r = res.ritz(b)
            n = theta.numel()
            self.nodes[s + b, :n], self.weights[s + b, :n], self.resid[s + b, :n] = theta, S[0] ** 2, r

    def save(self, done: int, gen: torch.Generator) -> None:
        if self.checkpoint is None:
            return
        tensors = {"nodes": self.nodes[:done], "weights": self.weights[:done], "resid": self.resid[:done]}
        values = {"done": done, "matvecs": self.matvecs, "fingerprint": self.fingerprint}
        save_state(self.checkpoint, self.config, gen, tensors, values)

    def truncate(self, n: int) -> None:
        self.nodes, self.weights, self.resid = self.nodes[:n], self.weights[:n], self.resid[:n]


def run_slq(
    A: Any, original: Any, num_probes: int, num_steps: int, gen: torch.Generator, probe: str,
    block_size: int | None, storage: Any, bar: Any, checkpoint: str | os.PathLike | None,
) -> dict:  # fmt: skip
    """SLQ over probe blocks of ``block_size``; finished blocks are saved to ``checkpoint``."""
    D, dtype, device = int(A.shape[0]), A.dtype, torch.device(A.device)
    V = unit_probes(probe, space_of(A), num_probes, gen, dtype, device)
    m = min(num_steps, D)
    bs = num_probes if block_size is None else max(1, int(block_size))
    config = {"D": D, "num_probes": num_probes, "num_steps": m, "probe": probe, "block_size": bs,
              "dtype": jsonable(dtype)}  # fmt: skip
    fp = fingerprint_of(original) if checkpoint is not None else None
    st = _SlqState(num_probes, m, checkpoint, config, fp)
    st.resume(gen)  # finished probe blocks are never recomputed
    bar.update(st.matvecs)
    status, msgs = Status.COMPLETED, []
    for s in range(st.start, num_probes, bs):
        base = st.matvecs
        res = lanczos(
            A, m, V[:, s : s + bs], seed=gen, storage=storage, breakdown="stop", keep_basis=False, work_dtype=dtype,
            callback=lambda step, mv, base=base: bar.update(base + mv - bar.n),
        )  # fmt: skip
        st.matvecs += res.num_matvecs
        st.record(s, res)
        if res.status == "interrupted":
            status = Status.INTERRUPTED
            msgs.append(f"interrupted in probes {s}..{s + bs - 1}; later probes were not run")
            st.truncate(s + res.num_runs)
            break
        if res.status == "invariant_subspace":
            msgs.append(res.message)
        st.save(min(s + bs, num_probes), gen)
    valid = st.weights > 0
    lo, hi = float(st.nodes[valid].min()), float(st.nodes[valid].max())
    msg = "; ".join(msgs) or f"{st.nodes.shape[0]} probes x {m} Lanczos steps"
    return {"method": "slq", "dim": D, "spectral_range": (lo, hi), "nodes": st.nodes, "weights": st.weights,
            "node_residuals": st.resid, "moments": None, "num_steps": m, "num_matvecs": st.matvecs,
            "status": status, "message": msg}  # fmt: skip


# -------------------------------------------------------------------------------------- KPM
def kpm_range(A: Any, gen: torch.Generator, margin: float, range_steps: int) -> tuple[float, float, int]:
    """``(lo, hi, products)``: Ritz bounds ± residuals of a short Lanczos run, widened by ``margin``."""
    D = int(A.shape[0])
    res = lanczos(A, min(range_steps, D), seed=gen, keep_basis=False, work_dtype=A.dtype)
    check_finite(torch.cat([res.alpha, res.beta]), "spectral_density (KPM range)")
    theta, _, r = res.ritz()
    lo, hi = float(theta[0] - r[0]), float(theta[-1] + r[-1])
    pad = margin * max(hi - lo, 1e-12 * max(abs(hi), 1.0))
    return lo - pad, hi + pad, res.num_matvecs


def _moments(A: Any, V: Tensor, a: float, b: float, num_steps: int, bar: Any) -> tuple[Tensor, float]:
    """Chebyshev moments ``[2·num_steps + 1, P]`` of the probes ``V`` and the largest vector norm seen."""
    sp = space_of(A)

    def apply(X):
        return (check_product(X, A @ X, "spectral_density (KPM)") - a * X) / b

    P = V.shape[1]
    mu = torch.zeros(2 * num_steps + 1, P, dtype=V.dtype, device=V.device)
    T0, T1 = V, apply(V)
    bar.update(P)
    mu[0] = sp.coldots(T0, T0)
    mu[1] = sp.coldots(T1, T0)
    growth = 1.0
    for k in range(1, num_steps):
        mu[2 * k] = 2 * sp.coldots(T1, T1) - mu[0]
        T2 = 2 * apply(T1) - T0
        bar.update(P)
        mu[2 * k + 1] = 2 * sp.coldots(T2, T1) - mu[1]
        T0, T1 = T1, T2
        growth = max(growth, float(sp.colnorms(T1).max()))
    mu[2 * num_steps] = 2 * sp.coldots(T1, T1) - mu[0]
    return mu, max(growth, float(mu.abs().max()))


def run_kpm(
    A: Any, num_probes: int, num_steps: int, gen: torch.Generator, probe: str, spectral_range: Any,
    margin: float, range_steps: int, block_size: int | None, bar: Any,
) -> dict:  # fmt: skip
    """KPM moments of ``num_probes`` probes, ``block_size`` probes per block product."""
    D, dtype, device = int(A.shape[0]), A.dtype, torch.device(A.device)
    matvecs = 0
    if spectral_range is None:
        lo, hi, matvecs = kpm_range(A, gen, margin, range_steps)
        bar.update(matvecs)
    else:
        lo, hi = map(float, spectral_range)
    a, b = 0.5 * (hi + lo), 0.5 * (hi - lo)
    V = unit_probes(probe, space_of(A), num_probes, gen, dtype, device)
    bs = num_probes if block_size is None else max(1, int(block_size))
    parts, growth = [], 1.0
    for s in range(0, num_probes, bs):
        mu, g = _moments(A, V[:, s : s + bs], a, b, num_steps, bar)
        parts.append(mu.T.to("cpu", F64))
        growth = max(growth, g)
    matvecs += num_probes * num_steps
    M = 2 * num_steps + 1
    status, msg = Status.COMPLETED, f"{num_probes} probes x {num_steps} Chebyshev products ({M} moments)"
    if growth > 10.0:
        status = Status.RANGE_EXCEEDED
        msg = (
            f"Chebyshev vectors grew to {growth:.3g}: the spectrum leaves [{lo:.4g}, {hi:.4g}]; pass a wider "
            f"spectral_range, a larger margin, or more range_steps"
        )
    return {"method": "kpm", "dim": D, "spectral_range": (lo, hi), "nodes": None, "weights": None,
            "node_residuals": None, "moments": torch.cat(parts), "num_steps": num_steps, "num_matvecs": matvecs,
            "status": status, "message": msg}  # fmt: skip
