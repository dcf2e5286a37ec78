"""Worker for the 2-process gloo tests: computes on its shard and saves what it got.

Run as ``python dist_worker.py RANK WORLD PORT OUTDIR MODE`` (the test starts two).
"""

import os
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))


def main() -> None:
    rank, world, port, outdir, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    torch.set_num_threads(1)
    from datetime import timedelta

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(seconds=20)
    )
    from curvscope.distributed import shard_batches
    from dist_cases import compute, make_problem

    model, loss_fn, batches = make_problem()
    mine = shard_batches(batches)
    if mode == "die" and rank == 1:
        os._exit(3)  # a rank that dies before the first product
    if mode == "empty" and rank == 1:
        mine = []  # an empty shard: every rank must refuse, none may wait in a collective
    if mode == "nan" and rank == 1:
        x, y = mine[0]
        mine = [(torch.full_like(x, float("nan")), y), *mine[1:]]
    t0 = time.time()
    try:
        results = compute(model, loss_fn, mine)
    except Exception as err:  # the survivor must fail with a clear error, not hang
        with open(os.path.join(outdir, f"error{rank}.txt"), "w") as fh:
            fh.write(f"{type(err).__name__}: {err}\nafter {time.time() - t0:.1f}s\n")
        os._exit(2)
    torch.save(results, os.path.join(outdir, f"rank{rank}.pt"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
