"""Out-of-core column blocks of a tall matrix: the on-disk store and its row-chunk reads.

A sketch of a ``D``-parameter operator with ``n`` measurements is a ``[D, n]`` matrix
``Y = [Y₀, Y₁, …]`` computed one column block ``Yⱼ = A Ωⱼ`` at a time. For ``D = 10⁷`` and
``n = 2000`` that is 80 GB in float32: it cannot live in RAM. This module stores the
blocks on disk and runs the few algorithms a sketch needs as passes over *row chunks*
``Y[r₀:r₁, :]`` (all columns, a slice of rows), so peak RAM is set by a user budget.

**Format.** A store is a directory::

    manifest.json                 {"format", "version", "dim", "dtype", "spec", "fingerprint"}
    blocks/<name>.safetensors     one file per block: tensor "data" [D, b] (+ small extras)

Why safetensors, one file per block, and a JSON manifest: safetensors is already a
dependency (no h5py/zarr); its header states dtype and shape, it holds no pickled code
(a store received from someone else is safe to open), numpy/Rust/JS read it; row slices
are read through a memory map without loading the block (``get_slice``), which is what
the row-chunk passes need. One file per block makes every write atomic (temp file +
rename, :mod:`curvscope.io`): a killed run leaves finished blocks and no half block, a
resumed run lists the directory and computes only what is missing, and several processes
(or machines sharing a file system) can each write a range of blocks into one directory,
or into their own directories merged later with :meth:`BlockStore.merge`. The manifest
records what the blocks are measurements *of* (``spec``: method, seed, test vectors, block
size), so a store is never silently reused for another computation.

The streamed linear algebra on these blocks (Gram matrix, out-of-core orthonormalisation,
``Y @ M``, Gram–Schmidt against stored blocks) is in :mod:`curvscope.linalg.streamed`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from curvscope.io import atomic_path, atomic_write_json, load_tensors, read_json, save_tensors
from curvscope.operators.fingerprint import check_fingerprint

FORMAT = "curvscope.blockstore"
VERSION = 1
#: Working memory of a streamed pass when no budget is given (bytes).
DEFAULT_WORKING_BYTES = 256 * 2**20
_ST_CODES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
_ST_DTYPES = {v: k for k, v in _ST_CODES.items()}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _normal(obj: Any) -> Any:
    """JSON round trip (tuples become lists) so specs compare as they are stored."""
    return json.loads(json.dumps(obj, default=str))


class BlockStore:
    """A directory of named, atomically written blocks of one ``D``-dimensional computation.

    Args:
        path: directory (created when missing).
        dim: row count ``D`` of every block.
        dtype: dtype of the blocks.
        spec: JSON-able description of what the blocks are; opening an existing store with
            a different ``dim``, ``dtype`` or ``spec`` raises instead of mixing computations.
        fingerprint: :func:`~curvscope.operators.fingerprint.operator_fingerprint` of the operator
            the blocks measure; reopening with another raises
            :class:`~curvscope.operators.fingerprint.StaleStateError` naming what changed (a store
            written without one cannot be checked and is refused too).

    Example:
        >>> import tempfile, torch
        >>> store = BlockStore(tempfile.mkdtemp(), dim=4, dtype=torch.float64, spec={"seed": 0})
        >>> store.save("y_00000", torch.eye(4, 2, dtype=torch.float64))
        >>> store.names(), store.rows("y_00000", 0, 2).tolist()
        (['y_00000'], [[1.0, 0.0], [0.0, 1.0]])
    """

    def __init__(
        self,
        path: str | os.PathLike,
        dim: int,
        dtype: torch.dtype,
        spec: dict | None = None,
        fingerprint: dict | None = None,
    ) -> None:
        self.path = Path(path)
        self.dim, self.dtype = int(dim), dtype
        self.manifest = {"format": FORMAT, "version": VERSION, "dim": self.dim, "dtype": _dtype_name(dtype)}
        self.manifest["spec"] = _normal(spec or {})
        if fingerprint is not None:
            self.manifest["fingerprint"] = _normal(fingerprint)
        file = self.path / "manifest.json"
        if file.exists():
            self._check(read_json(file), fingerprint is not None)
        else:
            (self.path / "blocks").mkdir(parents=True, exist_ok=True)
            atomic_write_json(file, self.manifest)
        (self.path / "blocks").mkdir(parents=True, exist_ok=True)

    def _check(self, have: dict, with_fingerprint: bool) -> None:
        """Refuse a store of another computation; name what changed in the operator it measured."""
        if {k: v for k, v in have.items() if k != "fingerprint"} != {
            k: v for k, v in self.manifest.items() if k != "fingerprint"
        }:
            raise ValueError(
                f"the block store {self.path} holds blocks of another computation: it was made for "
                f"{have}, this run is {self.manifest}. Pass a new store directory, or delete {self.path} "
                f"to start over."
            )
        if with_fingerprint:
            check_fingerprint(have.get("fingerprint"), self.manifest["fingerprint"], f"the block store {self.path}")
        elif "fingerprint" in have:  # opened without an operator (BlockStore.open, merge): keep its identity
            self.manifest["fingerprint"] = have["fingerprint"]

    @classmethod
    def open(cls, path: str | os.PathLike) -> BlockStore:
        """Open an existing store with the dim, dtype and spec of its manifest."""
        file = Path(path) / "manifest.json"
        if not file.exists():
            raise FileNotFoundError(f"no block store at {path} (missing manifest.json)")
        m = read_json(file)
        if m.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} directory: its manifest says {m.get('format')!r}")
        return cls(path, m["dim"], getattr(torch, m["dtype"]), m["spec"], m.get("fingerprint"))

    def file(self, name: str) -> Path:
        """Path of the block ``name``."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid block name {name!r}")
        return self.path / "blocks" / f"{name}.safetensors"

    def has(self, name: str) -> bool:
        """Whether block ``name`` is complete on disk."""
        return self.file(name).exists()

    def names(self, prefix: str = "") -> list[str]:
        """Sorted names of the finished blocks (temporary files of running writers are ignored)."""
        return sorted(p.name[: -len(".safetensors")] for p in (self.path / "blocks").glob(f"{prefix}*.safetensors"))

    def save(self, name: str, data: Tensor | dict[str, Tensor], meta: dict | None = None) -> None:
        """Write a block atomically: ``data`` ``[D, b]`` or a dict with key ``"data"`` and small extras."""
        tensors = data if isinstance(data, dict) else {"data": data}
        for key, t in tensors.items():
            if key == "data" and (t.ndim != 2 or t.shape[0] != self.dim or t.dtype != self.dtype):
                raise ValueError(
                    f"block {name!r}: expected data [{self.dim}, b] of {self.dtype}, got {tuple(t.shape)} {t.dtype}"
                )
        save_tensors(self.file(name), tensors, meta)

    def load(self, name: str, key: str = "data") -> Tensor:
        """Read one tensor of a block."""
        return self.load_all(name)[key]

    def load_all(self, name: str) -> dict[str, Tensor]:
        """Read every tensor of a block."""
        if not self.has(name):
            raise FileNotFoundError(f"block {name!r} is not in the store {self.path}")
        return load_tensors(self.file(name))[0]

    def rows(self, name: str, start: int, stop: int, key: str = "data") -> Tensor:
        """Rows ``start:stop`` of a block, read through a memory map (the rest is not loaded)."""
        from safetensors import safe_open

        with safe_open(str(self.file(name)), framework="pt") as fh:
            return fh.get_slice(key)[start:stop]

    def mtime_ns(self, name: str) -> int:
        """Modification time of a block file (tests check that resumed runs never rewrite one)."""
        return self.file(name).stat().st_mtime_ns

    def merge(self, *others: str | os.PathLike | BlockStore) -> list[str]:
        """Copy the blocks of other stores of the same computation into this one.

        Blocks already here are kept (blocks are deterministic functions of the spec). The
        manifests must be equal. Returns the names copied.
        """
        copied = []
        for other in others:
            other = other if isinstance(other, BlockStore) else BlockStore.open(other)
            if other.manifest != self.manifest:
                raise ValueError(
                    f"cannot merge {other.path} into {self.path}: different computations "
                    f"({other.manifest} vs {self.manifest})"
                )
            for name in other.names():
                if not self.has(name):
                    with atomic_path(self.file(name)) as tmp:
                        shutil.copyfile(other.file(name), tmp)
                    copied.append(name)
        return copied


