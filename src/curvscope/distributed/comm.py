"""Small wrappers over ``torch.distributed`` with errors that say what happened."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


class DistributedError(RuntimeError):
    """A collective failed: usually another rank died or timed out."""


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def all_reduce_sum(tensor: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place (and return it).

    Gloo needs CPU tensors and NCCL CUDA ones; a tensor on the wrong side is moved for the
    reduction and back. A failure (a dead rank, a timeout) is raised as
    :class:`DistributedError` with the rank that saw it.
    """
    if not is_distributed():
        return tensor
    backend = dist.get_backend(group)
    work = tensor
    if backend == "gloo" and tensor.device.type != "cpu":
        work = tensor.cpu()
    elif backend == "nccl" and tensor.device.type != "cuda":
        work = tensor.cuda()
    try:
        dist.all_reduce(work, op=dist.ReduceOp.SUM, group=group)
    except Exception as err:  # gloo/NCCL raise RuntimeError subclasses with terse text
        raise DistributedError(
            f"rank {dist.get_rank()}: all-reduce of a curvature product failed ({type(err).__name__}: {err}). "
            f"Another rank probably died or timed out; check its log. Every rank must run the same "
            f"computation with the same seeds."
        ) from err
    if work is not tensor:
        tensor.copy_(work)
    return tensor


def agree_on_errors(build: Callable[[], T], distributed: bool, what: str) -> T:
    """Run ``build()`` on every rank and agree on failure before any collective work starts.

    A rank whose input checks fail (bad data, an empty shard) would otherwise raise alone while
    the others wait in the first all-reduce until the timeout. Here every rank learns every
    rank's error, and all raise the same error naming the ranks that failed. Only ordinary
    exceptions are shared; ``KeyboardInterrupt`` and the like propagate at once.
    """
    if not distributed:
        return build()
    result, mine = None, None
    try:
        result = build()
    except Exception as err:
        mine = f"{type(err).__name__}: {err}"
        local = err
    messages: list[str | None] = [None] * dist.get_world_size()
    try:
        dist.all_gather_object(messages, mine)
    except Exception as err:
        raise DistributedError(
            f"rank {dist.get_rank()}: could not agree on {what} with the other ranks ({err}). Another "
            f"rank probably died or timed out; check its log."
        ) from err
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    if failed:
        text = "; ".join(f"rank {r}: {m}" for r, m in failed)
        error = ValueError(f"{what} failed on {len(failed)} of {len(messages)} ranks — {text}")
        raise error from (local if mine is not None else None)
    return result


def gather_data_fingerprints(mine: dict) -> dict:
    """One fingerprint of the data all ranks read together, identical on every rank.

    Sample and batch counts are summed; the contents digests are combined in rank order (a shard
    is a rank's own; moving a batch to another rank changes what each rank measures).
    """
    parts: list[dict | None] = [None] * dist.get_world_size()
    try:
        dist.all_gather_object(parts, mine)
    except Exception as err:
        raise DistributedError(
            f"rank {dist.get_rank()}: gathering the data fingerprints failed ({err}). Another rank probably "
            f"died or timed out; check its log."
        ) from err
    import hashlib

    contents = hashlib.sha256("|".join(p["contents"] for p in parts).encode()).hexdigest()[:16]
    return {
        "ranks": len(parts),
        "num_batches": sum(p["num_batches"] for p in parts),
        "num_samples": sum(p["num_samples"] for p in parts),
        "shapes": parts[0]["shapes"],
        "contents": contents,
    }


def shard_batches(batches: Sequence[T], rank: int | None = None, world_size: int | None = None) -> list[T]:
    """Round-robin shard of a list of batches for this rank (batch ``i`` goes to rank ``i % W``)."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    return list(batches[rank::world_size])


def init_from_environment(device: str = "cpu", timeout_s: float = 600.0) -> bool:
    """Join the process group that ``torchrun`` describes in the environment (no-op otherwise).

    Gloo for CPU, NCCL for CUDA. Returns True when this process is one of several ranks.
    """
    import os
    from datetime import timedelta

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return is_distributed()
    backend = "nccl" if str(device).startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return is_distributed()
