"""Precision of curvature on float32 models (issue 11): float32 vs float64 work dtype vs the float64 model.

For the 301k MLP and the 1M CNN of ``benchmarks/eigen.py`` (same data, same training), with the
trained weights rounded to float32, three configurations are compared in one process:

- ``float32``: the float32 operator, Krylov basis and orthogonalisation in float32 (``work_dtype=None``);
- ``float32 + f64 work``: the float32 operator, basis in float64 (``work_dtype=torch.float64``, what
  ``"auto"`` picks when the basis fits);
- ``float64 model``: the same float32 weights and data cast to float64 (the reference).

Two tasks each: ``top20`` (``eigsh(k=20, which="LA")`` with the default tolerance and residual
certification: status, products, wall and CPU time, relative eigenvalue error against the
float64 model's certified values) and ``slq`` (``spectral_density`` with the same probes: wall and
CPU time, W1 distance to the float64 model's quadrature relative to its spectral span, and the
top Ritz node's relative difference). Each configuration builds a fresh operator whose probe
(determinism + noise floor) is done before the clock starts.

    python benchmarks/precision.py [--workloads mlp-300k cnn-1m] [--probes 5] [--steps 50] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, environment, loadavg, peer_versions, table, write_json
from curvscope import Hessian, eigsh, spectral_density
from curvscope.io import read_json

F64 = torch.float64
FOLDER = "."
NAME = "precision"
CONFIGS = {  # name -> (model dtype, work dtype)
    "float32": (torch.float32, None),
    "float32 + f64 work": (torch.float32, F64),
    "float64 model": (F64, F64),
}


def models(name: str):
    """The eigen.py workload, trained, with its weights rounded to float32; data in float32 and float64."""
    import eigen

    model, loss_fn, batches = eigen.build(name)
    m32 = copy.deepcopy(model).float()
    b32 = [(x.float(), y) for x, y in batches]
    return m32, loss_fn, b32


def quadrature_w1(n1, w1, n2, w2) -> float:
    """``∫ |F₁ − F₂|`` between two discrete measures (weights normalised)."""
    x = torch.cat([n1.flatten(), n2.flatten()]).double()
    w = torch.cat([w1.flatten().double() / w1.sum(), -w2.flatten().double() / w2.sum()])
    order = torch.argsort(x)
    x, cdf = x[order], torch.cumsum(w[order], 0)
    return float((cdf[:-1].abs() * (x[1:] - x[:-1])).sum())


def timed(fn):
    load = loadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "loadavg": load}


def run_workload(name: str, k: int, probes: int, steps: int, rows: list) -> dict:
    m32, loss_fn, b32 = models(name)
    D = sum(p.numel() for p in m32.parameters())
    print(f"\n== {name}: D={D}, {sum(len(x) for x, _ in b32)} samples", flush=True)
    raw = {}
    for cfg, (dtype, work) in CONFIGS.items():
        model = copy.deepcopy(m32).to(dtype)
        data = [(x.to(dtype), y) for x, y in b32]
        H = Hessian(model, loss_fn, data)
        floor = H.noise_floor  # the probe, before the clock
        top, t_top = timed(lambda H=H, work=work: eigsh(H, k=k, which="LA", seed=0, progress=False, work_dtype=work))
        dens, t_slq = timed(
            lambda H=H, work=work: spectral_density(H, "slq", probes, steps, seed=0, progress=False, work_dtype=work)
        )
        raw[cfg] = {"top": top, "dens": dens, "t_top": t_top, "t_slq": t_slq, "noise_floor": floor}
        print(
            f"  {cfg}: top{k} {t_top['seconds']:.1f}s {top.status} ({top.num_matvecs} products), "
            f"slq {t_slq['seconds']:.1f}s",
            flush=True,
        )
    ref = raw["float64 model"]
    lam_ref = ref["top"].eigenvalues.double()
    n_ref, w_ref = ref["dens"].nodes.double(), ref["dens"].weights.double()
    span = float(n_ref.max() - n_ref.min())
    out = {"D": D, "configs": {}}
    for cfg, r in raw.items():
        top, dens = r["top"], r["dens"]
        lam = top.eigenvalues.double()
        rel = ((lam - lam_ref).abs() / lam_ref.abs()).max().item()
        w1 = quadrature_w1(dens.nodes, dens.weights, n_ref, w_ref) / span
        top_node = abs(float(dens.nodes.max()) - float(n_ref.max())) / abs(float(n_ref.max()))
        rec = {
            "noise_floor": r["noise_floor"],
            "top": {
                "status": str(top.status),
                "num_converged": int(top.converged.sum()),
                "num_matvecs": top.num_matvecs,
                "tol": top.tol,
                "tol_reason": top.tol_reason,
                "rel_err_vs_f64_model": rel,
                "eigenvalues": lam.tolist(),
                **r["t_top"],
            },
            "slq": {
                "status": str(dens.status),
                "num_matvecs": dens.num_matvecs,
                "w1_rel_vs_f64_model": w1,
                "top_ritz_rel_diff": top_node,
                "negative_mass": dens.negative_mass().value,
                "resolution": dens.resolution,
                **r["t_slq"],
            },
        }
        out["configs"][cfg] = rec
        base = {"workload": name, "D": D, "config": cfg}
        rows.append(
            {
                **base,
                "task": f"top{k}",
                "status": rec["top"]["status"],
                "matvecs": top.num_matvecs,
                "seconds": r["t_top"]["seconds"],
                "cpu_seconds": r["t_top"]["cpu_seconds"],
                "rel_err": rel,
                "tol": top.tol,
            }
        )
        rows.append(
            {
                **base,
                "task": f"slq {probes}x{steps}",
                "status": rec["slq"]["status"],
                "matvecs": dens.num_matvecs,
                "seconds": r["t_slq"]["seconds"],
                "cpu_seconds": r["t_slq"]["cpu_seconds"],
                "w1_rel": w1,
                "top_ritz_diff": top_node,
            }
        )
    return out


COLUMNS = [
    "workload",
    "task",
    "config",
    "status",
    "matvecs",
    "seconds",
    "cpu_seconds",
    "rel_err",
    "tol",
    "w1_rel",
    "top_ritz_diff",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=["mlp-300k", "cnn-1m"])
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--probes", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--fresh", action="store_true", help="drop the other workloads' results from the JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    env = {**environment(), **peer_versions(), "loadavg_start": loadavg()}
    path = RESULTS / FOLDER / f"{NAME}.json"
    saved = read_json(path) if path.exists() and not args.fresh else {}
    results, rows = saved.get("workloads", {}), saved.get("rows", [])  # other workloads' earlier runs are kept
    for name in args.workloads:
        rows = [r for r in rows if r["workload"] != name]
        results[name] = run_workload(name, args.k, args.probes, args.steps, rows)
        results[name].update(k=args.k, probes=args.probes, steps=args.steps, environment=env, loadavg_end=loadavg())
        write_json(FOLDER, NAME, {"workloads": results, "rows": rows})
    print("\n" + table(rows, COLUMNS))
    print(f"\nJSON in {Path(__file__).resolve().parent / 'results' / (NAME + '.json')}")


if __name__ == "__main__":
    main()
