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

On a sharded operator (``A.space``, e.g. FSDP: :mod:`curvscope.distributed.fsdp`) every method
runs in RAM on each rank's rows; the eigenvectors come back sharded like the parameters and
the eigenvalues, residuals and error estimates are identical on every rank. Block Krylov's QR
is then Gram–Schmidt twice with projections summed over the ranks (Householder needs whole columns).
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from curvscope.common import SeedLike, Status, as_status, make_generator
from curvscope.io import load_tensors, save_tensors
from curvscope.linalg import blockstore as bs
from curvscope.linalg.density_runs import fingerprint_of
from curvscope.linalg.precision import WorkDtype, resolve_work_dtype
from curvscope.linalg.sketch_errors import error_estimates as _error_estimates
from curvscope.linalg.sketch_errors import residuals as _residuals
from curvscope.linalg.sketch_errors import tail_factor
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
from curvscope.linalg.space import space_of

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
        wall_time: seconds.
        status: a :class:`~curvscope.common.Status`: ``completed`` (the whole budget ran; the
            eigenpairs are certified by ``residuals`` and ``error_*`` beside them, not by a
            tolerance), ``rank_deficient`` (fewer than ``k`` directions) or ``not_psd`` (Nyström on
            an indefinite ``A``). message: what to do.
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
    status: Status
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
        meta["status"] = as_status("completed" if meta["status"] == "ok" else meta["status"])  # "ok": older files
        return cls(eigenvalues=tensors["eigenvalues"], eigenvectors=vec, residuals=tensors["residuals"], **meta)


def _validate(A: Any, k: int, method: str, sort: str, test_vectors: str, oversampling: int) -> int:
    """``D`` of a square operator, after checking ``k`` and the named options."""
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
    if oversampling < 0:
        raise ValueError(f"oversampling must be >= 0, got {oversampling}")
    return D


