"""Sketched symmetric eigendecomposition with a-posteriori error estimates, in RAM or out of core.

For a symmetric ``A`` (``D x D``, known by products) and a budget of ``n`` products, return
``k`` approximate eigenpairs ``A ≈ Â = V diag(λ) Vᵀ`` with residuals and error estimates.

Methods (``method=``):

- ``"block_krylov"`` (``"auto"``): randomized block Krylov with Rayleigh–Ritz (Musco & Musco
  2015; Tropp & Webber 2023, §11). ``m = n / b`` block products build an orthonormal basis
  ``Q`` of ``span[Ω, AΩ, …, A^{m-1}Ω]`` by block Gram–Schmidt twice (BCGS2, Barlow &
  Smoktunowicz 2013), with ``A Q = Q T + Q_m R_m E_mᵀ``; the Ritz pairs of ``T = QᵀAQ``
  are the most accurate a product budget can buy, and every residual
  ``‖A v − λ v‖ = ‖R_m s_last‖`` is free. Sequential in ``m``; resumable step by step.
- ``"nystrom"``: PSD operators (G, the gradient moment). ``Y = AΩ``,
  ``Â = Y (ΩᵀY)⁺ Yᵀ`` with the stabilising shift of Tropp, Yurtsever, Udell & Cevher
  (2017, Alg. 3); the result is PSD. ``power_iters=q`` sketches ``A^{q+1}``'s range first.
- ``"core"``: single pass, any symmetric operator (Tropp, Yurtsever, Udell & Cevher 2019;
  Fernandez, Schneider, Mahsereci & Hennig 2025): ``Y = AΩ`` (``s`` columns),
  ``Q = orth(Y[:, :s/2])``, core ``C = (ΨQ)⁺ (ΨY) (QᵀΩ)⁺`` with an independent ``Ψ``
  applied after the products (no extra product), ``Â = Q C Qᵀ``.
- ``"subspace"``: randomized subspace iteration with Rayleigh–Ritz (Halko, Martinsson &
  Tropp 2011, Alg. 4.4): ``Q = orth(A^q Ω)``, ``T = QᵀAQ``; ``(q+1)·s`` products.

Test vectors are Gaussian or Rademacher, drawn tile by tile (``8192 × 8``) from
``(seed, stream, tile)``: any rows/columns of ``Ω`` are regenerated, never stored, and
results do not depend on the block size or the memory budget.

A-posteriori error (all methods): ``p`` extra Gaussian probes ``ωᵢ`` give
``‖A − Â‖_F² ≈ (1/p) Σ ‖(A − Â)ωᵢ‖²``, with the upper bound valid with probability
``≥ 1 − δ`` from ``P(est ≤ (1−ε)‖E‖_F²) ≤ (e^ε(1−ε))^{p/2}`` (Tropp et al. 2019, §6.4), and
``‖A − Â‖₂ ≤ δ^{-1/p} √(2/π) maxᵢ ‖(A − Â)ωᵢ‖`` with probability ``≥ 1 − δ`` (Halko et al.
2011, Lemma 4.1). By Weyl, every eigenvalue error of ``Â`` is below the ``‖·‖₂`` bound;
by Bauer–Fike, an eigenvalue of ``A`` lies within each pair's residual of its ``λ``.

With ``store=path`` every block of products is written atomically to a
:class:`~curvscope.linalg.blockstore.BlockStore`: a killed run resumes without recomputing
a finished block, several processes may compute ranges of blocks of a single-pass sketch
(:func:`sketch_measurements`) into one store, and with a ``memory_budget`` smaller than the
sketch the work is streamed from disk (eigenvectors then come back as a
:class:`~curvscope.linalg.blockstore.DiskMatrix`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from curvscope.io import load_tensors, save_tensors
from curvscope.linalg import blockstore as bs
from curvscope.linalg.sketch_recovery import (
    METHODS,
    SORTS,
    TEST_VECTORS,
    TestMatrix,
    _measure,
    _omega,
    _Plan,
    _Products,
    recover,
)

__all__ = ["SketchResult", "TestMatrix", "sketch_measurements", "sketched_eigh", "tail_factor"]


# ------------------------------------------------------------------------------------ result
@dataclass(frozen=True)
class SketchResult:
    """Approximate eigenpairs ``A ≈ V diag(λ) Vᵀ`` with their certificates.

    Attributes:
        eigenvalues: ``[k]`` float64, sorted by ``|λ|`` or by value (descending).
        eigenvectors: ``[D, k]`` orthonormal columns (a :class:`DiskMatrix` when out of core).
        residuals: ``[k]`` float64 ``‖A vᵢ − λᵢ vᵢ‖`` (NaN for pairs not checked).
        error_fro: estimate of ``‖A − Â‖_F``; ``error_fro_bound``, ``error_2_bound``: upper
            bounds on ``‖A − Â‖_F`` and ``‖A − Â‖₂`` holding with probability ``≥ 1 − confidence``.
        norm_fro: estimate of ``‖A‖_F`` from the same probes (relative errors).
        num_matvecs: products spent in total; ``matvecs`` splits them by purpose.
        wall_time: seconds; status: ``"ok"``, ``"rank_deficient"`` or ``"not_psd"``; message: what to do.
        method, config: what was run.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor | bs.DiskMatrix
    residuals: Tensor
    error_fro: float
    error_fro_bound: float
    error_2_bound: float
    norm_fro: float
    num_matvecs: int
    matvecs: dict[str, int]
    wall_time: float
    status: str
    message: str
    method: str
    config: dict = field(default_factory=dict)

    def num_certified(self, rtol: float = 1e-2) -> int:
        """Leading pairs whose residual is ``≤ rtol·|λ|`` (an eigenvalue of ``A`` lies that close)."""
        ok = [*(self.residuals <= rtol * self.eigenvalues.abs()).tolist(), False]
        return ok.index(False)

    def save(self, path: str) -> None:
        """Save to one safetensors file (an out-of-core eigenvector file is referenced by path)."""
        tensors = {"eigenvalues": self.eigenvalues, "residuals": self.residuals}
        meta = {
            f: getattr(self, f)
            for f in self.__dataclass_fields__
            if f not in ("eigenvalues", "eigenvectors", "residuals")
        }
        if isinstance(self.eigenvectors, bs.DiskMatrix):
            meta["eigenvectors_path"] = str(self.eigenvectors.path.resolve())
        else:
            tensors["eigenvectors"] = self.eigenvectors
        save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str) -> SketchResult:
        """Load a result written by :meth:`save`."""
        tensors, meta = load_tensors(path)
        vec = tensors.get("eigenvectors")
        vec = bs.DiskMatrix(meta.pop("eigenvectors_path")) if vec is None else vec
        return cls(eigenvalues=tensors["eigenvalues"], eigenvectors=vec, residuals=tensors["residuals"], **meta)


