"""Conventions shared by every layer: seeds, progress bars and the status vocabulary.

One place for each, so every algorithm speaks the same keywords with the same meaning:

- ``seed``: an ``int`` or an explicit ``torch.Generator`` (:func:`make_generator`); the global
  RNG is never used;
- ``progress``: ``None`` (default) shows a bar only when stderr is a terminal (:func:`make_progress`);
- ``status``: one :class:`Status` value on every result, with a ``message`` that says what to do.

This module imports nothing from curvscope, so any layer may use it.
"""

from __future__ import annotations

import enum
import sys
from typing import Any

import torch

SeedLike = int | torch.Generator | None


def make_generator(seed: SeedLike = 0) -> torch.Generator:
    """A CPU ``torch.Generator`` from a seed (``None`` means 0; the global RNG is never used).

    A generator passed in is returned as it is (and advanced by whoever draws from it). Probes
    are drawn on the CPU and moved, so a CUDA run reproduces the CPU run's random numbers.

    Example:
        >>> a, b = make_generator(3), make_generator(3)
        >>> bool(torch.equal(torch.randn(4, generator=a), torch.randn(4, generator=b)))
        True
    """
    if isinstance(seed, torch.Generator):
        return seed
    if seed is not None and not isinstance(seed, int):
        raise TypeError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
    return torch.Generator(device="cpu").manual_seed(0 if seed is None else int(seed))


def make_progress(total: int | None, progress: bool | None, desc: str, unit: str = "matvec") -> Any:
    """A tqdm bar, or a disabled one when ``progress`` is false (``None``: only on a terminal).

    Example:
        >>> make_progress(10, False, "eigsh").disable
        True
    """
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else bool(progress)
    return tqdm(total=total, desc=desc, unit=unit, disable=not show, leave=False, dynamic_ncols=True)


class Status(str, enum.Enum):
    """The one status vocabulary of every result (a ``str`` enum: ``Status.CONVERGED == "converged"``).

    Trustworthy outcomes (``status.trusted``): ``converged`` (every requested quantity met its
    tolerance, with a measured residual), ``completed`` (a fixed-budget estimator ran its whole
    budget; its statistical error is reported beside it) and ``exact`` (the estimate is exact up
    to round-off). Every other value says why a result must not be relied on.
    """

    CONVERGED = "converged"
    COMPLETED = "completed"
    EXACT = "exact"
    UNVERIFIED = "unverified"  # converged by an estimate that the measured residuals do not confirm
    MAX_MATVECS = "max_matvecs"  # the product budget ran out first
    INTERRUPTED = "interrupted"  # stopped by the user (Ctrl-C); the partial result is returned
    INVARIANT_SUBSPACE = "invariant_subspace"  # Krylov breakdown: the start vector spans fewer directions
    RANGE_EXCEEDED = "range_exceeded"  # KPM: the spectrum left the assumed interval
    RANK_DEFICIENT = "rank_deficient"  # a sketch found fewer directions than asked
    NOT_PSD = "not_psd"  # a PSD-only method saw negative curvature
    ZERO = "zero"  # the operator is zero on the probed subspace: ratios are undefined

    @property
    def trusted(self) -> bool:
        """Whether a claim may rest on a result with this status."""
        return self in TRUSTED

    def __str__(self) -> str:
        return self.value


TRUSTED = frozenset({Status.CONVERGED, Status.COMPLETED, Status.EXACT})


def as_status(value: str | Status) -> Status:
    """Coerce a stored string (e.g. from a saved result) to a :class:`Status`, refusing unknown ones."""
    try:
        return Status(value)
    except ValueError:
        valid = ", ".join(s.value for s in Status)
        raise ValueError(f"unknown status {value!r}; valid: {valid}") from None
