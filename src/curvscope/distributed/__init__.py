"""Data-parallel curvature over ``torch.distributed``.

Design: every rank holds a shard of the data and runs the *same* algorithm with the *same*
seeds; each curvature product sums its shard's contributions and sample counts and
all-reduces both, so every rank receives the identical product and the algorithms (eigsh,
densities, trace estimators, sketches) follow identical paths on every rank, with no
broadcasts and no rank-0 special case. Results equal the single-process ones up to the
order of floating-point summation (~1e-15 relative in float64).

Why not run the algorithm on rank 0 and broadcast? It would need every algorithm to be
written twice (driver and worker loops); identical replicated execution costs only a few
``D``-sized vector operations per product, small next to the product itself.

Model sharding: :mod:`curvscope.distributed.fsdp` (:class:`ShardedCurvature`) measures a model
wrapped with FSDP2's ``fully_shard``; its Krylov vectors are sharded like the parameters and the
algorithms reduce their inner products through the operator's vector space
(:mod:`curvscope.linalg.space`). It is imported on first use (it needs ``torch.distributed.fsdp``).
"""

from curvscope.distributed.comm import (
    DistributedError,
    all_reduce_sum,
    get_rank,
    get_world_size,
    is_distributed,
    shard_batches,
)

__all__ = [
    "DistributedError",
    "ShardedCurvature",
    "all_reduce_sum",
    "gather_vectors",
    "get_rank",
    "get_world_size",
    "is_distributed",
    "shard_batches",
]


def __getattr__(name: str):
    if name in ("ShardedCurvature", "gather_vectors"):  # lazily: linalg imports this package's comm
        from curvscope.distributed import fsdp

        return getattr(fsdp, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