def _plan(
    A: Any,
    k: int,
    method: str,
    num_matvecs: int | None,
    oversampling: int,
    power_iters: int | None,
    block_size: int | None,
    test_vectors: str,
    seed: int,
    sort: str,
    memory_budget: int | None,
) -> _Plan:
    for attr in ("shape", "dtype", "device", "__matmul__"):
        if not hasattr(A, attr):
            raise TypeError(f"A must be a linear operator with `@`, shape, dtype and device; it has no {attr!r}")
    D = int(A.shape[0])
    if len(A.shape) != 2 or A.shape[1] != D:
        raise ValueError(f"A must be square, got shape {tuple(A.shape)}")
    if not 1 <= k <= D:
        raise ValueError(f"k={k} must lie in [1, D={D}]")
    choices = (("method", method, METHODS), ("sort", sort, SORTS), ("test_vectors", test_vectors, TEST_VECTORS))
    for name, value, valid in choices:
        if value not in valid:
            raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    method = "block_krylov" if method == "auto" else method
    if oversampling < 0:
        raise ValueError(f"oversampling must be >= 0, got {oversampling}")
    p = oversampling
    if method == "block_krylov":
        if power_iters not in (None, 0):
            raise ValueError("block_krylov has no power iterations: its depth is num_matvecs // block_size")
        n = min(D, num_matvecs if num_matvecs is not None else 2 * (k + p))
        b = block_size or max(1, min(32, n // 64))
        b = min(b, n)
        s, passes = (n // b) * b, 1
        need = k
    elif method == "core":
        if power_iters not in (None, 0):
            raise ValueError(
                "method='core' is single-pass; use method='subspace' or 'block_krylov' for power iterations"
            )
        s, passes, need = (num_matvecs if num_matvecs is not None else 2 * (k + p)), 1, 2 * k
    else:
        q = (2 if method == "subspace" else 0) if power_iters is None else int(power_iters)
        if method == "subspace" and q < 1:
            raise ValueError("method='subspace' needs power_iters >= 1 (q=1 is the two-pass HMT sketch)")
        passes = q + 1
        s = num_matvecs // passes if num_matvecs is not None else k + p
        need = k
    if s < need:
        raise ValueError(
            f"num_matvecs={num_matvecs} gives {s} measurements per pass for method={method!r}, fewer than the "
            f"{need} it needs for k={k}: raise num_matvecs to at least {need * passes} (better 2x that)."
        )
    if s > D:
        raise ValueError(f"{s} measurements per pass exceed D={D}: use dense eigh (A.to_dense()) for so small an A")
    per_column = _bytes_per_column(method, D, A.dtype)
    fit = s if memory_budget is None else max(1, memory_budget // (2 * per_column))
    if method != "block_krylov":
        b = block_size or min(s, 64, fit)
    elif block_size is None and b > fit:  # a smaller block for the budget; depth grows
        b = fit
        s = (n // b) * b
    if memory_budget is not None and b * per_column > memory_budget:
        raise MemoryError(
            f"memory_budget={memory_budget / 2**20:.2f} MiB cannot hold one product block of {b} vectors of "
            f"length {D} ({b * per_column / 2**20:.2f} MiB): pass a smaller block_size or a larger budget"
        )
    return _Plan(method, D, k, s, passes, int(b), test_vectors, int(seed), sort, A.dtype, torch.device(A.device))


def _bytes_per_column(method: str, D: int, dtype: torch.dtype) -> int:
    """Working bytes per column of a product block.

    A test block drawn in float64, cast, and its product; block Krylov holds about 8 blocks at
    once (the product, two Gram–Schmidt passes, QR factors).
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    return D * (8 + (8 if method == "block_krylov" else 3) * itemsize)


def sketch_measurements(A: Any, k: int, *, store: str, blocks: range | None = None, method: str = "core",
                        num_matvecs: int | None = None, oversampling: int = 10, block_size: int | None = None,
                        test_vectors: str = "gaussian", seed: int = 0, progress: bool = False) -> int:  # fmt: skip
    """Compute a range of measurement blocks ``Yⱼ = A Ωⱼ`` of a single-pass sketch into ``store``.

    Several processes (or machines sharing the directory, or their own directories merged with
    :meth:`BlockStore.merge`) each call this with their own ``blocks``; a final
    :func:`sketched_eigh` with the same arguments and ``store`` finds all blocks and only
    recovers. Returns the number of products spent (finished blocks are never recomputed).

    Example:
        >>> import tempfile, torch
        >>> from curvscope.operators import DenseOperator
        >>> A = DenseOperator(torch.diag(torch.linspace(1, 2, 40, dtype=torch.float64)))
        >>> d = tempfile.mkdtemp()
        >>> sketch_measurements(A, 5, store=d, blocks=range(0, 1), num_matvecs=20, block_size=10)
        10
        >>> sketch_measurements(A, 5, store=d, blocks=range(0, 2), num_matvecs=20, block_size=10)
        10
    """
    if method not in ("core", "nystrom"):
        raise ValueError(
            f"method={method!r} has passes that depend on each other; only 'core' and 'nystrom' "
            f"(power_iters=0) measurements can be split over processes"
        )
    plan = _plan(A, k, method, num_matvecs, oversampling, None, block_size, test_vectors, seed, "magnitude", None)
    store_ = bs.BlockStore(store, plan.dim, plan.dtype, plan.spec())
    mv = _Products(A, progress, plan.s)
    _measure(mv, _omega(plan), plan, store_, "y0", only=blocks)
    return mv.counts["sketch"]


# ------------------------------------------------------------------------- error estimation
def _columns(V: Tensor | bs.DiskMatrix, a: int, b: int, budget: int | None) -> Tensor:
    if isinstance(V, Tensor):
        return V[:, a:b]
    rows = max(1, (budget or bs.DEFAULT_WORKING_BYTES) // (2 * V.shape[1] * bs.bytes_per_entry(V.dtype)))
    return torch.cat([c[:, a:b] for _, c in V.iter_rows(rows)])


def _residuals(mv, lam: Tensor, V, count: int, plan: _Plan, budget: int | None) -> Tensor:
    res = torch.full((len(lam),), float("nan"), dtype=torch.float64)
    for a in range(0, min(count, len(lam)), plan.b):
        b = min(count, len(lam), a + plan.b)
        Vb = _columns(V, a, b, budget).to(plan.device)
        R = (mv(Vb, "residuals") - Vb * lam[a:b].to(Vb.dtype).to(plan.device)).double()
        res[a:b] = R.norm(dim=0).cpu()
    return res


def tail_factor(num_probes: int, confidence: float) -> float:
    """``1/(1−ε)`` with ``(e^ε (1−ε))^{p/2} = δ``: ``‖E‖_F² ≤ est · factor`` w.p. ``≥ 1 − δ`` (Tropp et al. 2019, §6.4).

    Example:
        >>> round(tail_factor(30, 1e-3), 2)
        3.13
    """
    target = math.log(confidence) / (num_probes / 2)
    lo, hi = 0.0, 1.0 - 1e-15
    for _ in range(200):  # ε + log(1−ε) decreases from 0 to −∞ on [0, 1)
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid + math.log1p(-mid) > target else (lo, mid)
    return 1.0 / (1.0 - hi)


def _error_estimates(mv, lam: Tensor, V, plan: _Plan, p: int, delta: float, budget: int | None) -> dict:
    if p == 0:
        nan = float("nan")
        return {"error_fro": nan, "error_fro_bound": nan, "error_2_bound": nan, "norm_fro": nan}
    Om = TestMatrix("gaussian", plan.dim, p, plan.seed, "error", plan.dtype, plan.b)
    e2, a2 = [], []
    for j in range(len(Om)):  # probe blocks of the product block size: memory as for the sketch
        X = Om.block(j).to(plan.device)
        Y = mv(X, "error_probes")
        if isinstance(V, bs.DiskMatrix):
            low = V.matmul((lam[:, None] * V.rmatmul(X, budget)).to(plan.dtype), budget).to(plan.device)
        else:
            low = V @ (lam[:, None] * (V.T @ X).double().cpu()).to(plan.dtype).to(plan.device)
        e2.append(((Y - low) ** 2).sum(0, dtype=torch.float64).cpu())  # no float64 copy of the block
        a2.append((Y**2).sum(0, dtype=torch.float64).cpu())
    e2t = torch.cat(e2)
    est = e2t.mean().sqrt().item()
    bound_fro = est * math.sqrt(tail_factor(p, delta))
    bound_2 = min(bound_fro, delta ** (-1 / p) * math.sqrt(2 / math.pi) * e2t.max().sqrt().item())
    norm = torch.cat(a2).mean().sqrt().item()
    return {"error_fro": est, "error_fro_bound": bound_fro, "error_2_bound": bound_2, "norm_fro": norm}


# ------------------------------------------------------------------------------------- API
def sketched_eigh(
    A: Any,
    k: int,
    *,
    method: str = "auto",
    num_matvecs: int | None = None,
    oversampling: int = 10,
    power_iters: int | None = None,
    block_size: int | None = None,
    test_vectors: str = "gaussian",
    seed: int = 0,
    sort: str = "magnitude",
    error_probes: int = 30,
    confidence: float = 1e-3,
    residual_pairs: int | None = None,
    store: str | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> SketchResult:
    """``k`` approximate eigenpairs of a symmetric operator from ``num_matvecs`` products.

    Args:
        A: symmetric operator (``@`` on ``[D, K]``, ``shape``, ``dtype``, ``device``).
        k: number of eigenpairs returned (the top ``k`` by ``sort``).
        method: ``"auto"`` (= ``"block_krylov"``), ``"nystrom"`` (PSD ``A`` only), ``"core"``
            (single pass), ``"subspace"`` (power iterations + Rayleigh–Ritz). See the module doc.
        num_matvecs: products for the sketch (default: ``2(k + oversampling)``, Nyström and
            subspace ``(k + oversampling)·(power_iters + 1)``). Error probes and residual checks
            are extra and counted in the result.
        oversampling: extra measurements beyond ``k`` for the default budget.
        power_iters: Nyström: passes before the sketch (default 0); subspace: ``q ≥ 1`` (default 2).
        block_size: vectors per product ``A @ X`` (block Krylov: the block width ``b``, depth
            ``num_matvecs // b``; default ``min(64, n/8)``).
        test_vectors: ``"gaussian"`` or ``"rademacher"``.
        seed: seed of every random draw (same inputs + seed → same result).
        sort: ``"magnitude"`` (largest ``|λ|``, Fernandez et al.) or ``"value"`` (largest ``λ``).
        error_probes: extra Gaussian probes for the a-posteriori error (0 to skip).
        confidence: failure probability ``δ`` of the error bounds.
        residual_pairs: pairs whose residual is computed with extra products by ``nystrom`` and
            ``core`` (default ``min(k, 10)``); block Krylov and subspace give all residuals free.
        store: directory of a :class:`~curvscope.linalg.blockstore.BlockStore`: products are saved
            block by block, a killed run resumes there, and work beyond ``memory_budget`` streams from it.
        memory_budget: bytes of RAM the sketch may hold (the operator's own memory excluded);
            beyond it the basis/measurements stay on disk (needs ``store``) and the product block
            shrinks to fit. ``None``: no limit. The allocator may keep freed memory: see
            :mod:`curvscope.linalg.streamed` for measured peaks.
        progress: show a tqdm bar of products.

    Returns:
        :class:`SketchResult`.

    Example:
        >>> import torch
        >>> from curvscope.operators import DenseOperator
        >>> lam = torch.cat([torch.tensor([10.0, -5.0, 3.0]), 0.01 * torch.ones(37)]).double()
        >>> Q = torch.linalg.qr(torch.randn(40, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
        >>> A = DenseOperator(Q @ torch.diag(lam) @ Q.T)
        >>> res = sketched_eigh(A, 3, num_matvecs=12, block_size=3)
        >>> [round(x, 6) for x in res.eigenvalues.tolist()], res.num_matvecs, bool(res.residuals.max() < 1e-6)
        ([10.0, -5.0, 3.0], 42, True)
    """
    t0 = time.perf_counter()
    plan = _plan(
        A, k, method, num_matvecs, oversampling, power_iters, block_size, test_vectors, seed, sort, memory_budget
    )
    if error_probes < 0 or not 0 < confidence < 1:
        raise ValueError(f"need error_probes >= 0 and 0 < confidence < 1, got {error_probes}, {confidence}")
    itemsize = torch.empty((), dtype=plan.dtype).element_size()
    sketch_bytes = plan.dim * plan.s * itemsize + plan.b * _bytes_per_column(plan.method, plan.dim, plan.dtype)
    if memory_budget is not None and store is None and sketch_bytes > memory_budget:
        raise MemoryError(
            f"the sketch needs {sketch_bytes / 2**30:.2f} GiB (D={plan.dim} x {plan.s} measurements and one "
            f"product block), more than memory_budget={memory_budget / 2**30:.2f} GiB: pass store=<directory> "
            f"to keep it on disk"
        )
    store_ = bs.BlockStore(store, plan.dim, plan.dtype, plan.spec()) if store is not None else None
    ooc = store_ is not None and memory_budget is not None and plan.dim * k * itemsize > memory_budget // 2
    out_path = store_.path / f"eigenvectors_{k}_{sort}.safetensors" if ooc else None
    total = plan.s * plan.passes + error_probes
    mv = _Products(A, progress, total)
    with torch.no_grad():
        lam, V, res, status, message = recover(mv, plan, store_, memory_budget, out_path)
        lam = lam.double().cpu()
        if res is None:
            count = min(k, 10) if residual_pairs is None else residual_pairs
            res = _residuals(mv, lam, V, count, plan, memory_budget)
        errors = _error_estimates(mv, lam, V, plan, error_probes, confidence, memory_budget)
    if mv.bar is not None:
        mv.bar.close()
    if status == "ok" and len(lam) < k:
        status = "rank_deficient"
    if status == "rank_deficient":
        message += (
            f"the sketch has numerical rank {len(lam)} < k={k}: A has (numerically) lower rank; fewer pairs returned. "
        )
    config = {
        "k": k,
        "num_matvecs": plan.s * plan.passes,
        "block_size": plan.b,
        "passes": plan.passes,
        "test_vectors": plan.kind,
        "seed": plan.seed,
        "sort": sort,
        "error_probes": error_probes,
        "confidence": confidence,
        "store": None if store is None else str(store),
        "memory_budget": memory_budget,
    }
    return SketchResult(
        eigenvalues=lam,
        eigenvectors=V,
        residuals=res.double().cpu(),
        num_matvecs=sum(mv.counts.values()),
        matvecs=dict(mv.counts),
        wall_time=time.perf_counter() - t0,
        status=status,
        message=message.strip() or f"{len(lam)} eigenpairs from {plan.s * plan.passes} products",
        method=plan.method,
        config=config,
        **errors,
    )