def _columns_per_pass(method: str, D: int, k: int, p: int, num_matvecs: int | None, power_iters: int | None,
                      block_size: int | None) -> tuple[int, int, int, int]:  # fmt: skip
    """``(n, passes, need, b)``: measurements per pass, passes, the least ``n`` for ``k``, block Krylov's width."""
    b = 0
    if method == "block_krylov":
        if power_iters not in (None, 0):
            raise ValueError("block_krylov has no power iterations: its depth is num_matvecs // block_size")
        n = min(D, num_matvecs if num_matvecs is not None else 2 * (k + p))
        b = min(block_size or max(1, min(32, n // 64)), n)
        return n, 1, k, b  # the caller rounds n down to whole blocks
    if method == "core":
        if power_iters not in (None, 0):
            raise ValueError(
                "method='core' is single-pass; use method='subspace' or 'block_krylov' for power iterations"
            )
        return (num_matvecs if num_matvecs is not None else 2 * (k + p)), 1, 2 * k, b
    q = (2 if method == "subspace" else 0) if power_iters is None else int(power_iters)
    if method == "subspace" and q < 1:
        raise ValueError("method='subspace' needs power_iters >= 1 (q=1 is the two-pass HMT sketch)")
    return (num_matvecs // (q + 1) if num_matvecs is not None else k + p), q + 1, k, b


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
    dtype: torch.dtype | None = None,
) -> _Plan:
    """What to run: columns per pass, passes, product block; ``dtype`` is the working dtype (default ``A.dtype``)."""
    D = _validate(A, k, method, sort, test_vectors, oversampling)
    method = "block_krylov" if method == "auto" else method
    dtype = A.dtype if dtype is None else dtype
    n, passes, need, b = _columns_per_pass(method, D, k, oversampling, num_matvecs, power_iters, block_size)
    s = (n // b) * b if method == "block_krylov" else n
    if s < need:
        raise ValueError(
            f"num_matvecs={num_matvecs} gives {s} measurements per pass for method={method!r}, fewer than the "
            f"{need} it needs for k={k}: raise num_matvecs to at least {need * passes} (better 2x that)."
        )
    if s > D:
        raise ValueError(f"{s} measurements per pass exceed D={D}: use dense eigh (A.to_dense()) for so small an A")
    per_column = _bytes_per_column(method, D, dtype)
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
    return _Plan(method, D, k, s, passes, int(b), test_vectors, int(seed), sort, dtype, torch.device(A.device),
                 space_of(A))  # fmt: skip


def _bytes_per_column(method: str, D: int, dtype: torch.dtype) -> int:
    """Working bytes per column of a product block.

    A test block drawn in float64, cast, and its product; block Krylov holds about 8 blocks at
    once (the product, two Gram–Schmidt passes, QR factors).
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    return D * (8 + (8 if method == "block_krylov" else 3) * itemsize)


def _int_seed(seed: SeedLike) -> int:
    """Tiles of the test matrices are keyed by an int: a generator gives one by a single draw."""
    if isinstance(seed, torch.Generator):
        return int(torch.randint(0, 2**62, (1,), generator=seed))
    return int(make_generator(seed).initial_seed())


def _work_dtype(A: Any, work_dtype: WorkDtype, columns: int, store: Any, memory_budget: int | None) -> torch.dtype:
    """The sketch's working dtype: ``"auto"`` is float64 when ``columns`` float64 vectors fit (a store always does)."""
    D, floor = int(A.shape[0]), (torch.float32 if torch.finfo(A.dtype).bits < 32 else A.dtype)
    if work_dtype == "auto" and store is None and memory_budget is not None and A.dtype != torch.float64:
        if D * columns * 8 > memory_budget:
            warnings.warn(
                f"sketched_eigh: a float64 sketch ({columns} vectors of D={D}) exceeds memory_budget; computing in "
                f"{floor}. Pass store=<directory> to keep float64 on disk.",
                stacklevel=3,
            )
            return floor
    where, space = "disk" if store is not None else "device", space_of(A)
    return resolve_work_dtype(work_dtype, A.dtype, space.local_dim, columns, where, A.device, "sketched_eigh",
                              space=space)  # fmt: skip


def _open_store(path: Any, plan: _Plan, A: Any) -> bs.BlockStore:
    """The block store of this plan, refusing one made for another operator (its fingerprint)."""
    return bs.BlockStore(path, plan.dim, plan.dtype, plan.spec(), fingerprint=fingerprint_of(A))


def sketch_measurements(A: Any, k: int, *, store: str, blocks: range | None = None, method: str = "core",
                        num_matvecs: int | None = None, oversampling: int = 10, block_size: int | None = None,
                        test_vectors: str = "gaussian", seed: SeedLike = 0, progress: bool | None = None,
                        work_dtype: WorkDtype = "auto") -> int:  # fmt: skip
    """Compute a range of measurement blocks ``Yⱼ = A Ωⱼ`` of a single-pass sketch into ``store``.

    Several processes (or machines sharing the directory, or their own directories merged with
    :meth:`BlockStore.merge`) each call this with their own ``blocks``; a final
    :func:`sketched_eigh` with the same arguments and ``store`` finds all blocks and only
    recovers. Returns the number of products spent (finished blocks are never recomputed).
    Pass an int ``seed`` here: every process must draw the same test matrix.

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
    _validate(A, k, method, "magnitude", test_vectors, oversampling)
    _refuse_sharded_out_of_core(A, store, None)
    wd = _work_dtype(A, work_dtype, num_matvecs or 2 * (k + oversampling), store, None)
    plan = _plan(A, k, method, num_matvecs, oversampling, None, block_size, test_vectors, _int_seed(seed),
                 "magnitude", None, wd)  # fmt: skip
    mv = _Products(A, progress, plan.s, plan.dtype)
    try:
        _measure(mv, _omega(plan), plan, _open_store(store, plan, A), "y0", only=blocks)
    finally:
        mv.bar.close()
    return mv.counts["sketch"]


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
    seed: SeedLike = 0,
    sort: str = "magnitude",
    error_probes: int = 30,
    confidence: float = 1e-3,
    residual_pairs: int | None = None,
    store: str | os.PathLike | None = None,
    memory_budget: int | None = None,
    progress: bool | None = None,
    work_dtype: WorkDtype = "auto",
    checkpoint: str | os.PathLike | None = None,
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
        seed: int or ``torch.Generator`` of every random draw (same inputs + seed → same result; a
            generator is advanced by one draw, which keys every test-matrix tile).
        sort: ``"magnitude"`` (largest ``|λ|``, Fernandez et al.) or ``"value"`` (largest ``λ``).
        error_probes: extra Gaussian probes for the a-posteriori error (0 to skip).
        confidence: failure probability ``δ`` of the error bounds.
        residual_pairs: pairs whose residual is computed with extra products by ``nystrom`` and
            ``core`` (default ``min(k, 10)``); block Krylov and subspace give all residuals free.
        store: directory of a :class:`~curvscope.linalg.blockstore.BlockStore`: products are saved
            block by block with the operator's fingerprint, a killed run resumes there (a store made
            for another operator raises ``StaleStateError``), and work beyond ``memory_budget``
            streams from it.
        memory_budget: bytes of RAM the sketch may hold (the operator's own memory excluded);
            beyond it the basis/measurements stay on disk (needs ``store``) and the product block
            shrinks to fit. ``None``: no limit. The allocator may keep freed memory: see
            :mod:`curvscope.linalg.streamed` for measured peaks.
        progress: show a progress bar of products (default ``None``: only on a terminal).
        work_dtype: dtype of test matrices, stored blocks, orthogonalisation and eigenvectors
            (``"auto"``: float64 when the sketch fits, always with a store; see
            :mod:`curvscope.linalg.precision`); products run in ``A.dtype``.
        checkpoint: the convention's name for ``store`` (pass one of them).

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
    store = _store_argument(store, checkpoint)
    _refuse_sharded_out_of_core(A, store, memory_budget)
    if error_probes < 0 or not 0 < confidence < 1:
        raise ValueError(f"need error_probes >= 0 and 0 < confidence < 1, got {error_probes}, {confidence}")
    _validate(A, k, method, sort, test_vectors, oversampling)
    wd = _work_dtype(A, work_dtype, num_matvecs or 2 * (k + oversampling), store, memory_budget)
    plan = _plan(A, k, method, num_matvecs, oversampling, power_iters, block_size, test_vectors, _int_seed(seed),
                 sort, memory_budget, wd)  # fmt: skip
    _check_fits(plan, memory_budget, store)
    store_ = _open_store(store, plan, A) if store is not None else None
    itemsize = torch.empty((), dtype=plan.dtype).element_size()
    ooc = store_ is not None and memory_budget is not None and plan.dim * k * itemsize > memory_budget // 2
    out_path = store_.path / f"eigenvectors_{k}_{sort}.safetensors" if ooc else None
    mv = _Products(A, progress, plan.s * plan.passes + error_probes, plan.dtype)
    try:
        with torch.no_grad():
            lam, V, res, status, message = recover(mv, plan, store_, memory_budget, out_path)
            lam = lam.double().cpu()
            if res is None:
                count = min(k, 10) if residual_pairs is None else residual_pairs
                res = _residuals(mv, lam, V, count, plan, memory_budget)
            errors = _error_estimates(mv, lam, V, plan, error_probes, confidence, memory_budget)
    finally:
        mv.bar.close()
    status, message = _final_status(status, message, len(lam), k, plan)
    return SketchResult(
        eigenvalues=lam,
        eigenvectors=V,
        residuals=res.double().cpu(),
        num_matvecs=sum(mv.counts.values()),
        matvecs=dict(mv.counts),
        wall_time=time.perf_counter() - t0,
        status=status,
        message=message,
        method=plan.method,
        config=_config(plan, sort, error_probes, confidence, store, memory_budget),
        **errors,
    )


def _refuse_sharded_out_of_core(A: Any, store: Any, memory_budget: int | None) -> None:
    """Sharded vectors run in RAM only: the block store holds whole columns, one writer per block."""
    if space_of(A).sharded and (store is not None or memory_budget is not None):
        raise ValueError(
            "sketched_eigh on a sharded operator (vectors split over ranks) runs in RAM only: drop store/checkpoint "
            "and memory_budget (each rank already holds 1/W of every vector; lower num_matvecs or block_size to fit)"
        )


def _store_argument(store: Any, checkpoint: Any) -> Any:
    if store is not None and checkpoint is not None and os.fspath(store) != os.fspath(checkpoint):
        raise ValueError(f"store={store!r} and checkpoint={checkpoint!r} name two places: pass one of them")
    return store if store is not None else checkpoint


def _check_fits(plan: _Plan, memory_budget: int | None, store: Any) -> None:
    itemsize = torch.empty((), dtype=plan.dtype).element_size()
    sketch_bytes = plan.dim * plan.s * itemsize + plan.b * _bytes_per_column(plan.method, plan.dim, plan.dtype)
    if memory_budget is not None and store is None and sketch_bytes > memory_budget:
        raise MemoryError(
            f"the sketch needs {sketch_bytes / 2**30:.2f} GiB (D={plan.dim} x {plan.s} measurements and one "
            f"product block), more than memory_budget={memory_budget / 2**30:.2f} GiB: pass store=<directory> "
            f"to keep it on disk"
        )


def _final_status(status: Status, message: str, found: int, k: int, plan: _Plan) -> tuple[Status, str]:
    if status == Status.COMPLETED and found < k:
        status = Status.RANK_DEFICIENT
    if status == Status.RANK_DEFICIENT:
        message += (
            f"the sketch has numerical rank {found} < k={k}: A has (numerically) lower rank; fewer pairs returned. "
        )
    return status, message.strip() or f"{found} eigenpairs from {plan.s * plan.passes} products"


def _config(plan: _Plan, sort: str, error_probes: int, confidence: float, store: Any, budget: int | None) -> dict:
    return {
        "k": plan.k,
        "num_matvecs": plan.s * plan.passes,
        "block_size": plan.b,
        "passes": plan.passes,
        "test_vectors": plan.kind,
        "seed": plan.seed,
        "sort": sort,
        "error_probes": error_probes,
        "confidence": confidence,
        "store": None if store is None else str(store),
        "memory_budget": budget,
        "work_dtype": str(plan.dtype),
    }
