"""Where Krylov basis vectors live: device memory, host memory, or a file on disk.

Lanczos with full reorthogonalisation keeps every basis vector. For ``D`` parameters,
``n`` steps and ``B`` independent runs (SLQ probes) that is ``B · n · D`` numbers — 3.2 GB
for ten 80-step probes of a 1M-parameter model in float32. A storage object holds those
vectors in one medium and exposes the few block operations the algorithms need, so the
algorithms never care where the vectors are:

- ``project(X)``: ``Qᵀ X`` (reorthogonalisation coefficients),
- ``combine(C)``: ``Q C`` (subtracting projections, forming Ritz vectors),
- ``rotate(Y)``: ``Q[:, :k] ← Q Y`` in place (thick restarts),
- ``append(v)`` / ``column(j)``.

Layout: ``[B, capacity, D]`` — each basis vector is a contiguous row, each run's basis a
contiguous ``[n, D]`` matrix, so a block operation is one (batched) matrix product.
Host and disk storages stream the basis through the compute device in chunks of
coordinates (rows of ``Q``), so the device never holds more than ``working_nbytes``.

Memory bound (stated, not guessed): ``nbytes = B · capacity · D · itemsize`` in the
storage's medium, plus at most ``working_nbytes`` on the compute device while a block
operation runs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

#: Device working memory a streamed (host or disk) block operation may use, in bytes.
DEFAULT_WORKING_BYTES = 64 * 2**20

_NUMPY_DTYPES = {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16}


class BasisStorage:
    """A fixed-capacity store of ``B`` bases of up to ``capacity`` vectors of length ``D``.

    Subclasses implement :meth:`_read` and :meth:`_write` of a ``[B, rows, cols]`` slab
    and choose the coordinate chunking; every block operation is written once here.

    Args:
        dim: vector length ``D``.
        capacity: maximum number of vectors per run.
        batch: number of independent runs ``B`` (1 for a single Lanczos run).
        dtype: floating dtype of the vectors.
        device: compute device the operations return their results on.
    """

    medium: str = "abstract"

    def __init__(self, dim: int, capacity: int, batch: int, dtype: torch.dtype, device: torch.device | str):
        if dim <= 0 or capacity <= 0 or batch <= 0:
            raise ValueError(f"storage needs positive dim, capacity and batch, got {dim}, {capacity}, {batch}")
        self.dim, self.capacity, self.batch = int(dim), int(capacity), int(batch)
        self.dtype, self.device = dtype, torch.device(device)
        self.size = 0
        self._itemsize = torch.empty((), dtype=dtype).element_size()

    # ----------------------------------------------------------------- interface
    def _read(self, r0: int, r1: int, d0: int, d1: int) -> Tensor:  # pragma: no cover - abstract
        """Rows ``r0:r1`` and coordinates ``d0:d1`` of every run, ``[B, r1-r0, d1-d0]`` on the device."""
        raise NotImplementedError

    def _write(self, r0: int, d0: int, block: Tensor) -> None:  # pragma: no cover - abstract
        """Write ``block`` ``[B, r, c]`` into rows ``r0:r0+r``, coordinates ``d0:d0+c``."""
        raise NotImplementedError

    def _chunk_cols(self, rows: int) -> int:
        """How many coordinates one streamed slab of ``rows`` vectors may span."""
        return self.dim

    @property
    def nbytes(self) -> int:
        """Bytes the stored basis occupies in its medium: ``B · capacity · D · itemsize``."""
        return self.batch * self.capacity * self.dim * self._itemsize

    @property
    def working_nbytes(self) -> int:
        """Upper bound on extra device bytes a block operation uses beyond its inputs and output."""
        return 0

    def close(self) -> None:
        """Release the memory or file (the object is unusable afterwards)."""

    # ----------------------------------------------------------------- helpers
    def _chunks(self, rows: int) -> Iterator[tuple[int, int]]:
        step = max(1, self._chunk_cols(max(rows, 1)))
        for d0 in range(0, self.dim, step):
            yield d0, min(self.dim, d0 + step)

    def _n(self, stop: int | None) -> int:
        n = self.size if stop is None else int(stop)
        if not 0 <= n <= self.size:
            raise IndexError(f"asked for the first {n} vectors but the storage holds {self.size}")
        return n

    def _as_block(self, v: Tensor) -> Tensor:
        """``[D]`` or ``[D, B]`` → ``[B, 1, D]`` in the storage's dtype."""
        v = v.reshape(self.dim, -1) if v.ndim == 1 else v
        if v.shape != (self.dim, self.batch):
            raise ValueError(f"expected a vector block [{self.dim}, {self.batch}], got {tuple(v.shape)}")
        return v.T.to(self.dtype).unsqueeze(1)

    # -------------------------------------------------------------- operations
    def append(self, v: Tensor) -> None:
        """Store ``v`` (``[D, B]``, or ``[D]`` when ``B = 1``) as the next vector of every run."""
        if self.size >= self.capacity:
            raise MemoryError(f"the basis storage is full ({self.capacity} vectors); create it with a larger capacity")
        self._write(self.size, 0, self._as_block(v))
        self.size += 1

    def set_column(self, j: int, v: Tensor) -> None:
        """Overwrite vector ``j`` (< ``size``) of every run with ``v`` ``[D, B]``."""
        if not 0 <= j < self.size:
            raise IndexError(f"column {j} is outside the {self.size} stored vectors")
        self._write(j, 0, self._as_block(v))

    def column(self, j: int) -> Tensor:
        """Vector ``j`` of every run, ``[D, B]`` on the compute device."""
        if not 0 <= j < self.size:
            raise IndexError(f"column {j} is outside the {self.size} stored vectors")
        return self._read(j, j + 1, 0, self.dim)[:, 0, :].T

    def truncate(self, n: int) -> None:
        """Forget every vector from index ``n`` on (their memory is reused by later appends)."""
        self.size = self._n(n)

    def copy_column(self, src: int, dst: int) -> None:
        """Copy vector ``src`` onto vector ``dst`` (both ``< size``)."""
        self.set_column(dst, self.column(src))

    def project(self, X: Tensor, stop: int | None = None) -> Tensor:
        """Coefficients of ``X`` on the first ``stop`` vectors.

        Args:
            X: ``[D, K]`` when ``B = 1`` (any ``K``), otherwise ``[D, B]`` (column ``b``
                against run ``b``'s basis).
            stop: number of leading vectors (default: all stored).

        Returns:
            ``Q[:, :n]ᵀ X`` as ``[n, K]`` (``B = 1``) or ``[n, B]`` (one column per run).
        """
        n = self._n(stop)
        K = X.shape[1]
        out = torch.zeros(n, K, dtype=self.dtype, device=self.device)
        if n == 0:
            return out
        for d0, d1 in self._chunks(n):
            Qc = self._read(0, n, d0, d1)
            if self.batch == 1:
                out += Qc[0] @ X[d0:d1]
            else:  # one gemv per run: bmm on these strided slabs copied them (measured 3x slower SLQ)
                Xt = X[d0:d1].T.contiguous()
                for b in range(self.batch):
                    out[:, b] += torch.mv(Qc[b], Xt[b])
        return out

    def combine(self, C: Tensor, stop: int | None = None) -> Tensor:
        """Linear combinations ``Q[:, :n] C``.

        Args:
            C: ``[n, K]`` when ``B = 1``, otherwise ``[n, B]`` (column ``b`` combines run ``b``).
            stop: number of leading vectors ``n`` (default: all stored).

        Returns:
            ``[D, K]`` or ``[D, B]`` on the compute device.
        """
        n = self._n(stop)
        if C.shape[0] != n:
            raise ValueError(f"coefficients have {C.shape[0]} rows but {n} basis vectors are combined")
        out = torch.zeros(self.dim, C.shape[1], dtype=self.dtype, device=self.device)
        if n == 0:
            return out
        C = C.to(self.dtype)
        for d0, d1 in self._chunks(n):
            Qc = self._read(0, n, d0, d1)
            if self.batch == 1:
                out[d0:d1] = Qc[0].T @ C
            else:
                for b in range(self.batch):
                    out[d0:d1, b] = torch.mv(Qc[b].T, C[:, b])
        return out

    def _check_rotate(self, Y: Tensor) -> tuple[int, int]:
        if self.batch != 1:
            raise ValueError("rotate is defined for a single run (batch = 1)")
        n, k = Y.shape
        if n > self.size or k > n:
            raise ValueError(f"rotate needs Y of shape [n ≤ {self.size}, k ≤ n], got {tuple(Y.shape)}")
        return n, k

    def rotate(self, Y: Tensor) -> None:
        """In place ``Q[:, :k] ← Q[:, :n] Y`` for ``Y`` ``[n, k]``, ``k ≤ n ≤ size`` (thick restart).

        Vectors from ``k`` on are left as they are (call :meth:`truncate` to drop them).
        Streams coordinate chunks, so no ``[D, k]`` temporary is needed beyond a chunk.
        """
        n, _ = self._check_rotate(Y)
        Yt = Y.to(self.dtype).T.contiguous()
        for d0, d1 in self._chunks(n):
            new = Yt @ self._read(0, n, d0, d1)[0]
            self._write(0, d0, new.unsqueeze(0))

    def matrix(self, run: int = 0, stop: int | None = None) -> Tensor:
        """The basis of run ``run`` as a ``[D, n]`` tensor on the compute device (a copy)."""
        n = self._n(stop)
        if not 0 <= run < self.batch:
            raise IndexError(f"run {run} is outside the {self.batch} runs")
        return self._read(0, n, 0, self.dim)[run].T.clone()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(D={self.dim}, size={self.size}/{self.capacity}, batch={self.batch}, "
            f"dtype={self.dtype}, nbytes={self.nbytes})"
        )


