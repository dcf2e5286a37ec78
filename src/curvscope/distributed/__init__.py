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

Model sharding (FSDP) is not supported: each rank holds the whole model.
"""

from curvscope.distributed.comm import (
    DistributedError,
    all_reduce_sum,
    get_rank,
    get_world_size,
    is_distributed,
    shard_batches,
)

__all__ = ["DistributedError", "all_reduce_sum", "get_rank", "get_world_size", "is_distributed", "shard_batches"]
