"""Cost of one gradient, one HVP, one GGN-vector product and K-vector block products.

Workloads: MLP 64-512-512-10 on digits (~300k parameters) and a ~1M-parameter CNN, full
dataset (1797 samples) in batches of 512, float32, on the CPU (and CUDA when present).
Ratios are to a plain autograd gradient of the same mean loss, measured in the same run.

    python benchmarks/matvec.py [--workloads mlp-300k cnn-1m] [--repeat 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import environment, table, timeit, workload, write_json
from curvscope import GGN, Hessian
from curvscope.operators.strategies import CACHED


def run(name: str, device: str, repeat: int) -> list[dict]:
    model, loss_fn, batches = workload(name)
    model = model.to(device)
    batches = [(x.to(device), y.to(device)) for x, y in batches]
    N = sum(len(x) for x, _ in batches)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def gradient():
        model.zero_grad()
        for x, y in batches:
            (loss_fn(model(x), y) * (len(x) / N)).backward()
        sync()

    D = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    vecs = {K: torch.randn(D, K, generator=g).to(device) for K in (1, 8, 32)}
    t_grad = timeit(gradient, repeat)["median_s"]
    rows = [
        {
            "workload": name,
            "device": device,
            "D": D,
            "product": "gradient (autograd)",
            "K": 1,
            "seconds": t_grad,
            "per_vector_s": t_grad,
            "x_gradient": 1.0,
        }
    ]
    single = {}
    ops = {
        "hessian": lambda s: Hessian(model, loss_fn, batches, strategy=s, probe=False),
        "ggn": lambda s: GGN(model, loss_fn, batches, strategy=s, probe=False),
    }
    for op_name, make in ops.items():
        strategies = ["auto", "loop", "vmap", "autograd", *CACHED] if op_name == "hessian" else ["auto", "loop", "vmap"]
        for strategy in strategies:
            op = make(strategy)
            for K in (1, 8, 32):
                if strategy == "vmap" and K == 1:
                    continue
                if strategy != "auto" and K == 8:
                    continue
                X = vecs[K][:, 0] if K == 1 else vecs[K]

                def product(op=op, X=X):
                    op @ X
                    sync()

                t = timeit(product, repeat if K == 1 else max(2, repeat // 2))["median_s"]
                if K == 1 and strategy == "auto":
                    single[op_name] = t
                row = {
                    "workload": name,
                    "device": device,
                    "D": D,
                    "product": op_name,
                    "strategy": strategy,
                    "chosen": op.chosen_strategy(K),
                    "K": K,
                    "seconds": t,
                    "per_vector_s": t / K,
                    "x_gradient": t / K / t_grad,
                }
                rows.append(row)
    for row in rows:
        if row["product"] in single:
            row["x_single_auto"] = row["per_vector_s"] / single[row["product"]]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=["mlp-300k", "cnn-1m"])
    parser.add_argument("--device", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    all_rows = []
    for device in args.device:
        for name in args.workloads:
            rows = run(name, device, args.repeat)
            write_json("matvec", f"{name}-{device}", {"environment": environment(), "rows": rows})
            all_rows += rows
    cols = ["workload", "device", "product", "strategy", "chosen", "K", "per_vector_s", "x_gradient", "x_single_auto"]
    print(table(all_rows, cols))


if __name__ == "__main__":
    main()
