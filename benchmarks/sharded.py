"""Sharded curvature (FSDP2) of a GPT-2-shaped model on 1, 2 and 4 gloo ranks: wall time and memory per rank.

For each world size W and product method (``exact``: an unsharded replica per rank and the
data-parallel Hessian; ``fd``: finite differences of FSDP's own sharded gradients) the script starts
W processes on this machine; each wraps a byte-level GPT-2 with ``fully_shard`` per block, holds
1/W of the sequences, and runs top-k ``eigsh`` and an SLQ density (``probes x steps``). Per rank it
records the wall time of each, the Krylov basis bytes, and the peak resident memory (``ru_maxrss``)
above the process's footprint before the model was built. JSON in ``benchmarks/results/sharded/``
(one file per W and method), then a table.

The defaults are the issue's (~25M parameters, top-5, SLQ 4x40, probes one block at a time so the
ranks of one machine fit its memory together); on a shared 2-core CPU pass
smaller ``--width/--layers`` and budgets. Every rank runs the same algorithm; the ranks share the
machine's cores, so on CPU the wall time measures the extra communication and replicated work,
not a speed-up.

    python benchmarks/sharded.py --world 1 2 4 --methods exact fd
    python benchmarks/sharded.py --width 128 --layers 2 --seq 32 --steps 10 --eig-matvecs 60   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, loadavg, table, write_json


def rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def worker(args) -> None:
    """One rank: build, wrap, measure; writes ``rank{r}.json`` into ``args.outdir``."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from curvscope import eigsh, spectral_density
    from curvscope.distributed import ShardedCurvature, shard_batches
    from curvscope.models.hf import byte_gpt2

    torch.set_num_threads(max(1, args.threads))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=args.rank,
                            world_size=args.world, timeout=timedelta(seconds=args.timeout))  # fmt: skip
    base = rss_bytes()
    model = byte_gpt2(args.seq, args.width, args.layers, args.heads)
    model.config._attn_implementation = "eager"
    model = model.to(getattr(torch, args.dtype))
    D = sum(p.numel() for p in model.parameters())
    for block in model.transformer.h:
        fully_shard(block)
    fully_shard(model)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (args.batches * args.batch, args.seq), generator=g)
    data = [{"input_ids": ids[i : i + args.batch], "labels": ids[i : i + args.batch]}
            for i in range(0, len(ids), args.batch)]  # fmt: skip
    out = {"rank": args.rank, "world": args.world, "method": args.method, "D": D}
    t0 = time.perf_counter()
    A = ShardedCurvature(model, None, shard_batches(data), method=args.method)
    out["setup_s"], out["local_dim"] = time.perf_counter() - t0, A.space.local_dim
    out["exact_bytes"], out["noise_floor"], out["fd_error"] = A.exact_bytes, A.noise_floor, A.fd_error
    t0, c0 = time.perf_counter(), time.process_time()
    top = eigsh(A, k=args.k, num_matvecs=args.eig_matvecs, seed=0)
    out["eigsh"] = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                    "eigenvalues": top.eigenvalues.tolist(), "residuals": top.residuals.tolist(),
                    "status": str(top.status), "matvecs": top.num_matvecs,
                    "basis_nbytes": top.basis_nbytes}  # fmt: skip
    out["fd_error_first"] = A.fd_error
    out["fd_error_top"] = A.check_fd_error(top.eigenvectors[:, :1])  # along the top eigenvector: the worst case
    t0, c0 = time.perf_counter(), time.process_time()
    # probes in blocks of --slq-block: the SLQ basis is block · (steps + 1) vectors of D/W numbers per rank,
    # and all ranks of this one machine share its memory (4 x 41 float32 vectors of 25M = 16.6 GB)
    dens = spectral_density(A, "slq", num_probes=args.probes, num_steps=args.steps, seed=0, block_size=args.slq_block)
    out["slq"] = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                  "matvecs": dens.num_matvecs, "block_size": args.slq_block,
                  "top_node": float(dens.nodes.max())}  # fmt: skip
    out["peak_rss_above_start"] = rss_bytes() - base
    (Path(args.outdir) / f"rank{args.rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args, world: int, method: str) -> list[dict]:
    """Start ``world`` ranks of this script and collect their JSON."""
    with tempfile.TemporaryDirectory() as outdir:
        port = str(free_port())
        common = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                  if k in ("width", "layers", "heads", "seq", "batch", "batches", "k", "eig_matvecs", "probes",
                           "steps", "threads", "timeout", "dtype", "slq_block")]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", f"--rank={r}", f"--world-size={world}",
                                   f"--port={port}", f"--outdir={outdir}", f"--method={method}", *common], env=env)
                 for r in range(world)]  # fmt: skip
        codes = [p.wait() for p in procs]
        if any(codes):
            raise RuntimeError(f"world {world}, {method}: ranks exited with {codes}")
        return [json.loads((Path(outdir) / f"rank{r}.json").read_text()) for r in range(world)]


def summarise(ranks: list[dict]) -> dict:
    r0 = ranks[0]
    return {"world": r0["world"], "method": r0["method"], "D": r0["D"],
            "eigsh_s": round(r0["eigsh"]["wall_s"], 2), "eigsh_cpu_s": round(r0["eigsh"]["cpu_s"], 1),
            "eigsh_mv": r0["eigsh"]["matvecs"],
            "eigsh_status": r0["eigsh"]["status"], "lambda_max": round(r0["eigsh"]["eigenvalues"][0], 6),
            "slq_s": round(r0["slq"]["wall_s"], 2), "slq_cpu_s": round(r0["slq"]["cpu_s"], 1),
            "basis_MiB": round(max(r["eigsh"]["basis_nbytes"] for r in ranks) / 2**20, 2),
            "peak_MiB": round(max(r["peak_rss_above_start"] for r in ranks) / 2**20, 1),
            "exact_MiB": round(r0["exact_bytes"] / 2**20, 1), "noise_floor": r0["noise_floor"],
            "fd_err_top": r0["fd_error_top"][0]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--world", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--methods", nargs="+", default=["exact", "fd"], choices=["exact", "fd"])
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--batch", type=int, default=2, help="sequences per batch")
    p.add_argument("--batches", type=int, default=4, help="batches in all (round-robin over ranks)")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--eig-matvecs", type=int, default=300)
    p.add_argument("--probes", type=int, default=4)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--slq-block", type=int, default=1, help="SLQ probes per block (memory: block x (steps+1) x D/W)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--world-size", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--port", default="0", help=argparse.SUPPRESS)
    p.add_argument("--outdir", default="", help=argparse.SUPPRESS)
    p.add_argument("--method", default="fd", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.world = args.world_size
        worker(args)
        return
    rows = []
    for method in args.methods:
        for world in args.world:
            load_before = loadavg()
            ranks = launch(args, world, method)
            row = summarise(ranks)
            rows.append(row)
            write_json("sharded", f"gpt2-w{args.width}-l{args.layers}-{args.dtype}-{method}-{world}ranks",
                       {"config": {k: v for k, v in vars(args).items() if k not in ("worker", "rank", "port")},
                        "summary": row, "ranks": ranks, "loadavg_before": load_before, "loadavg_after": loadavg(),
                        "environment": environment()})  # fmt: skip
            print(table([row], list(row)), flush=True)
    print("\n" + table(rows, list(rows[0])))
    print(f"load average {loadavg()}")


if __name__ == "__main__":
    main()