class DeviceStorage(BasisStorage):
    """All vectors in one ``[B, capacity, D]`` tensor on the compute device (fastest).

    Example:
        >>> import torch
        >>> s = DeviceStorage(dim=3, capacity=2, batch=1, dtype=torch.float64, device="cpu")
        >>> s.append(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
        >>> s.project(torch.tensor([[2.0], [5.0], [0.0]], dtype=torch.float64)).tolist()
        [[2.0]]
        >>> s.nbytes
        48
    """

    medium = "device"

    def __init__(self, dim: int, capacity: int, batch: int, dtype: torch.dtype, device: torch.device | str):
        super().__init__(dim, capacity, batch, dtype, device)
        self._data = torch.zeros(batch, capacity, dim, dtype=dtype, device=self.device)

    def _read(self, r0: int, r1: int, d0: int, d1: int) -> Tensor:
        return self._data[:, r0:r1, d0:d1]

    def _write(self, r0: int, d0: int, block: Tensor) -> None:
        self._data[:, r0 : r0 + block.shape[1], d0 : d0 + block.shape[2]] = block

    def rotate(self, Y: Tensor) -> None:
        """In place ``Q[:, :k] ← Q[:, :n] Y`` (one matrix product; a ``[k, D]`` temporary)."""
        n, k = self._check_rotate(Y)
        self._data[0, :k] = Y.to(self.dtype).T @ self._data[0, :n]

    @property
    def working_nbytes(self) -> int:
        """``rotate`` builds the new basis before overwriting: up to ``capacity · D`` extra."""
        return self.capacity * self.dim * self._itemsize

    def close(self) -> None:
        """Drop the tensor."""
        self._data = torch.empty(0)


