"""Extreme eigenpairs with residual certificates: thick-restart Lanczos (Krylov–Schur).

Algorithm (Wu & Simon 2000, "Thick-restart Lanczos"; Stewart 2001, "A Krylov–Schur
algorithm"): expand an orthonormal basis ``Q`` ``[D, m]`` by Lanczos steps with full
reorthogonalisation until it holds ``ncv`` vectors, so that

    A Q = Q H + β q_{m+1} e_mᵀ,    H = Qᵀ A Q  [m, m].

Rayleigh–Ritz: ``H = S diag(θ) Sᵀ``; the Ritz pair ``(θ_i, Q s_i)`` has residual norm
``‖A Q s_i − θ_i Q s_i‖ = β |S[m-1, i]|``. A pair counts as converged when its residual is
at most ``tol · ‖A‖`` (``‖A‖`` estimated by the largest ``|θ|`` seen). Restart: keep the
``p`` most wanted Ritz vectors ``Q S[:, :p]`` plus ``q_{m+1}``; the projected matrix becomes
``diag(θ_{:p})`` bordered by the arrow ``β S[m-1, :p]``, and the expansion continues. The
basis never exceeds ``ncv + 1`` vectors: memory ``(ncv + 1) · D`` numbers, stated by
``EigshResult.basis_nbytes``.

Certificates: at the end the ``k`` Ritz vectors ``V`` ``[D, k]`` are multiplied in one
block product and ``‖A v − λ v‖`` is measured directly (``residuals="true"``, ``k`` extra
products); a pair is reported converged only if that true residual is ``≤ tol · ‖A‖``.
``residuals="verified"`` spends 2 products instead: it measures the defect ``E = A Q −
Q H − β q e_mᵀ`` of the Lanczos relation on two random unit combinations ``c`` and reports
the bound ``β|s_m| + √m · max ‖E c‖`` (``‖E s‖ ≤ ‖E‖₂ ≤ ‖E‖_F ≈ √m ‖E c‖``), which catches
a non-symmetric or non-deterministic operator without multiplying every Ritz vector.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from curvscope.io import load_tensors, save_tensors
from curvscope.linalg.checkpoint import jsonable, load_state, save_state
from curvscope.linalg.lanczos import check_operator, default_breakdown_tol, orthogonalize, promote
from curvscope.linalg.sampling import SeedLike, gaussian, make_generator
from curvscope.linalg.storage import StorageFactory, make_storage
from curvscope.memory import check_budget, vectors_bytes

WHICH = ("LA", "SA", "LM", "BE")


def default_tol(dtype: torch.dtype) -> float:
    """``sqrt(eps)``: 1.5e-8 in float64, 3.5e-4 in float32 (relative residual ``‖Av − λv‖/‖A‖``).

    Example:
        >>> import torch
        >>> f"{default_tol(torch.float64):.1e}"
        '1.5e-08'
    """
    return math.sqrt(torch.finfo(dtype).eps)


def priority(theta: Tensor, which: str) -> Tensor:
    """Indices of ``theta`` from most to least wanted under ``which``.

    ``LA``: largest first; ``SA``: smallest first; ``LM``: largest ``|θ|`` first; ``BE``:
    alternately from the top and the bottom, starting at the top (so the first ``k``
    hold ``⌈k/2⌉`` from the top and ``⌊k/2⌋`` from the bottom, as ARPACK).

    Example:
        >>> import torch
        >>> priority(torch.tensor([-3.0, 1.0, 2.0]), "BE").tolist()
        [2, 0, 1]
    """
    if which == "LA":
        return torch.argsort(theta, descending=True, stable=True)
    if which == "SA":
        return torch.argsort(theta, stable=True)
    if which == "LM":
        return torch.argsort(theta.abs(), descending=True, stable=True)
    if which == "BE":
        asc = torch.argsort(theta, stable=True)
        n = asc.numel()
        out = []
        for i in range((n + 1) // 2):
            out.append(asc[n - 1 - i])
            if i != n - 1 - i:
                out.append(asc[i])
        return torch.stack(out) if out else asc
    raise ValueError(f"which must be one of {WHICH}, got {which!r}")


def _display_order(values: Tensor, which: str) -> Tensor:
    if which in ("LA", "BE"):
        return torch.argsort(values, descending=True, stable=True)
    if which == "SA":
        return torch.argsort(values, stable=True)
    return torch.argsort(values.abs(), descending=True, stable=True)


@contextlib.contextmanager
def _defer_sigint() -> Iterator[list[bool]]:
    """Hold Ctrl-C until the block ends (keeps the basis consistent during a restart)."""
    hit = [False]
    if threading.current_thread() is not threading.main_thread():
        yield hit
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):  # pragma: no cover - needs a real signal
        hit[0] = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield hit
    finally:
        signal.signal(signal.SIGINT, previous)
    if hit[0]:  # pragma: no cover - needs a real signal
        raise KeyboardInterrupt


def make_progress(total: int, progress: bool | None, desc: str) -> Any:
    """A tqdm bar over matvecs, or a no-op when ``progress`` is false or stderr is not a terminal.

    Example:
        >>> make_progress(10, False, "eigsh").disable
        True
    """
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else bool(progress)
    return tqdm(total=total, desc=desc, unit="matvec", disable=not show, leave=False, dynamic_ncols=True)


@dataclass(frozen=True)
class EigshResult:
    """Eigenpairs with their certificates.

    Attributes:
        eigenvalues: ``[k]`` (descending for ``LA``/``BE``, ascending for ``SA``, by ``|λ|`` for ``LM``).
        eigenvectors: ``[D, k]`` unit columns.
        residuals: ``‖A v − λ v‖`` per pair ``[k]``: measured (``residual_kind == "true"``), a
            bound from the Lanczos estimate plus the measured relation defect (``"verified"``),
            or the Lanczos estimate alone (``"ritz"``, after an interruption or when asked).
        converged: ``residuals ≤ tol · anorm`` ``[k]``.
        anorm: the ``‖A‖`` estimate (largest ``|θ|`` seen) the tolerance is relative to.
        tol: relative residual tolerance.
        which: the selection rule.
        num_matvecs: operator-vector products spent, including the final certificate.
        num_restarts: thick restarts performed.
        basis_nbytes: memory of the Krylov basis in its storage (``(ncv + 1) · D · itemsize``).
        wall_time: seconds.
        status: ``"converged"``, ``"max_matvecs"``, ``"interrupted"`` or ``"unverified"``.
        message: what happened and what to do about it.
        residual_kind: ``"true"``, ``"verified"`` or ``"ritz"`` (see ``residuals``).
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    residuals: Tensor
    converged: Tensor
    anorm: float
    tol: float
    which: str
    num_matvecs: int
    num_restarts: int
    basis_nbytes: int
    wall_time: float
    status: str
    message: str
    residual_kind: str = "true"

    @property
    def num_converged(self) -> int:
        """How many returned pairs are certified."""
        return int(self.converged.sum())

    @property
    def partial(self) -> bool:
        """Whether some requested pair is missing its certificate."""
        return self.status != "converged"

    _META = ("anorm", "tol", "which", "num_matvecs", "num_restarts", "basis_nbytes", "wall_time", "status")

    def save(self, path: str | os.PathLike) -> None:
        """Write to a safetensors file atomically."""
        tensors = {k: getattr(self, k) for k in ("eigenvalues", "eigenvectors", "residuals", "converged")}
        meta = {k: getattr(self, k) for k in (*self._META, "message", "residual_kind")}
        save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> EigshResult:
        """Read a file written by :meth:`save` (tensors on the CPU)."""
        t, meta = load_tensors(path)
        return cls(**t, **meta)


