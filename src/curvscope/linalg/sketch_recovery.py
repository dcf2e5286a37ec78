"""Recovery algorithms of :func:`curvscope.linalg.sketch.sketched_eigh` (block Krylov, Nyström, core, subspace).

Internal module: the maths, references and guarantees are documented in
:mod:`curvscope.linalg.sketch`. Every algorithm is a streamed pass structure over column
blocks (:mod:`curvscope.linalg.blockstore`), so the same code runs in RAM and out of core.

On an operator whose vectors are sharded over ranks (``A.space``, :mod:`curvscope.linalg.space`)
each rank holds its rows of every tall block (test matrices are regenerated at its coordinates,
so they are the rows of the single-process ones), and every small matrix formed from two tall
blocks (Gram matrices, projections, ``QᵀAQ``, residual norms) is a sum over rows, summed over the
ranks by ``plan.vectors.reduce``: every rank then holds the same small matrices and Ritz values.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from curvscope.common import Status, make_progress
from curvscope.linalg import blockstore as bs
from curvscope.linalg import streamed
from curvscope.linalg.products import check_product
from curvscope.linalg.sampling import make_generator, probes
from curvscope.linalg.space import LocalSpace

METHODS = ("auto", "block_krylov", "nystrom", "core", "subspace")
SORTS = ("magnitude", "value")
TEST_VECTORS = ("gaussian", "rademacher")
TILE_ROWS, TILE_COLS = 8192, 8


# ------------------------------------------------------------------------------- test matrix
class TestMatrix:
    """The random ``[D, s]`` test matrix of one stream, regenerated tile by tile (never stored).

    With ``index`` (this rank's global coordinates, sharded vectors) its rows are ``Ω[index]``:
    ``rows(a, b)`` and ``block(j)`` then count rows of ``index``, and only the tiles it touches are drawn.

    Example:
        >>> Om = TestMatrix("rademacher", 5, 3, seed=0, stream="omega", dtype=torch.float64, block_size=2)
        >>> Om.widths, bool(torch.equal(Om.rows(0, 5)[:, 2:], Om.block(1)))
        ([2, 1], True)
        >>> bool(torch.equal(Om.rows(1, 3), Om.rows(0, 5)[1:3])), Om.rows(0, 5).abs().unique().tolist()
        (True, [1.0])
    """

    __test__ = False  # not a pytest class

    def __init__(
        self,
        kind: str,
        dim: int,
        width: int,
        seed: int,
        stream: str,
        dtype: torch.dtype,
        block_size: int = 64,
        index: Tensor | None = None,
    ):
        self.kind, self.dim, self.width, self.seed, self.stream, self.dtype = kind, dim, width, seed, stream, dtype
        self.widths = [min(block_size, width - c) for c in range(0, width, block_size)]
        self._b = block_size
        self.index = None if index is None else index.to(device="cpu", dtype=torch.long)
        self.length = dim if index is None else len(self.index)  # rows this process holds

    def __len__(self) -> int:
        return len(self.widths)

    def _tile(self, t: int, g: int) -> Tensor:
        key = f"{self.seed}:{self.stream}:{t}:{g}".encode()
        gen = make_generator(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1)
        return probes(self.kind, min(TILE_ROWS, self.dim - t * TILE_ROWS), TILE_COLS, gen, torch.float64)

    def rows(self, start: int, stop: int, c0: int = 0, c1: int | None = None) -> Tensor:
        """``Ω[start:stop, c0:c1]`` (sharded: ``Ω[index[start:stop], c0:c1]``)."""
        c1 = self.width if c1 is None else c1
        if self.index is not None:
            return self._at(self.index[start:stop], c0, c1)
        out = torch.empty(stop - start, c1 - c0, dtype=torch.float64)
        for t in range(start // TILE_ROWS, (stop - 1) // TILE_ROWS + 1):
            r0 = t * TILE_ROWS
            a, b = max(start, r0), min(stop, r0 + TILE_ROWS)
            for g in range(c0 // TILE_COLS, (c1 - 1) // TILE_COLS + 1):
                g0 = g * TILE_COLS
                x, y = max(c0, g0), min(c1, g0 + TILE_COLS)
                out[a - start : b - start, x - c0 : y - c0] = self._tile(t, g)[a - r0 : b - r0, x - g0 : y - g0]
        return out.to(self.dtype)

    def _at(self, rows: Tensor, c0: int, c1: int) -> Tensor:
        """``Ω[rows, c0:c1]`` for arbitrary global rows, drawing each touched tile once."""
        out = torch.empty(len(rows), c1 - c0, dtype=torch.float64)
        tile_of = rows // TILE_ROWS
        order = torch.argsort(tile_of, stable=True)  # rows grouped by tile: one pass, not one scan per tile
        tiles, counts = torch.unique_consecutive(tile_of[order], return_counts=True)
        for t, pos in zip(tiles.tolist(), order.split(counts.tolist())):
            local = rows[pos] - t * TILE_ROWS
            for g in range(c0 // TILE_COLS, (c1 - 1) // TILE_COLS + 1):
                g0 = g * TILE_COLS
                x, y = max(c0, g0), min(c1, g0 + TILE_COLS)
                out[pos, x - c0 : y - c0] = self._tile(t, g)[local, x - g0 : y - g0]
        return out.to(self.dtype)

    def block(self, j: int) -> Tensor:
        """Column block ``j`` ``[D, bⱼ]`` (sharded: this rank's rows)."""
        return self.rows(0, self.length, j * self._b, j * self._b + self.widths[j])


# -------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class _Plan:
    method: str
    dim: int
    k: int
    s: int  # columns per pass (block Krylov: the whole budget n)
    passes: int
    b: int
    kind: str
    seed: int
    sort: str
    dtype: torch.dtype
    device: torch.device
    space: Any = None  # the operator's vector space (None: whole vectors)

    @property
    def vectors(self) -> LocalSpace:
        """The space tall blocks live in: its ``reduce``, ``colnorms`` and ``qr`` are plain torch on whole vectors."""
        return LocalSpace(self.dim) if self.space is None else self.space

    @property
    def local_dim(self) -> int:
        """Rows of every tall block this process holds (``dim`` unless sharded)."""
        return self.vectors.local_dim

    @property
    def index(self) -> Tensor | None:
        """This rank's global coordinates when the vectors are sharded (test matrices are drawn there)."""
        return self.vectors.index if self.vectors.sharded else None

    def spec(self) -> dict:
        """What the stored blocks depend on (extending ``num_matvecs`` later reuses them)."""
        spec = {"method": self.method, "block_size": self.b, "test_vectors": self.kind, "seed": self.seed}
        if self.passes > 1:
            spec.update(columns=self.s, passes=self.passes)
        return spec


class _Products:
    """``A @ X`` with a count per purpose and a progress bar; inputs and outputs in the working dtype.

    The product itself runs in the operator's dtype on its device; the sketch arithmetic in ``work_dtype``.
    """

    def __init__(self, A: Any, progress: bool | None, total: int, work_dtype: torch.dtype | None = None) -> None:
        self.A, self.counts = A, {"sketch": 0, "residuals": 0, "error_probes": 0}
        self.op_dtype, self.work_dtype = A.dtype, work_dtype or A.dtype
        self.bar = make_progress(total, progress, "sketched_eigh")

    def __call__(self, X: Tensor, purpose: str = "sketch") -> Tensor:
        Xd = X.to(device=self.A.device, dtype=self.op_dtype)
        Y = check_product(Xd, self.A @ Xd, "sketched_eigh")
        self.counts[purpose] += X.shape[1]
        self.bar.update(X.shape[1])
        return Y.to(self.work_dtype)


def _select(theta: Tensor, k: int, sort: str) -> Tensor:
    key = theta.abs() if sort == "magnitude" else theta
    return torch.argsort(key, descending=True, stable=True)[:k]


def _iter_rows(sources: list, dim: int, budget: int | None, out_cols: int = 0, fixed: int = 0) -> Iterator:
    per_row = sum(src.width * (8 + bs.bytes_per_entry(src.dtype)) for src in sources) + 8 * out_cols
    for s, e in bs.row_chunks(dim, per_row, budget, fixed):
        yield s, e, [src.rows(s, e).double().cpu() for src in sources]


def _output(chunks: Iterator[Tensor], plan: _Plan, width: int, path: Any) -> Tensor | bs.DiskMatrix:
    if path is None:  # filled chunk by chunk: one copy of the result in RAM
        out, start = torch.empty(plan.local_dim, width, dtype=plan.dtype, device=plan.device), 0
        for c in chunks:
            out[start : start + c.shape[0]] = c.to(plan.dtype)
            start += c.shape[0]
        return out
    bs.write_rows(path, (plan.local_dim, width), plan.dtype, (c.to(plan.dtype) for c in chunks))
    return bs.DiskMatrix(path)


# ---------------------------------------------------------------------- measurements (Y = AΩ)
def _measure(mv: _Products, Om: Any, plan: _Plan, store: bs.BlockStore | None, prefix: str, only=None):
    Y = bs.ColumnBlocks(plan.local_dim, plan.dtype, store)
    for j, name in enumerate(bs.block_names(prefix, len(Om))):
        if store is not None and store.has(name):
            Y.append(name, Om.widths[j])
            continue
        if only is not None and j not in only:
            continue
        Yj = mv(Om.block(j).to(plan.device))
        if store is not None:
            store.save(name, Yj.cpu())
            Y.append(name, Yj.shape[1])
        else:
            Y.append(Yj.cpu())
    return Y


def _materialize(Y: bs.ColumnBlocks, M: Tensor, plan: _Plan, store, prefix: str, budget) -> bs.ColumnBlocks:
    """``Y M`` as column blocks of width ``b`` (the orthonormal input of the next pass)."""
    widths = [min(plan.b, M.shape[1] - c) for c in range(0, M.shape[1], plan.b)]
    out = bs.ColumnBlocks(plan.local_dim, plan.dtype, store)
    names = bs.block_names(prefix, len(widths))
    if store is None:
        for part in streamed.apply_right(Y, M, memory_budget=budget).split(plan.b, dim=1):
            out.append(part)
        return out
    if not all(store.has(n) for n in names):
        streamed.apply_right(Y, M, out=[(store.file(n), w) for n, w in zip(names, widths)], memory_budget=budget)
    for n, w in zip(names, widths):
        out.append(n, w)
    return out


def _omega(plan: _Plan, width: int | None = None, stream: str = "omega") -> TestMatrix:
    width = plan.s if width is None else width
    return TestMatrix(plan.kind, plan.dim, width, plan.seed, stream, plan.dtype, plan.b, plan.index)


# ------------------------------------------------------------------------------- recoveries
def _nystrom(mv, plan: _Plan, store, budget, out_path):
    Om: Any = _omega(plan)
    Y = _measure(mv, Om, plan, store, "y0")
    for i in range(1, plan.passes):  # power iterations: Ω ← orth(A^i Ω)
        M = streamed.orthonormalize(Y, budget, reduce=plan.vectors.reduce)
        Om = _materialize(Y, M, plan, store, f"o{i}", budget)
        Y = _measure(mv, Om, plan, store, f"y{i}")
    s = Y.width
    G, Mo, P = (torch.zeros(s, s, dtype=torch.float64) for _ in range(3))
    for _, _, (y, o) in _iter_rows([Y, Om], plan.local_dim, budget, fixed=24 * s * s):
        G += y.T @ y
        Mo += o.T @ y
        P += o.T @ o
    G, Mo, P = (plan.vectors.reduce(X) for X in (G, Mo, P))
    eps = max(torch.finfo(plan.dtype).eps, torch.finfo(mv.op_dtype).eps)  # the products' round-off counts too
    nu = math.sqrt(plan.dim) * eps * math.sqrt(G.trace().item() / max(P.trace().item(), 1e-300))
    w, U = torch.linalg.eigh((Mo + Mo.T) / 2 + nu * P)
    status, message = Status.COMPLETED, ""
    if w[0] < -math.sqrt(eps) * w[-1].abs():
        status = Status.NOT_PSD
        message = (
            f"A is not positive semi-definite (ΩᵀAΩ has eigenvalue {w[0].item():.3g} vs max {w[-1].item():.3g}): "
            f"Nyström is invalid for it; use method='core' or 'block_krylov'. "
        )
    keep = w > 100 * eps * w[-1].clamp(min=0)
    L = U[:, keep] / w[keep].sqrt()
    Gnu = G + nu * (Mo + Mo.T) + nu**2 * P
    sig2, V2 = torch.linalg.eigh(L.T @ Gnu @ L)
    sig2, V2 = sig2.flip(0).clamp(min=0), V2.flip(1)
    lam = (sig2 - nu).clamp(min=0)
    r = int((sig2 > 100 * eps * sig2[0]).sum()) if len(sig2) else 0
    kk = min(plan.k, r)
    N = L @ V2[:, :kk] / sig2[:kk].sqrt()
    V = _output(
        (y @ N + nu * (o @ N) for _, _, (y, o) in _iter_rows([Y, Om], plan.local_dim, budget, kk)), plan, kk, out_path
    )
    return lam[:kk], V, None, status, message


def _core(mv, plan: _Plan, store, budget, out_path):
    Om, Psi = _omega(plan), _omega(plan, stream="psi")
    Y = _measure(mv, Om, plan, store, "y0")
    r = plan.s // 2
    Y1 = Y.head(r)
    M = streamed.orthonormalize(Y1, budget, reduce=plan.vectors.reduce)
    YtO, PsiY = torch.zeros(r, plan.s, dtype=torch.float64), torch.zeros(plan.s, plan.s, dtype=torch.float64)
    for _, _, (y, o, ps) in _iter_rows([Y, Om, Psi], plan.local_dim, budget, fixed=16 * plan.s**2):
        YtO += y[:, :r].T @ o
        PsiY += ps.T @ y
    YtO, PsiY = plan.vectors.reduce(YtO), plan.vectors.reduce(PsiY)
    PsiQ, QtO = PsiY[:, :r] @ M, M.T @ YtO
    C = torch.linalg.lstsq(PsiQ, PsiY, driver="gelsd").solution  # [r', s]
    C = torch.linalg.lstsq(QtO.T, C.T, driver="gelsd").solution.T  # [r', r']
    theta, S = torch.linalg.eigh((C + C.T) / 2)
    idx = _select(theta, plan.k, plan.sort)
    N = M @ S[:, idx]
    V = _output((y @ N for _, _, (y,) in _iter_rows([Y1], plan.local_dim, budget, len(idx))), plan, len(idx), out_path)
    status = Status.COMPLETED if M.shape[1] >= plan.k else Status.RANK_DEFICIENT
    return theta[idx], V, None, status, ""


def _ritz_from(Q, W, T, plan: _Plan, budget, out_path):
    """Ritz pairs of ``T = QᵀAQ`` with ``W = AQ``: vectors ``Q S`` and exact residuals ``‖W s − θ Q s‖``."""
    theta, S = torch.linalg.eigh((T + T.T) / 2)
    idx = _select(theta, plan.k, plan.sort)
    Ss, th = S[:, idx], theta[idx]
    res2 = torch.zeros(len(idx), dtype=torch.float64)

    def chunks():
        for _, _, (q, w) in _iter_rows([Q, W], plan.local_dim, budget, 2 * len(idx)):
            v = q @ Ss
            res2.add_(((w @ Ss - v * th) ** 2).sum(0))
            yield v

    V = _output(chunks(), plan, len(idx), out_path)
    return th, V, plan.vectors.reduce(res2).sqrt()


def _subspace(mv, plan: _Plan, store, budget, out_path):
    Om: Any = _omega(plan)
    for i in range(plan.passes):
        W = _measure(mv, Om, plan, store, f"w{i}")
        if i < plan.passes - 1:
            M = streamed.orthonormalize(W, budget, reduce=plan.vectors.reduce)
            Om = _materialize(W, M, plan, store, f"q{i + 1}", budget)
    T = torch.zeros(Om.width, Om.width, dtype=torch.float64)
    for _, _, (q, w) in _iter_rows([Om, W], plan.local_dim, budget, fixed=8 * Om.width**2):
        T += q.T @ w
    T = plan.vectors.reduce(T)
    lam, V, res = _ritz_from(Om, W, T, plan, budget, out_path)
    status = Status.COMPLETED if Om.width >= plan.k else Status.RANK_DEFICIENT
    return lam, V, res, status, ""


def _bcgs2(W: Tensor, Q: Any, anorm: float, plan: _Plan, step: int) -> tuple[Tensor, Tensor, Tensor]:
    """``W = Q C + Q_new R`` with ``Q_new ⟂ Q`` orthonormal (block Gram–Schmidt twice, BCGS2).

    Rank-deficient columns of the projected block are replaced by random directions; ``R`` keeps the relation.
    """
    W1, C1 = streamed.project_out(W, Q, plan.vectors.reduce)
    Q1, R1 = plan.vectors.qr(W1)
    bad = R1.diagonal().abs() <= 100 * torch.finfo(plan.dtype).eps * anorm
    if bad.any():
        nb = int(bad.sum())
        Z = TestMatrix("gaussian", plan.dim, nb, plan.seed, f"restart{step}", plan.dtype, nb, plan.index).block(0)
        for _ in range(2):
            Z = streamed.project_out(Z.to(W.device), Q, plan.vectors.reduce)[0]
        W1b = W1.clone()
        W1b[:, bad] = Z / plan.vectors.colnorms(Z) * anorm
        Q1 = plan.vectors.qr(W1b)[0]
        R1 = plan.vectors.reduce(Q1.T @ W1)
    W2, C2 = streamed.project_out(Q1, Q, plan.vectors.reduce)
    Q2, R2 = plan.vectors.qr(W2)
    return Q2, C1 + C2 @ R1, R2 @ R1


def _block_krylov(mv, plan: _Plan, store, budget, out_path):
    D, b, n, dt, dev = plan.local_dim, plan.b, plan.s, plan.dtype, plan.device
    m = n // b
    itemsize = torch.empty((), dtype=dt).element_size()
    in_core = store is None or budget is None or D * n * itemsize + D * b * (8 + 8 * itemsize) <= budget
    buf = torch.empty(D, n, dtype=dt, device=dev) if in_core else None
    blocks = bs.ColumnBlocks(D, dt, store)
    names = bs.block_names("k", m + 1)
    T = torch.zeros(n, n, dtype=torch.float64)
    if store is not None and store.has(names[0]):
        Qj = store.load(names[0]).to(dev)
    else:
        Qj = plan.vectors.qr(_omega(plan, b, "krylov").block(0).to(dev))[0]
        if store is not None:
            store.save(names[0], Qj.cpu())
    anorm = 0.0
    for j in range(m):
        if buf is not None:
            buf[:, j * b : (j + 1) * b] = Qj
        if store is not None:
            blocks.append(names[j], b)
        basis = buf[:, : (j + 1) * b] if buf is not None else blocks
        if store is not None and store.has(names[j + 1]):
            saved = store.load_all(names[j + 1])
            Qj, C, R, anorm = saved["data"].to(dev), saved["c"], saved["r"], saved["anorm"].item()
        else:
            W = mv(Qj.contiguous())
            anorm = max(anorm, plan.vectors.colnorms(W).max().item())
            Qj, C, R = _bcgs2(W, basis, anorm, plan, j)
            if store is not None:
                store.save(names[j + 1], {"data": Qj.cpu(), "c": C.cpu(), "r": R.cpu(), "anorm": torch.tensor(anorm)})
        T[: (j + 1) * b, j * b : (j + 1) * b] = C.double().cpu()
        if j + 1 < m:
            T[(j + 1) * b : (j + 2) * b, j * b : (j + 1) * b] = R.double().cpu()
    Tsym = (T + T.T) / 2
    theta, S = torch.linalg.eigh(Tsym)
    idx = _select(theta, plan.k, plan.sort)
    Ss = S[:, idx]
    res = ((R.double().cpu() @ Ss[-b:]).norm(dim=0) ** 2 + (((T - T.T) / 2) @ Ss).norm(dim=0) ** 2).sqrt()
    if buf is None:
        V = streamed.apply_right(blocks, Ss, out=out_path, memory_budget=budget)
        V = V.to(dev) if isinstance(V, Tensor) else V
    else:  # Ritz vectors in place: the first k columns of the basis buffer become V
        Sd = Ss.to(dt).to(dev)
        rows = max(1, (64 * 2**20) // (len(idx) * itemsize))
        for s in range(0, D, rows):
            buf[s : s + rows, : len(idx)] = buf[s : s + rows] @ Sd
        V = buf[:, : len(idx)]
        if budget is None or D * (n + len(idx)) * itemsize <= budget:
            V = V.clone()
    return theta[idx], V, res, Status.COMPLETED, ""


def recover(mv: _Products, plan: _Plan, store: bs.BlockStore | None, budget: int | None, out_path: Any):
    """Run the plan's method: ``(eigenvalues, eigenvectors, residuals or None, status, message)``."""
    methods = {"block_krylov": _block_krylov, "nystrom": _nystrom, "core": _core, "subspace": _subspace}
    return methods[plan.method](mv, plan, store, budget, out_path)