class _StreamedStorage(BasisStorage):
    """Shared chunking for storages that copy slabs to the device."""

    def __init__(self, dim, capacity, batch, dtype, device, working_bytes: int = DEFAULT_WORKING_BYTES):
        super().__init__(dim, capacity, batch, dtype, device)
        self.working_bytes = int(working_bytes)

    def _chunk_cols(self, rows: int) -> int:
        # a slab [B, rows, c] plus the rotated copy [rows, c] must fit in working_bytes
        per_col = (self.batch + 1) * rows * self._itemsize
        return max(1, min(self.dim, self.working_bytes // per_col))

    @property
    def working_nbytes(self) -> int:
        """Bytes of the largest slab streamed to the device (about ``working_bytes``)."""
        rows = self.capacity
        return (self.batch + 1) * rows * self._chunk_cols(rows) * self._itemsize


class HostStorage(_StreamedStorage):
    """Vectors in host (CPU) memory, pinned when computing on CUDA; streamed in chunks.

    Use when the basis does not fit next to the model on the accelerator. On a CPU
    operator it behaves like :class:`DeviceStorage` (no copies).

    Args:
        working_bytes: device bytes one streamed slab may use.

    Example:
        >>> import torch
        >>> s = HostStorage(dim=4, capacity=3, batch=1, dtype=torch.float64, device="cpu")
        >>> s.append(torch.eye(4, dtype=torch.float64)[:, 1])
        >>> s.combine(torch.tensor([[3.0]], dtype=torch.float64)).flatten().tolist()
        [0.0, 3.0, 0.0, 0.0]
    """

    medium = "host"

    def __init__(self, dim, capacity, batch, dtype, device, working_bytes: int = DEFAULT_WORKING_BYTES):
        super().__init__(dim, capacity, batch, dtype, device, working_bytes)
        pin = self.device.type == "cuda"
        self._data = torch.zeros(batch, capacity, dim, dtype=dtype, pin_memory=pin)

    def _chunk_cols(self, rows: int) -> int:
        return self.dim if self.device.type == "cpu" else super()._chunk_cols(rows)

    def _read(self, r0: int, r1: int, d0: int, d1: int) -> Tensor:
        return self._data[:, r0:r1, d0:d1].to(self.device, non_blocking=True)

    def _write(self, r0: int, d0: int, block: Tensor) -> None:
        self._data[:, r0 : r0 + block.shape[1], d0 : d0 + block.shape[2]] = block.to("cpu")

    def close(self) -> None:
        """Drop the host tensor."""
        self._data = torch.empty(0)


class DiskStorage(_StreamedStorage):
    """Vectors in a ``numpy.memmap`` file, streamed through the device in chunks.

    The file is scratch space (created in ``directory``, deleted by :meth:`close` or
    garbage collection unless ``keep=True``); persist results with their ``save`` methods.
    Host memory use is the operating system's page cache, device use ``working_nbytes``.

    Args:
        directory: where the file goes (default: the system temporary directory).
        keep: leave the file in place after :meth:`close`.
        working_bytes: device bytes one streamed slab may use.

    Example:
        >>> import torch
        >>> s = DiskStorage(dim=3, capacity=2, batch=1, dtype=torch.float64, device="cpu")
        >>> s.append(torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64))
        >>> s.column(0).flatten().tolist()
        [0.0, 0.0, 2.0]
        >>> s.close()
    """

    medium = "disk"

    def __init__(
        self,
        dim,
        capacity,
        batch,
        dtype,
        device,
        directory: str | os.PathLike | None = None,
        keep: bool = False,
        working_bytes: int = DEFAULT_WORKING_BYTES,
    ):
        super().__init__(dim, capacity, batch, dtype, device, working_bytes)
        if dtype not in _NUMPY_DTYPES:
            raise TypeError(
                f"disk storage supports {sorted(map(str, _NUMPY_DTYPES))}, not {dtype}: run the "
                f"algorithm in float32 or use storage='host'"
            )
        directory = tempfile.gettempdir() if directory is None else os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        fd, self.path = tempfile.mkstemp(prefix="curvscope-basis-", suffix=".bin", dir=directory)
        os.close(fd)
        self.keep = keep
        self._mm = np.memmap(self.path, dtype=_NUMPY_DTYPES[dtype], mode="w+", shape=(batch, capacity, dim))

    def _read(self, r0: int, r1: int, d0: int, d1: int) -> Tensor:
        slab = np.ascontiguousarray(self._mm[:, r0:r1, d0:d1])
        return torch.from_numpy(slab).to(self.device)

    def _write(self, r0: int, d0: int, block: Tensor) -> None:
        self._mm[:, r0 : r0 + block.shape[1], d0 : d0 + block.shape[2]] = block.detach().to("cpu").numpy()

    def close(self) -> None:
        """Flush, unmap and (unless ``keep``) delete the file."""
        mm = getattr(self, "_mm", None)
        if mm is None:
            return
        mm.flush()
        del self._mm
        self._mm = None
        if not self.keep and os.path.exists(self.path):
            os.unlink(self.path)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


StorageFactory = Callable[[int, int, int, torch.dtype, torch.device], BasisStorage]

STORAGES: dict[str, type[BasisStorage]] = {"device": DeviceStorage, "host": HostStorage, "disk": DiskStorage}


def make_storage(
    storage: str | StorageFactory,
    dim: int,
    capacity: int,
    batch: int,
    dtype: torch.dtype,
    device: torch.device | str,
) -> BasisStorage:
    """Build a storage from a name (``"device"``, ``"host"``, ``"disk"``) or a factory.

    A factory is any callable ``(dim, capacity, batch, dtype, device) -> BasisStorage``,
    e.g. ``functools.partial(DiskStorage, directory="/scratch")``.

    Example:
        >>> import torch
        >>> make_storage("host", 10, 5, 2, torch.float32, "cpu").nbytes
        400
    """
    if isinstance(storage, str):
        try:
            cls = STORAGES[storage]
        except KeyError:
            raise ValueError(
                f"unknown storage {storage!r}; valid names: {sorted(STORAGES)}, or pass a factory "
                f"(dim, capacity, batch, dtype, device) -> BasisStorage"
            ) from None
        return cls(dim, capacity, batch, dtype, torch.device(device))
    if callable(storage):
        out = storage(dim, capacity, batch, dtype, torch.device(device))
        if not isinstance(out, BasisStorage):
            raise TypeError(f"the storage factory returned {type(out).__name__}, expected a BasisStorage")
        return out
    raise TypeError(f"storage must be a name {sorted(STORAGES)} or a factory, got {type(storage).__name__}")