def _keep_count(k: int, n: int, nconv: int) -> int:
    """Ritz vectors kept at a restart (ARPACK's rule: ``k + min(nconv, (n − k)/2)``)."""
    return max(1, min(n - 1, k + min(nconv, (n - k) // 2)))


def eigsh(
    A: Any,
    k: int = 6,
    which: str = "LA",
    *,
    tol: float | None = None,
    num_matvecs: int | None = None,
    ncv: int | None = None,
    v0: Tensor | None = None,
    deflate: Tensor | None = None,
    seed: SeedLike = 0,
    storage: str | StorageFactory = "device",
    residuals: str = "true",
    progress: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    work_dtype: torch.dtype | None = None,
) -> EigshResult:
    """``k`` extreme eigenpairs of a symmetric operator by thick-restart Lanczos.

    Args:
        A: symmetric operator (``@``, ``shape``, ``dtype``, ``device``), ``D x D``.
        k: number of eigenpairs.
        which: ``"LA"`` largest, ``"SA"`` smallest, ``"LM"`` largest magnitude, ``"BE"`` both ends.
        tol: a pair is converged when ``‖Av − λv‖ ≤ tol · ‖A‖`` (default ``sqrt(eps)``).
            The eigenvalue error is at most the residual, and about ``residual²/gap``.
        num_matvecs: product budget (default ``max(1000, 50 · ncv)``).
        ncv: largest basis size (default ``max(2k + 1, k + 32)``, at most ``D``); memory
            ``(ncv + 1) · D`` numbers.
        v0: start vector ``[D]`` (default Gaussian from ``seed``).
        deflate: ``[D, p]`` known eigenvectors; the search runs in their orthogonal complement.
        seed: seed or generator for the start vector and breakdown restarts.
        storage: basis storage (``"device"``, ``"host"``, ``"disk"`` or a factory).
        residuals: ``"true"`` (certify with one final ``[D, k]`` block product),
            ``"verified"`` (Lanczos estimates plus the relation defect measured with 2
            products) or ``"ritz"`` (the Lanczos estimates ``β|s_m|``; no extra products).
        progress: show a progress bar (default: only on a terminal).
        checkpoint: a file where the state is saved (atomically) at every thick restart: the
            kept basis, the projected matrix, the counters and the random-generator state. A
            killed run called again with the same file continues from the last restart and
            returns what an uninterrupted run returns; products already done are not redone.
        work_dtype: dtype of the basis, the orthogonalisation and the returned vectors
            (default: the operator's). ``torch.float64`` on a float32 operator gives the
            accuracy of the operator's rounding rather than of float32 Gram–Schmidt (as
            ARPACK through SciPy does); the basis memory doubles. The default ``tol`` still
            follows the operator's dtype.

    Returns:
        An :class:`EigshResult`; on Ctrl-C the pairs found so far, ``status="interrupted"``.

    Example:
        >>> import torch
        >>> from curvscope.operators import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64)))
        >>> res = eigsh(A, k=3, which="LA", tol=1e-10)
        >>> res.status, [round(x, 10) for x in res.eigenvalues.tolist()]
        ('converged', [100.0, 99.0, 98.0])
        >>> bool((res.residuals <= 1e-10 * res.anorm).all())
        True
    """
    t0 = time.perf_counter()
    _, op_dtype, _ = check_operator(A)
    A = promote(A, work_dtype)
    D, dtype, device = check_operator(A)
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    if residuals not in ("true", "verified", "ritz"):
        raise ValueError(f"residuals must be 'true', 'verified' or 'ritz', got {residuals!r}")
    Qd = None
    if deflate is not None:
        if deflate.ndim != 2 or deflate.shape[0] != D:
            raise ValueError(f"deflate must be [{D}, p] eigenvectors, got {tuple(deflate.shape)}")
        Qd = torch.linalg.qr(deflate.to(dtype=dtype, device=device)).Q
    n_eff = D - (0 if Qd is None else Qd.shape[1])
    if not 1 <= k <= n_eff:
        raise ValueError(f"k must be between 1 and {n_eff} (D minus deflated vectors), got {k}")
    ncv = min(n_eff, max(2 * k + 1, k + 32)) if ncv is None else min(int(ncv), n_eff)
    if ncv <= k and ncv < n_eff:
        raise ValueError(f"ncv={ncv} must exceed k={k} (ncv = 2k + 1 is a good choice)")
    budget = max(1000, 50 * ncv) if num_matvecs is None else int(num_matvecs)
    tol = default_tol(op_dtype) if tol is None else float(tol)
    btol = default_breakdown_tol(dtype)
    gen = make_generator(seed)

    q = gaussian(D, 1, gen, dtype, device) if v0 is None else v0.reshape(D, 1).to(dtype=dtype, device=device)
    if Qd is not None:
        q = q - Qd @ (Qd.T @ q)
    if float(q.norm()) == 0:
        raise ValueError("the start vector is zero (or inside the deflated space): pass another v0 or seed")
    if storage in ("device", "host"):  # memory guard: refuse before allocating a basis that cannot fit
        where = device if storage == "device" else torch.device("cpu")
        check_budget(vectors_bytes(D, ncv + 1, dtype), f"the eigsh basis ({ncv + 1} vectors of D={D}, {dtype})",
                     ["storage='disk'", "storage='host'" if where.type == "cuda" else "a smaller k or ncv"],
                     where)  # fmt: skip
    store = make_storage(storage, D, ncv + 1, 1, dtype, device)
    H = torch.zeros(ncv, ncv, dtype=torch.float64)
    n, beta_last, matvecs, restarts, anorm, scale = 0, 0.0, 0, 0, 0.0, 0.0
    exhausted, interrupted = False, False
    theta = S = est = None
    check_every, last_check = max(1, ncv // 10), 0
    config = {"D": D, "k": k, "which": which, "ncv": ncv, "tol": tol, "dtype": jsonable(dtype),
              "deflate": 0 if Qd is None else Qd.shape[1]}  # fmt: skip
    state = load_state(checkpoint, config, gen)
    if state is None:
        store.append(q / q.norm())
    else:  # continue from the last thick restart: same basis, same counters, same random stream
        tensors, values = state
        for j in range(tensors["basis"].shape[1]):
            store.append(tensors["basis"][:, j : j + 1].to(dtype=dtype, device=device))
        n = int(values["n"])
        H[:n, :n] = tensors["H"]
        beta_last, matvecs, restarts = float(values["beta_last"]), int(values["matvecs"]), int(values["restarts"])
        anorm, scale, last_check = float(values["anorm"]), float(values["scale"]), int(values["last_check"])
    bar = make_progress(budget, progress, f"eigsh {which} k={k}")
    bar.update(matvecs)  # a resumed run starts at the products already done

    def rayleigh_ritz():
        th, Sv = torch.linalg.eigh(H[:n, :n])
        return th, Sv, (beta_last * Sv[-1]).abs()

    try:
        while True:
            while n < ncv and matvecs < budget and not exhausted:
                w = A @ store.column(n)
                matvecs += 1
                scale = max(scale, float(w.norm()))
                h, w, b = orthogonalize(store, w, n + 1, Qd)
                hv = h[:, 0].to("cpu", torch.float64)
                H[: n + 1, n] = hv
                H[n, : n + 1] = hv
                b = float(b[0])
                if b <= btol * scale:  # invariant subspace: continue with a fresh direction
                    R = gaussian(D, 1, gen, dtype, device)
                    r0 = float(R.norm())
                    _, R, rn = orthogonalize(store, R, n + 1, Qd)
                    exhausted = n + 1 >= n_eff or float(rn[0]) <= btol * r0
                    qn, b = (torch.zeros_like(R) if exhausted else R / rn), 0.0
                else:
                    qn = w / b
                store.append(qn)
                n, beta_last = n + 1, b
                bar.update(1)
                if n > k and n < ncv and (n - last_check) >= check_every:  # converged before the basis is full?
                    last_check = n
                    th, _, es = rayleigh_ritz()
                    anorm = max(anorm, float(th.abs().max()))
                    worst = float(es[priority(th, which)[:k]].max()) / max(anorm, 1e-300)
                    bar.set_postfix(worst_residual=f"{worst:.1e}", restarts=restarts)
                    if worst <= tol:
                        break
            theta, S, est = rayleigh_ritz()
            anorm = max(anorm, float(theta.abs().max()))
            order = priority(theta, which)
            want = order[:k]
            ok = est[want] <= tol * anorm
            bar.set_postfix(worst_residual=f"{float(est[want].max()) / max(anorm, 1e-300):.1e}", restarts=restarts)
            if bool(ok.all()) or exhausted or n >= n_eff or matvecs >= budget:
                break
            keep = _keep_count(k, n, int(ok.sum()))
            Y = S[:, order[:keep]]
            with _defer_sigint():
                store.rotate(Y.to(dtype=dtype, device=device))
                store.copy_column(n, keep)
                store.truncate(keep + 1)
                H.zero_()
                H[:keep, :keep] = torch.diag(theta[order[:keep]])
                n, restarts, last_check = keep, restarts + 1, keep
                if checkpoint is not None:
                    basis = torch.cat([store.column(j) for j in range(n + 1)], dim=1)
                    values = {"n": n, "beta_last": beta_last, "matvecs": matvecs, "restarts": restarts,
                              "anorm": anorm, "scale": scale, "last_check": last_check}  # fmt: skip
                    save_state(checkpoint, config, gen, {"basis": basis, "H": H[:n, :n].clone()}, values)
    except KeyboardInterrupt:
        interrupted = True
        store.truncate(n + 1)
        if n > 0:
            theta, S, est = rayleigh_ritz()
            anorm = max(anorm, float(theta.abs().max()))
    finally:
        bar.close()

    if n == 0:
        store.close()
        empty = torch.zeros(0, dtype=torch.float64)
        return EigshResult(
            empty, torch.zeros(D, 0, dtype=dtype, device=device), empty, empty.bool(), anorm, tol, which,
            matvecs, restarts, store.nbytes, time.perf_counter() - t0, "interrupted",
            "interrupted before the first product finished; nothing to report", "ritz",
        )  # fmt: skip
    want = priority(theta, which)[: min(k, n)]
    V = store.combine(S[:, want].to(dtype=dtype, device=device), n)
    lam = theta[want]
    kind = "ritz" if interrupted else residuals
    res = est[want].clone()
    try:
        if kind == "true":
            AV = A @ V
            matvecs += V.shape[1]
            res = (AV - V * lam.to(dtype=dtype, device=device)).norm(dim=0).to("cpu", torch.float64)
        elif kind == "verified":
            C = torch.randn(n, 2, generator=gen, dtype=torch.float64)
            C = C / C.norm(dim=0)
            AZ = A @ store.combine(C.to(dtype=dtype, device=device), n)
            matvecs += 2
            pred = store.combine((H[:n, :n] @ C).to(dtype=dtype, device=device), n)
            pred = pred + store.column(n) * (beta_last * C[-1]).to(dtype=dtype, device=device)
            defect = float((AZ - pred).norm(dim=0).max())
            res = res + math.sqrt(n) * defect
    except KeyboardInterrupt:
        interrupted, kind = True, "ritz"
    conv = res <= tol * anorm
    nbytes = store.nbytes
    store.close()
    perm = _display_order(lam, which)
    lam, V, res, conv = lam[perm], V[:, perm], res[perm], conv[perm]

    nconv = int(conv.sum())
    if interrupted:
        status = "interrupted"
        message = (
            f"interrupted after {matvecs} products: {nconv} of {k} pairs converged (Lanczos residual "
            f"estimates, not re-measured); call again with v0=result.eigenvectors[:, 0] to continue"
        )
    elif nconv == k:
        status, message = "converged", f"{k} pairs with ‖Av − λv‖ ≤ {tol:.1e}·‖A‖ in {matvecs} products"
    elif bool((est[want] <= tol * anorm).all()):
        status = "unverified"
        message = (
            f"the Lanczos estimates converged but {k - nconv} true residuals exceed tol·‖A‖: the operator "
            f"may not be symmetric or deterministic, or tol={tol:.1e} is below its round-off; raise tol"
        )
    else:
        status = "max_matvecs"
        message = (
            f"budget of {budget} products spent with {nconv} of {k} pairs converged: raise num_matvecs, "
            f"or ncv (now {ncv}) to restart less often"
        )
    if exhausted or n >= n_eff:
        message += f" (the Krylov space spans the whole {n_eff}-dimensional search space)"
    return EigshResult(
        eigenvalues=lam,
        eigenvectors=V,
        residuals=res,
        converged=conv,
        anorm=anorm,
        tol=tol,
        which=which,
        num_matvecs=matvecs,
        num_restarts=restarts,
        basis_nbytes=nbytes,
        wall_time=time.perf_counter() - t0,
        status=status,
        message=message,
        residual_kind=kind,
    )
