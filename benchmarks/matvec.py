"""Cost of one gradient, HVP, GGN / residual / gradient-moment product, and K-vector blocks, side by side with peers.

Workloads: MLP 64-512-512-10 on digits (~300k parameters) and a ~1M-parameter CNN, digits in
batches of 512 (``--samples`` to cut the data on a loaded machine), float32, on the CPU (and CUDA
when present). Every product is built and warmed first (kept graphs and linearisations built,
strategies chosen), then all are timed **interleaved** — one call of each per round — so a load
change on a shared machine hits them alike; the table gives medians and the ratio to a plain
autograd gradient of the same mean loss measured in the same rounds, with the load average.

Peers in the same run: curvlinops ``HessianLinearOperator`` / ``GGNLinearOperator`` and PyHessian's
HVP (its retained full-batch graph when the data is one batch, its data-loader product otherwise).

    python benchmarks/matvec.py [--workloads mlp-300k cnn-1m] [--samples 512] [--repeat 7] [--threads 1] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import environment, loadavg, peer_versions, table, workload, write_json
from curvscope import GGN, GradientMoment, Hessian, Residual


def products(model, loss_fn, batches, device: str, blocks: bool, compiled: bool = False) -> dict:
    """Name -> ``(callable(X), K)``: every product to time, built (and warmed by the caller)."""
    N = sum(len(x) for x, _ in batches)

    def gradient(_X):
        model.zero_grad()
        for x, y in batches:
            (loss_fn(model(x), y) * (len(x) / N)).backward()

    def ours(Op, **kw):
        op = Op(model, loss_fn, batches, probe=False, **kw)
        return lambda X: op @ X, op

    out = {"gradient (autograd)": (gradient, 1, None)}
    for label, Op, kw in [
        ("hessian", Hessian, {}),
        ("hessian rebuilt", Hessian, {"cache_graphs": False}),
        ("ggn", GGN, {}),
        ("ggn double-vjp", GGN, {"strategy": "cached"}),
        ("ggn linearize", GGN, {"strategy": "linearize"}),
        ("ggn rebuilt (before #16)", GGN, {"cache_graphs": False}),
        ("residual", Residual, {}),
        ("gradient moment", GradientMoment, {}),
        *(
            [("hessian compiled", Hessian, {"compile": True}), ("ggn compiled", GGN, {"compile": True})]
            if compiled
            else []
        ),
    ]:
        fn, op = ours(Op, **kw)
        out[label] = (fn, 1, op)
        if blocks and label in ("hessian", "ggn"):
            out[f"{label} K=8"] = (fn, 8, op)
            fn8, op8 = ours(Op, strategy="cached_batched")
            out[f"{label} K=8 batched"] = (fn8, 8, op8)
    try:
        from curvlinops import GGNLinearOperator, HessianLinearOperator

        params = [p for p in model.parameters() if p.requires_grad]
        for label, Cls in (("curvlinops hessian", HessianLinearOperator), ("curvlinops ggn", GGNLinearOperator)):
            A = Cls(model, loss_fn, params, batches, check_deterministic=False)
            out[label] = (lambda X, A=A: A @ X, 1, None)
    except ImportError:
        pass
    try:
        from pyhessian import hessian as PyHessian
        from pyhessian.utils import hessian_vector_product

        model.zero_grad(set_to_none=True)
        if len(batches) == 1:
            hc = PyHessian(model, loss_fn, data=batches[0], cuda=device.startswith("cuda"))
            hv = lambda X, hc=hc: hessian_vector_product(hc.gradsH, hc.params, unflat(hc.params, X))  # noqa: E731
            out["pyhessian hessian (kept graph)"] = (hv, 1, None)
        else:
            hc = PyHessian(model, loss_fn, dataloader=batches, cuda=device.startswith("cuda"))
            hv = lambda X, hc=hc: hc.dataloader_hv_product(unflat(hc.params, X))  # noqa: E731
            out["pyhessian hessian (loader)"] = (hv, 1, None)
    except ImportError:
        pass
    return out


def unflat(params, x):
    out, start = [], 0
    for p in params:
        out.append(x[start : start + p.numel()].view_as(p))
        start += p.numel()
    return out


def run(name: str, device: str, repeat: int, samples: int | None, blocks: bool, compiled: bool = False) -> list[dict]:
    model, loss_fn, batches = workload(name, num_samples=samples)
    model = model.to(device)
    batches = [(x.to(device), y.to(device)) for x, y in batches]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    D = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    vecs = {K: torch.randn(D, K, generator=g).to(device) for K in (1, 8)}
    todo = products(model, loss_fn, batches, device, blocks, compiled)
    for fn, K, _ in todo.values():  # warm-up: kept graphs / linearisations built, strategies chosen
        fn(vecs[K][:, 0] if K == 1 else vecs[K])
    times = {label: [] for label in todo}
    load_before = loadavg()
    for _ in range(repeat):
        for label, (fn, K, _) in todo.items():
            X = vecs[K][:, 0] if K == 1 else vecs[K]
            sync()
            t0 = time.perf_counter()
            fn(X)
            sync()
            times[label].append(time.perf_counter() - t0)
    t_grad = statistics.median(times["gradient (autograd)"])
    rows = []
    for label, (_, K, op) in todo.items():
        t = statistics.median(times[label])
        rows.append(
            {
                "workload": name,
                "device": device,
                "D": D,
                "batches": len(batches),
                "product": label,
                "chosen": op.chosen_strategy(K) if op is not None else None,
                "K": K,
                "per_vector_s": t / K,
                "x_gradient": t / K / t_grad,
                "runs_s": times[label],
                "load_before": load_before,
                "load_after": loadavg(),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=["mlp-300k", "cnn-1m"])
    parser.add_argument("--device", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--samples", type=int, default=None, help="use the first N digits (default: all 1797)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-blocks", dest="blocks", action="store_false", help="skip the K=8 block products")
    parser.add_argument("--compile", action="store_true", help="add compile=True products (slow to compile)")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    all_rows = []
    for device in args.device:
        for name in args.workloads:
            rows = run(name, device, args.repeat, args.samples, args.blocks, args.compile)
            env = {**environment(), "peers": peer_versions()}
            write_json("matvec", f"{name}-{device}", {"environment": env, "rows": rows})
            all_rows += rows
    cols = ["workload", "device", "batches", "product", "chosen", "K", "per_vector_s", "x_gradient", "load_after"]
    print(table(all_rows, cols))


if __name__ == "__main__":
    main()