# ---------------------------------------------------------------------------- disk matrices
def write_rows(
    path: str | os.PathLike | Sequence[tuple[str | os.PathLike, int]],
    shape: tuple[int, int],
    dtype: torch.dtype,
    chunks: Iterator[Tensor],
    metadata: dict | None = None,
) -> None:
    """Write a ``[D, k]`` safetensors file sequentially from row chunks, atomically.

    The chunks must arrive in row order and add up to ``D`` rows; only one chunk is in RAM.
    ``path`` may also be a list of ``(path, width)``: the columns are then split into one
    file per column block (widths adding up to ``k``), written side by side.
    """
    D, k = int(shape[0]), int(shape[1])
    targets = [(path, k)] if isinstance(path, (str, os.PathLike)) else [(p, int(w)) for p, w in path]
    if sum(w for _, w in targets) != k:
        raise ValueError(f"the column widths {[w for _, w in targets]} do not add up to {k}")
    itemsize = torch.empty((), dtype=dtype).element_size()
    meta = {key: json.dumps(v, default=str) for key, v in (metadata or {}).items()}
    written = 0
    with contextlib.ExitStack() as stack:
        handles = []
        for p, w in targets:
            fh = stack.enter_context(open(stack.enter_context(atomic_path(p)), "wb"))
            header = {"data": {"dtype": _ST_CODES[dtype], "shape": [D, w], "data_offsets": [0, D * w * itemsize]}}
            text = json.dumps({**header, "__metadata__": meta}).encode()
            text += b" " * (-len(text) % 8)
            fh.write(struct.pack("<Q", len(text)) + text)
            handles.append((fh, w))
        for chunk in chunks:
            if chunk.ndim != 2 or chunk.shape[1] != k or chunk.dtype != dtype:
                raise ValueError(f"row chunk must be [rows, {k}] of {dtype}, got {tuple(chunk.shape)} {chunk.dtype}")
            c0 = 0
            for fh, w in handles:
                part = chunk[:, c0 : c0 + w].detach().cpu().contiguous()
                fh.write(part.view(torch.uint8).numpy().tobytes())
                c0 += w
            written += chunk.shape[0]
        if written != D:
            raise ValueError(f"wrote {written} rows, expected {D}")
        for fh, _ in handles:
            fh.flush()


