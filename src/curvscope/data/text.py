"""Byte-level text corpora from local files, as causal-language-model batches.

Every byte is a token (vocabulary 256, no tokenizer to download), so any text file on any
machine is a corpus — e.g. the Python standard library's own sources (:func:`stdlib_files`),
which every machine with Python has. Batches are HuggingFace-style dicts
``{"input_ids": [B, T], "labels": [B, T]}``; labels equal the inputs (the model shifts them, as
HF causal-LM heads do) and padding positions carry ``-100``, the ignored index, so the loss
units (non-ignored target tokens) count only real text.

>>> import tempfile, pathlib
>>> f = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
>>> _ = f.write_bytes(b"hello world")
>>> b = text_batches([f], seq_len=4, batch_size=2)
>>> [tuple(x["input_ids"].shape) for x in b], int((b[-1]["labels"] == -100).sum())
([(2, 4), (1, 4)], 1)
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

IGNORE_INDEX = -100
VOCAB_SIZE = 256


def stdlib_files(limit: int | None = None, pattern: str = "*.py") -> list[Path]:
    """Source files of the running Python's standard library, sorted by path (same list on every run).

    Args:
        limit: keep the first ``limit`` files (sorted order), ``None`` for all.
        pattern: glob in the top folder of the standard library (not recursive).
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob(pattern) if p.is_file())
    if not files:
        raise FileNotFoundError(f"no {pattern} files in the standard library folder {root}")
    return files[:limit] if limit is not None else files


def _expand(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"text corpus: {p} is neither a file nor a folder")
    if not out:
        raise FileNotFoundError(f"text corpus: no files found in {items}")
    return out


def read_bytes(paths: str | os.PathLike | Iterable[str | os.PathLike], max_bytes: int | None = None) -> Tensor:
    """The bytes of the files (folders: all files below, sorted), concatenated, as a ``[n]`` long tensor.

    Args:
        paths: a file, a folder, or a list of them.
        max_bytes: stop after this many bytes (``None``: read everything).
    """
    chunks, total = [], 0
    for p in _expand(paths):
        data = p.read_bytes()
        if max_bytes is not None:
            data = data[: max_bytes - total]
        chunks.append(data)
        total += len(data)
        if max_bytes is not None and total >= max_bytes:
            break
    raw = b"".join(chunks)
    if not raw:
        raise ValueError("text corpus: the files are empty")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()


def chunk_tokens(tokens: Tensor, seq_len: int, batch_size: int, max_batches: int | None = None) -> list[dict]:
    """Cut a token stream into ``{"input_ids", "labels"}`` batches of ``[≤ batch_size, seq_len]``.

    The last sequence is padded with token 0 and label ``-100``; the last batch may hold fewer rows.
    """
    if seq_len < 2 or batch_size < 1:
        raise ValueError(f"need seq_len >= 2 and batch_size >= 1, got {seq_len} and {batch_size}")
    n_seq = -(-tokens.numel() // seq_len)
    ids = torch.zeros(n_seq * seq_len, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE_INDEX)
    ids[: tokens.numel()] = tokens
    labels[: tokens.numel()] = tokens
    ids, labels = ids.view(n_seq, seq_len), labels.view(n_seq, seq_len)
    out = [
        {"input_ids": ids[i : i + batch_size], "labels": labels[i : i + batch_size]}
        for i in range(0, n_seq, batch_size)
    ]
    return out[:max_batches] if max_batches is not None else out


def text_batches(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    seq_len: int = 128,
    batch_size: int = 8,
    *,
    max_batches: int | None = None,
    offset: int = 0,
) -> list[dict]:
    """Byte-level causal-LM batches from local text files (see the module doc).

    Args:
        paths: a file, a folder, or a list of them.
        seq_len: tokens per sequence ``T``.
        batch_size: sequences per batch ``B``.
        max_batches: keep at most this many batches (reads only the bytes they need).
        offset: skip this many bytes first (e.g. a held-out part of the same corpus).

    Returns:
        A list (re-iterable, as curvature operators need) of ``{"input_ids": [B, T], "labels": [B, T]}``.
    """
    need = None if max_batches is None else offset + max_batches * batch_size * seq_len
    tokens = read_bytes(paths, need)[offset:]
    if tokens.numel() == 0:
        raise ValueError(f"text corpus: nothing left after skipping offset={offset} bytes")
    return chunk_tokens(tokens, seq_len, batch_size, max_batches)
