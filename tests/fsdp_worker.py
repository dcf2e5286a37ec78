"""Worker of the FSDP2 tests: ``python fsdp_worker.py RANK WORLD PORT OUTDIR MODE PROBLEM METHOD``."""

import os
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))


def main() -> None:
    rank, world, port, outdir, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    name, method = sys.argv[6], sys.argv[7]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=15))  # fmt: skip
    from curvscope.distributed import shard_batches
    from curvscope.distributed.fsdp import ShardedCurvature, gather_vectors
    from fsdp_cases import compute, make_problem, probe_vectors, wrap

    model, loss_fn, batches = make_problem(name)
    model = wrap(model)
    t0 = time.time()
    try:
        if mode == "budget":  # the exact replica over a stated budget: refused, and auto falls back to fd
            try:
                ShardedCurvature(model, loss_fn, shard_batches(batches), method="exact", memory_budget=1000)
                refused = "nothing raised"
            except MemoryError as err:
                refused = str(err)
            A = ShardedCurvature(model, loss_fn, shard_batches(batches), method="auto", memory_budget=1000)
            out = {"refused": refused, "auto": A.method, "exact_bytes": A.exact_bytes}
            torch.save(out, os.path.join(outdir, f"rank{rank}.pt"))
            return
        A = ShardedCurvature(model, loss_fn, shard_batches(batches), method=method)
        if mode == "die" and rank == world - 1:
            os._exit(3)  # a rank that dies after setup, before the first product
        before = [p.to_local().clone() for p in model.parameters()]
        out = compute(A, A.space.local)
        out["fd_error_top"] = torch.tensor(A.check_fd_error(out["vectors"][:, :1]))  # along the top eigenvector
        if A.method == "fd":  # the step from global quantities: the single-process rule, not a norm-scaled one
            out["fd_step"] = torch.tensor(A._step(A.space.local(probe_vectors(A.shape[0])[:, 0])), dtype=torch.float64)
        out["restored"] = all(torch.equal(b, p.to_local()) for b, p in zip(before, model.parameters()))
        out["grads_untouched"] = all(p.grad is None for p in model.parameters())
        out["hv"] = A.space.gather(out["hv"])
        out["xdiag"] = A.space.gather(out["xdiag"])
        out["vectors"] = gather_vectors(out["vectors"], A.space, dst=None)
        out["fd_error"] = torch.tensor(A.fd_error if A.fd_error is not None else 0.0)
        out["local_dim"] = torch.tensor(A.space.local_dim)
        out["method"] = A.method
    except Exception as err:  # a survivor must fail with a clear error, not hang
        with open(os.path.join(outdir, f"error{rank}.txt"), "w") as fh:
            fh.write(f"{type(err).__name__}: {err}\nafter {time.time() - t0:.1f}s\n")
        os._exit(2)
    torch.save(out, os.path.join(outdir, f"rank{rank}.pt"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