class DiskMatrix:
    """Read-only handle of a ``[D, k]`` matrix in one safetensors file (e.g. eigenvectors too big for RAM).

    Example:
        >>> import tempfile, torch
        >>> path = tempfile.mkdtemp() + "/v.safetensors"
        >>> chunks = [torch.ones(2, 2, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64)]
        >>> write_rows(path, (3, 2), torch.float64, iter(chunks))
        >>> V = DiskMatrix(path)
        >>> V.shape, V.rows(1, 3).tolist()
        ((3, 2), [[1.0, 1.0], [0.0, 0.0]])
    """

    def __init__(self, path: str | os.PathLike, key: str = "data") -> None:
        self.path, self.key = Path(path), key
        with open(self.path, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            info = json.loads(fh.read(n))[key]
        self.shape = (int(info["shape"][0]), int(info["shape"][1]))
        self.dtype = _ST_DTYPES[info["dtype"]]

    def rows(self, start: int, stop: int) -> Tensor:
        """Rows ``start:stop`` as a tensor."""
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as fh:
            return fh.get_slice(self.key)[start:stop]

    def load(self) -> Tensor:
        """The whole matrix in RAM."""
        return self.rows(0, self.shape[0])

    def iter_rows(self, rows: int) -> Iterator[tuple[int, Tensor]]:
        """``(start, chunk)`` over row chunks of ``rows`` rows."""
        for s in range(0, self.shape[0], rows):
            yield s, self.rows(s, min(self.shape[0], s + rows))

    def matmul(self, X: Tensor, memory_budget: int | None = None) -> Tensor:
        """``V @ X`` for ``X`` ``[k, K]`` (streamed over rows; the result ``[D, K]`` is in RAM)."""
        out = torch.empty(self.shape[0], X.shape[1], dtype=X.dtype)
        per_row = self.shape[1] * bytes_per_entry(self.dtype) + 8 * X.shape[1]
        for s, chunk in self.iter_rows(_rows_for(per_row, memory_budget)):
            out[s : s + chunk.shape[0]] = chunk.to(X.dtype) @ X
        return out

    def rmatmul(self, Y: Tensor, memory_budget: int | None = None) -> Tensor:
        """``Vᵀ @ Y`` for ``Y`` ``[D, K]`` (streamed over rows)."""
        out = torch.zeros(self.shape[1], Y.shape[1], dtype=torch.float64)
        per_row = self.shape[1] * bytes_per_entry(self.dtype) + 8 * Y.shape[1]
        for s, chunk in self.iter_rows(_rows_for(per_row, memory_budget)):
            out += chunk.double().T @ Y[s : s + chunk.shape[0]].double()
        return out

    def __repr__(self) -> str:
        return f"DiskMatrix({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"


# ---------------------------------------------------------------------------- column blocks
class ColumnBlocks:
    """The matrix ``Y = [Y₀, Y₁, …]`` of column blocks ``[D, bⱼ]``, in RAM or in a :class:`BlockStore`.

    Args:
        dim: rows ``D``.
        dtype: dtype of the blocks.
        store: the store that blocks given by name live in.
    """

    def __init__(self, dim: int, dtype: torch.dtype, store: BlockStore | None = None) -> None:
        self.dim, self.dtype, self.store = dim, dtype, store
        self._items: list[tuple[Tensor | str, int, int]] = []

    def append(self, block: Tensor | str, width: int | None = None) -> None:
        """Add a block: a tensor (kept in RAM) or the name of a block in the store (``width`` saves a read)."""
        if isinstance(block, str):
            if self.store is None:
                raise ValueError("a block given by name needs a store")
            width = width if width is not None else self.store.load(block).shape[1]
        else:
            width = block.shape[1]
        self._items.append((block, 0, int(width)))

    @property
    def widths(self) -> list[int]:
        """Column count of every block."""
        return [b - a for _, a, b in self._items]

    @property
    def width(self) -> int:
        """Total number of columns ``n``."""
        return sum(self.widths)

    def __len__(self) -> int:
        return len(self._items)

    def head(self, cols: int) -> ColumnBlocks:
        """The first ``cols`` columns, as a view (no copy)."""
        out, c0 = ColumnBlocks(self.dim, self.dtype, self.store), 0
        for ref, a, b in self._items:
            if c0 >= cols:
                break
            take = min(b - a, cols - c0)
            out._items.append((ref, a, a + take))
            c0 += take
        return out

    def block(self, j: int) -> Tensor:
        """Block ``j`` as a tensor ``[D, bⱼ]``."""
        ref, a, b = self._items[j]
        full = self.store.load(ref) if isinstance(ref, str) else ref
        return full[:, a:b]

    def rows(self, start: int, stop: int) -> Tensor:
        """``Y[start:stop, :]`` (each block file is read through a memory map, only these rows)."""
        parts = []
        for ref, a, b in self._items:
            part = self.store.rows(ref, start, stop) if isinstance(ref, str) else ref[start:stop]
            parts.append(part[:, a:b])
        return torch.cat(parts, dim=1) if parts else torch.empty(stop - start, 0, dtype=self.dtype)

    def nbytes(self) -> int:
        """Bytes of the whole matrix."""
        return self.dim * self.width * torch.empty((), dtype=self.dtype).element_size()


def bytes_per_entry(dtype: torch.dtype) -> int:
    """Working bytes per entry of a row chunk: the read (twice: slices, then the concatenation) and its float64 copy."""
    return 2 * torch.empty((), dtype=dtype).element_size() + 8


def _rows_for(bytes_per_row: int, memory_budget: int | None) -> int:
    """Rows per chunk: half the budget, as the allocator may still hold the previous chunk while the next is read."""
    budget = DEFAULT_WORKING_BYTES if memory_budget is None else int(memory_budget)
    return max(1, budget // 2 // max(1, bytes_per_row))


def row_chunks(
    dim: int, bytes_per_row: int, memory_budget: int | None, fixed_bytes: int = 0
) -> Iterator[tuple[int, int]]:
    """Row ranges ``(start, stop)`` whose working set ``rows · bytes_per_row + fixed_bytes`` fits the budget.

    Raises:
        MemoryError: when even one row does not fit, before any work.
    """
    if memory_budget is not None and fixed_bytes + bytes_per_row > memory_budget:
        raise MemoryError(
            f"memory_budget={memory_budget / 2**20:.1f} MiB is too small: a streamed pass needs "
            f"{(fixed_bytes + bytes_per_row) / 2**20:.1f} MiB for its small matrices and one row. Raise the "
            f"budget or use fewer measurements."
        )
    free = None if memory_budget is None else memory_budget - fixed_bytes
    rows = _rows_for(bytes_per_row, free)
    for s in range(0, dim, rows):
        yield s, min(dim, s + rows)


def block_names(prefix: str, count: int) -> Sequence[str]:
    """``prefix_00000 … prefix_{count-1}``: the names of a sequence of blocks."""
    return [f"{prefix}_{j:05d}" for j in range(count)]
