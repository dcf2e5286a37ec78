"""Memory guard: estimate peak memory before heavy work and refuse with the fix.

Estimates are deliberately simple and stated: tensors we will allocate (Krylov bases,
sketches: ``D × vectors × itemsize``) plus the activations of one batch (measured by
forward hooks on the first batch, times a factor for the tangent and gradient copies of a
curvature product). The budget defaults to 90% of what the device has available now.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def available_bytes(device: torch.device | str = "cpu") -> int:
    """Memory available now on ``device`` (CUDA: free device memory; CPU: MemAvailable)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - no way to know: do not block
        return 1 << 62


def fmt_bytes(n: float) -> str:
    """Human-readable size."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def check_budget(
    estimate: int,
    what: str,
    fixes: Sequence[str],
    device: torch.device | str = "cpu",
    budget: int | None = None,
    fraction: float = 0.9,
) -> None:
    """Raise :class:`MemoryError` when ``estimate`` bytes exceed the budget.

    Args:
        estimate: peak bytes the work will need.
        what: what needs it (e.g. "eigsh basis of 300 vectors of D=10,000,000 (float32)").
        fixes: options that reduce it, named as the user would pass them.
        device: where it will be allocated.
        budget: bytes allowed (default: ``fraction`` of :func:`available_bytes`).
        fraction: share of the available memory used as the default budget.

    Example:
        >>> check_budget(10, "a tiny thing", ["nothing"], budget=100)
        >>> check_budget(1000, "a basis", ["storage='disk'"], budget=100)
        Traceback (most recent call last):
        ...
        MemoryError: a basis needs about 1000.0 B on cpu but the budget is 100.0 B; try: storage='disk'
    """
    limit = int(fraction * available_bytes(device)) if budget is None else int(budget)
    if estimate > limit:
        raise MemoryError(
            f"{what} needs about {fmt_bytes(estimate)} on {torch.device(device)} but the budget is "
            f"{fmt_bytes(limit)}; try: {', or '.join(fixes)}"
        )


def vectors_bytes(dim: int, count: int, dtype: torch.dtype) -> int:
    """Bytes of ``count`` vectors of length ``dim``."""
    return int(dim) * int(count) * torch.empty((), dtype=dtype).element_size()
