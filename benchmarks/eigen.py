"""Eigenvalues, densities and traces side by side: curvscope vs PyHessian, curvlinops (ARPACK), hessian-eigenthings.

One process, same model, same data (one batch), same dtype and tolerance for every method:

- (a) ``top1`` / ``top20``: the largest eigenvalues to relative error 1e-6 — products and wall time;
- (b) ``density``: SLQ/KPM at equal products — wall time, W1 to the exact spectrum (where
  known), error of the largest node;
- (c) ``trace``: estimators at equal products — RMS relative error over 5 seeds (exact
  trace known only on the small MLP).

Workloads (``benchmarks/common.py``, each trained a few epochs on digits first):
``mlp-small`` (64-32-32-10, float64, 1024 samples, exact dense reference),
``mlp-300k`` (64-512-512-10, float64, 256 samples), ``cnn-1m`` (~1M parameters, float32,
128 samples; reference eigenvalues in float64). Reference eigenvalues of the large
workloads come from ARPACK at tol=1e-12 on a float64 curvscope operator.

Wall time covers the algorithm only: each method's operator is built and given one
warm-up product before the clock starts (curvscope's operator also calibrates its block
strategy then), and ``--repeat N`` keeps the fastest of N runs. Products are counted at
the operator boundary (columns of ``A @ X``). On a shared machine the wall time is noisy;
``cpu_seconds`` (process CPU time, all threads) is reported beside it as the steadier
measure. Peers run with ``torch.set_default_dtype`` set to the workload dtype (PyHessian
draws its vectors with the default dtype). PyHessian 0.1's
``density`` calls ``torch.eig``, removed from torch; it is run once as is (to record the
failure) and once with a shim mapping ``torch.eig`` to ``torch.linalg.eigh``. curvlinops'
``to_scipy`` hands ARPACK float64 arrays, so its Krylov arithmetic is float64 even on a
float32 model; on float32 workloads curvscope is also run with ``work_dtype=torch.float64``.

    python benchmarks/eigen.py [--workloads mlp-small mlp-300k cnn-1m] [--tasks top1 top20 density trace]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, digits, environment, table, workload, write_json
from curvscope.linalg import eigsh, spectral_density, trace, wasserstein1
from curvscope.operators import Hessian

TOL = 1e-6
FOLDER = "eigen"
SPEC = {  # name -> dtype, Hessian samples, training epochs, density probes x steps
    "mlp-small": dict(dtype=torch.float64, samples=1024, epochs=5, probes=10, steps=80),
    "mlp-300k": dict(dtype=torch.float64, samples=256, epochs=2, probes=10, steps=80),
    "cnn-1m": dict(dtype=torch.float32, samples=128, epochs=2, probes=5, steps=60),
}


# ----------------------------------------------------------------------------- helpers
class Counted:
    """Any protocol operator, counting product columns."""

    def __init__(self, A):
        self.A, self.count = A, 0
        self.shape, self.dtype, self.device = A.shape, A.dtype, A.device

    def __matmul__(self, X):
        self.count += 1 if X.ndim == 1 else X.shape[1]
        return self.A @ X


def counted_scipy(S):
    import scipy.sparse.linalg as sla

    box = {"count": 0}

    def mm(x):
        box["count"] += 1 if x.ndim == 1 else x.shape[1]
        return S @ x

    return sla.LinearOperator(S.shape, matvec=mm, matmat=mm, rmatvec=mm, dtype=S.dtype), box


@contextlib.contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@contextlib.contextmanager
def pyhessian_counter():
    """Count PyHessian's products by wrapping its module-level HVP (behaviour unchanged)."""
    import pyhessian  # noqa: F401  (the package's `hessian` class shadows its module)

    ph = sys.modules["pyhessian.hessian"]
    box, orig = {"count": 0}, ph.hessian_vector_product

    def counting(*args, **kwargs):
        box["count"] += 1
        return orig(*args, **kwargs)

    ph.hessian_vector_product = counting
    try:
        yield box
    finally:
        ph.hessian_vector_product = orig


@contextlib.contextmanager
def torch_eig_shim():
    """``torch.eig(T, eigenvectors=True)`` as removed from torch, via ``eigh`` (T is symmetric)."""

    def eig(T, eigenvectors=False):
        w, V = torch.linalg.eigh(T)
        return torch.stack([w, torch.zeros_like(w)], 1), V

    orig = getattr(torch, "eig", None)  # torch >= 2 keeps a stub that raises
    torch.eig = eig
    try:
        yield
    finally:
        if orig is None:
            del torch.eig
        else:
            torch.eig = orig


def counted_curvlinops(A):
    box, orig = {"count": 0}, A._matmat

    def mm(X):
        box["count"] += X[0].shape[-1]
        return orig(X)

    A._matmat = mm
    return box


def train(model, name, dtype, epochs):
    x, y = digits(dtype, images=name.startswith("cnn"))
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    for p in model.parameters():
        p.grad = None
    return model


def build(name):
    spec = SPEC[name]
    model, loss_fn, batches = workload(name, spec["dtype"], batch_size=spec["samples"], num_samples=spec["samples"])
    train(model, name, spec["dtype"], spec["epochs"])
    return model, loss_fn, batches


def reference(name, model, loss_fn, batches):
    """Exact spectrum (small) or top-20 by ARPACK at tol=1e-12 on a float64 operator; exact trace when known.

    Cached in the results folder, keyed by the workload spec and a parameter checksum.
    """
    from curvscope.io import load_tensors, save_tensors

    key = f"{SPEC[name]}|{sum(float(p.detach().double().sum()) for p in model.parameters()):.12e}"
    path = RESULTS / FOLDER / f"reference_{name}.safetensors"
    if path.exists():
        t, meta = load_tensors(path)
        if meta.get("key") == key:
            return {"top": t["top"], "all": t.get("all"), "trace": meta["trace"]}
    ref = _reference(name, model, loss_fn, batches)
    tensors = {k: v for k, v in (("top", ref["top"]), ("all", ref["all"])) if v is not None}
    save_tensors(path, tensors, {"key": key, "trace": ref["trace"]})
    return ref


def _reference(name, model, loss_fn, batches):
    import copy

    import scipy.sparse.linalg as sla

    if name == "mlp-small":
        from curvscope.operators.dense import dense_hessian

        lam = torch.linalg.eigvalsh(dense_hessian(model, loss_fn, batches)).flip(0)
        return {"top": lam[:20].clone(), "all": lam, "trace": float(lam.sum())}
    m64 = copy.deepcopy(model).double()
    b64 = [(x.double(), y) for x, y in batches]
    H = Hessian(m64, loss_fn, b64).to_scipy()
    v0 = np.random.RandomState(0).randn(H.shape[0])
    top = sla.eigsh(H, 20, which="LA", tol=1e-12, v0=v0, return_eigenvectors=False)
    return {"top": torch.tensor(np.sort(top)[::-1].copy()), "all": None, "trace": None}


REPEAT = 1
ONLY: list[str] = []


def selected(method: str) -> bool:
    return not ONLY or any(s in method for s in ONLY)


def measure(method):
    """Time ``method``: ``setup = method()`` (untimed: operator construction, warm-up) returns ``run``.

    ``run`` is timed ``REPEAT`` times, each after a fresh setup; results come from the first
    run, the wall time is the minimum (robust to a busy machine). A failure is a result.
    """
    times, cpu, out, error = [], [], None, None
    load = os.getloadavg()[0]
    for _ in range(REPEAT):
        t0 = c0 = math.nan
        try:
            run = method()
            t0, c0 = time.perf_counter(), time.process_time()
            res = run()
        except Exception as err:  # a peer failing is a result
            res, error = {}, f"{type(err).__name__}: {err}".splitlines()[0][:200]
            traceback.print_exc(limit=2)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        out = res if out is None else out
        if error:
            break
    out["seconds"], out["seconds_all"], out["error"] = min(times), times, error
    out["cpu_seconds"], out["cpu_seconds_all"] = min(cpu), cpu
    out["loadavg_1min"] = (load, os.getloadavg()[0])
    return out


def params_of(model):
    return [p for p in model.parameters() if p.requires_grad]


class Ours:
    """One curvscope Hessian per workload, warmed up (strategy calibration, determinism probe) before any timing."""

    def __init__(self, model, loss_fn, batches):
        self.H = Hessian(model, loss_fn, batches)
        D = self.H.shape[0]
        g = torch.Generator().manual_seed(0)
        for K in (1, 1, 10, 32):  # after the probe (first product) calibration runs again with retained graphs
            self.H @ torch.randn(D, K, generator=g, dtype=torch.float64).to(self.H.dtype)

    def counted(self):
        return Counted(self.H)


def curvlinops_op(model, loss_fn, batches):
    from curvlinops import HessianLinearOperator

    A = HessianLinearOperator(model, loss_fn, params_of(model), batches)
    A @ torch.ones(A.shape[1], dtype=A.dtype)  # warm-up
    return A


def eigenthings_op(model, loss_fn, batches):
    import hessian_eigenthings as he

    class CountingOp(he.HessianOperator):
        count = 0

        def matvec(self, v):
            self.count += 1
            return super().matvec(v)

    return CountingOp(model, batches, he.supervised_loss(loss_fn))


def pyhessian_op(model, loss_fn, batch, dtype):
    from pyhessian import hessian

    model.zero_grad(set_to_none=True)
    with default_dtype(dtype):
        return hessian(model, loss_fn, data=batch, cuda=False)


# ------------------------------------------------------------------------------- tasks
def topk_methods(ours, model, loss_fn, batches, k, dtype):
    def mine(residuals, work_dtype="auto"):
        def setup():
            C = ours.counted()

            def run():
                r = eigsh(C, k, "LA", tol=TOL, seed=0, residuals=residuals, progress=False, work_dtype=work_dtype)
                # "claimed": pairs that met tol by the kind of residual used (an estimate for residuals="estimated")
                return {
                    "values": r.eigenvalues,
                    "matvecs": C.count,
                    "status": r.status,
                    "claimed": int(r.within_tol.sum()),
                }

            return run

        return setup

    def arpack():
        import scipy.sparse.linalg as sla

        L, box = counted_scipy(curvlinops_op(model, loss_fn, batches).to_scipy())
        v0 = np.random.RandomState(0).randn(L.shape[0])

        def run():
            vals = sla.eigsh(L, k, which="LA", tol=TOL, v0=v0, return_eigenvectors=False)
            return {"values": torch.tensor(np.sort(vals)[::-1].copy()), "matvecs": box["count"], "status": "returned"}

        return run

    def pyhessian():
        hc = pyhessian_op(model, loss_fn, batches[0], dtype)

        def run():
            with default_dtype(dtype), pyhessian_counter() as box:
                torch.manual_seed(0)
                vals, _ = hc.eigenvalues(maxIter=100, tol=TOL, top_n=k)
            return {"values": torch.tensor(sorted(vals, reverse=True)), "matvecs": box["count"], "status": "returned"}

        return run

    def eigenthings(max_iter):
        def setup():
            import hessian_eigenthings as he

            op = eigenthings_op(model, loss_fn, batches)

            def run():
                r = he.lanczos(op, k=k, max_iter=max_iter, which="LA", tol=TOL, seed=0)
                vals = torch.sort(r.eigenvalues.double(), descending=True).values
                return {"values": vals, "matvecs": op.count, "status": "returned", "claimed": int(r.converged.sum())}

            return run

        return setup

    wide = {}
    if dtype != torch.float64:  # ARPACK through SciPy works in float64: compare like with like too
        wide = {
            "curvscope eigsh (certified, f64 Krylov)": mine("true", torch.float64),
            "curvscope eigsh (estimated, f64 Krylov)": mine("estimated", torch.float64),
        }
    return {
        "curvscope eigsh (certified)": mine("true"),
        "curvscope eigsh (estimated)": mine("estimated"),
        **wide,
        "curvlinops + ARPACK": arpack,
        "pyhessian power iter.": pyhessian,
        "eigenthings lanczos (default)": eigenthings(None),
        "eigenthings lanczos (100 steps)": eigenthings(100),
    }


def density_methods(ours, model, loss_fn, batches, P, m, dtype, seed=0):
    def mine(method):
        def setup():
            C = ours.counted()

            def run():
                if method == "slq":
                    d = spectral_density(C, "slq", P, m, seed=seed, progress=False)
                    return {"nodes": d.nodes, "weights": d.weights, "matvecs": C.count, "status": d.status}
                d = spectral_density(C, "kpm", P, m - 2, seed=seed, range_steps=2 * P, progress=False)
                return {"density": d, "matvecs": C.count, "status": d.status}

            return run

        return setup

    def pyhessian(shim):
        def setup():
            hc = pyhessian_op(model, loss_fn, batches[0], dtype)

            def run():
                ctx = torch_eig_shim() if shim else contextlib.nullcontext()
                with default_dtype(dtype), pyhessian_counter() as box, ctx:
                    torch.manual_seed(seed)
                    nodes, weights = hc.density(iter=m, n_v=P)
                return {"nodes": torch.tensor(nodes), "weights": torch.tensor(weights), "matvecs": box["count"]}

            return run

        return setup

    def eigenthings():
        import hessian_eigenthings as he

        op = eigenthings_op(model, loss_fn, batches)

        def run():
            r = he.spectral_density(op, num_runs=P, lanczos_steps=m, seed=seed)
            nodes = torch.nan_to_num(r.raw_eigenvalues.double(), nan=0.0)
            return {"nodes": nodes, "weights": r.raw_weights.double(), "matvecs": op.count}

        return run

    def curvlinops():
        import curvlinops.papyan2020traces.spectrum as sp

        A = curvlinops_op(model, loss_fn, batches)
        box, runs = counted_curvlinops(A), []

        def run():
            orig = sp.fast_lanczos

            def spy(*args, **kwargs):  # record the quadrature it computes (behaviour unchanged)
                out = orig(*args, **kwargs)
                runs.append(out)
                return out

            sp.fast_lanczos = spy
            try:
                torch.manual_seed(seed)
                sp.lanczos_approximate_spectrum(A, ncv=m, num_repeats=P)
            finally:
                sp.fast_lanczos = orig
            nodes = torch.stack([e.double() for e, _ in runs])
            weights = torch.stack([(V[0] ** 2).double() for _, V in runs])
            return {"nodes": nodes, "weights": weights, "matvecs": box["count"]}

        return run

    return {
        "curvscope SLQ (block)": mine("slq"),
        "curvscope KPM": mine("kpm"),
        "pyhessian density (as is)": pyhessian(False),
        "pyhessian density (eig shim)": pyhessian(True),
        "eigenthings spectral_density": eigenthings,
        "curvlinops papyan spectrum": curvlinops,
    }


def trace_methods(ours, model, loss_fn, batches, M, dtype, seed):
    def mine(method):
        def setup():
            C = ours.counted()
            return lambda: (lambda r: {"estimate": r.estimate, "stderr": r.stderr, "matvecs": C.count})(
                trace(C, method, M, seed=seed)
            )

        return setup

    def cl(fn_name):
        def setup():
            import curvlinops

            A = curvlinops_op(model, loss_fn, batches)
            box = counted_curvlinops(A)

            def run():
                torch.manual_seed(seed)
                return {"estimate": float(getattr(curvlinops, fn_name)(A, M)), "matvecs": box["count"]}

            return run

        return setup

    def et(method):
        def setup():
            import hessian_eigenthings as he

            op = eigenthings_op(model, loss_fn, batches)

            def run():
                r = he.trace(op, num_matvecs=M, method=method, seed=seed)
                return {"estimate": r.estimate, "stderr": r.stderr, "matvecs": op.count}

            return run

        return setup

    def pyhessian():
        hc = pyhessian_op(model, loss_fn, batches[0], dtype)

        def run():
            with default_dtype(dtype), pyhessian_counter() as box:
                torch.manual_seed(seed)
                samples = hc.trace(maxIter=M, tol=0.0)
            return {"estimate": float(np.mean(samples)), "matvecs": box["count"]}

        return run

    return {
        "curvscope hutchinson": mine("hutchinson"),
        "curvscope hutch++": mine("hutch++"),
        "curvscope xtrace": mine("xtrace"),
        "curvlinops hutchinson": cl("hutchinson_trace"),
        "curvlinops hutch++": cl("hutchpp_trace"),
        "curvlinops xtrace": cl("xtrace"),
        "eigenthings hutchinson": et("hutchinson"),
        "eigenthings hutch++": et("hutch++"),
        "pyhessian trace": pyhessian,
    }


def product_costs(ours, model, loss_fn, batches, dtype, rounds=3, reps=5):
    """CPU seconds per product of each library's operator, interleaved over ``rounds`` (minimum kept).

    Explains the wall times: every method above is (products) x (this) + its own overhead.
    """
    import hessian_eigenthings as he
    import pyhessian.utils as phu

    D = ours.H.shape[0]
    g = torch.Generator().manual_seed(1)
    v = torch.randn(D, generator=g, dtype=torch.float64).to(dtype)
    V = torch.randn(D, 10, generator=g, dtype=torch.float64).to(dtype)
    cl = curvlinops_op(model, loss_fn, batches)
    et = he.HessianOperator(model, batches, he.supervised_loss(loss_fn))
    hc = pyhessian_op(model, loss_fn, batches[0], dtype)
    vs = [t.reshape(p.shape) for t, p in zip(torch.split(v, [p.numel() for p in hc.params]), hc.params)]
    plain = Hessian(model, loss_fn, batches, cache_graphs=False)  # every product from scratch
    for K in (1, 1, 10):
        plain @ V[:, :K]
    cands = {
        "curvscope Hessian, 1 vector": (lambda: ours.H @ v, 1),
        "curvscope Hessian without retained graphs, 1 vector": (lambda: plain @ v, 1),
        "curvscope Hessian, block of 10 (per vector)": (lambda: ours.H @ V, 10),
        "curvlinops HessianLinearOperator, 1 vector": (lambda: cl @ v, 1),
        "curvlinops HessianLinearOperator, block of 10 (per vector)": (lambda: cl @ V, 10),
        "hessian-eigenthings HessianOperator, 1 vector": (lambda: et.matvec(v), 1),
        "pyhessian (retained graph), 1 vector": (lambda: phu.hessian_vector_product(hc.gradsH, hc.params, vs), 1),
    }
    best = dict.fromkeys(cands, math.inf)
    for _ in range(rounds):
        for name, (fn, width) in cands.items():
            fn()
            c0 = time.process_time()
            for _ in range(reps):
                fn()
            best[name] = min(best[name], (time.process_time() - c0) / (reps * width))
    model.zero_grad(set_to_none=True)
    return best


# --------------------------------------------------------------------------------- run
DENSITY_SEEDS = 5


def rel_err(values, ref):
    if values is None or len(values) < len(ref):
        return math.inf
    v = torch.as_tensor(values, dtype=torch.float64)[: len(ref)]
    return float(((v - ref).abs() / ref.abs()).max())


def run_workload(name, tasks, rows):
    spec = SPEC[name]
    t0 = time.perf_counter()
    model, loss_fn, batches = build(name)
    D = sum(p.numel() for p in model.parameters())
    ref = reference(name, model, loss_fn, batches)
    ours = Ours(model, loss_fn, batches)
    print(f"\n== {name}: D={D}, {spec['dtype']}, {spec['samples']} samples, setup {time.perf_counter() - t0:.1f}s")
    base = {"workload": name, "D": D, "dtype": str(spec["dtype"]), "samples": spec["samples"], "tol": TOL}

    def record(task, method, out, extra):
        row = {**base, "task": task, "method": method, "matvecs": out.get("matvecs"), "seconds": out["seconds"]}
        for key in ("seconds_all", "cpu_seconds", "cpu_seconds_all", "loadavg_1min"):
            row[key] = out.get(key)
        row.update(extra)
        row["note"] = out.get("error") or out.get("status") or ""
        rows.append(row)
        payload = {**row, "environment": environment(), "reference_top": ref["top"]}
        slug = re.sub(r"[^a-z0-9]+", "-", method.lower()).strip("-")
        write_json(FOLDER, f"{name}__{task}__{slug}", payload)
        print("  ".join(f"{c}={row.get(c)}" for c in COLUMNS[1:] if row.get(c) is not None), flush=True)

    if "products" in tasks:
        for method, cost in product_costs(ours, model, loss_fn, batches, spec["dtype"]).items():
            if selected(method):
                record("products", method, {"seconds": cost, "matvecs": 1}, {"cpu_s_per_product": cost})

    for k in (1, 20):
        task = f"top{k}"
        if task not in tasks:
            continue
        for method, fn in topk_methods(ours, model, loss_fn, batches, k, spec["dtype"]).items():
            if not selected(method):
                continue
            out = measure(fn)
            extra = {"rel_err": rel_err(out.get("values"), ref["top"][:k])}
            if "claimed" in out:
                extra["claimed_converged"] = out["claimed"]
            record(task, method, out, extra)

    if "density" in tasks:
        P, m = spec["probes"], spec["steps"]
        span = float(ref["all"][0] - ref["all"][-1]) if ref["all"] is not None else None
        # W1 of a 10-probe estimate varies with the probes by tens of percent: where the exact
        # spectrum is known, every method runs the same seeds and the mean (and spread) is compared
        seeds = range(DENSITY_SEEDS) if ref["all"] is not None else range(1)
        names = list(density_methods(ours, model, loss_fn, batches, P, m, spec["dtype"]))
        for method in filter(selected, names):
            outs, w1s, tops = [], [], []
            for seed in seeds:
                out = measure(density_methods(ours, model, loss_fn, batches, P, m, spec["dtype"], seed)[method])
                outs.append(out)
                if "density" in out:  # KPM
                    d = out.pop("density")
                    if ref["all"] is not None:
                        w1s.append(d.wasserstein(ref["all"]) / span)
                elif "nodes" in out:
                    nodes, weights = out["nodes"].double(), out["weights"].double()
                    if ref["all"] is not None:
                        w1s.append(wasserstein1(nodes, weights, ref["all"]) / span)
                    tops.append(abs(float(nodes.max()) - float(ref["top"][0])) / float(ref["top"][0]))
            out = {k: v for k, v in outs[0].items() if k not in ("nodes", "weights")}
            for key in ("seconds", "cpu_seconds"):
                if all(key in o for o in outs):
                    out[key] = sum(o[key] for o in outs) / len(outs)
            extra = {"probes_x_steps": f"{P}x{m}", "seeds": len(outs)}
            if w1s:
                extra.update(w1_rel=float(np.mean(w1s)), w1_rel_per_seed=w1s, w1_rel_std=float(np.std(w1s)))
            if tops:
                extra["top_node_err"] = max(tops)
            record("density", method, out, extra)

    if "trace" in tasks and ref["trace"] is not None:  # errors need the exact trace
        M, seeds = 60, range(5)
        names = list(trace_methods(ours, model, loss_fn, batches, M, spec["dtype"], 0))
        for method in filter(selected, names):
            outs = [measure(trace_methods(ours, model, loss_fn, batches, M, spec["dtype"], s)[method]) for s in seeds]
            est = [o.get("estimate") for o in outs]
            out = {"matvecs": outs[0].get("matvecs")}
            for key in ("seconds", "cpu_seconds"):
                out[key] = sum(o[key] for o in outs) / len(outs)
            out["error"] = next((o["error"] for o in outs if o["error"]), None)
            extra = {"estimates": est}
            if ref["trace"] is not None and None not in est:
                extra["rel_err"] = math.sqrt(np.mean([(e - ref["trace"]) ** 2 for e in est])) / abs(ref["trace"])
            record("trace", method, out, extra)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=list(SPEC), choices=list(SPEC))
    ap.add_argument("--tasks", nargs="+", default=["products", "top1", "top20", "density", "trace"])
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement; the minimum wall time is kept")
    ap.add_argument("--only", nargs="*", default=[], help="run only methods whose name contains one of these")
    args = ap.parse_args()
    global REPEAT, ONLY
    REPEAT, ONLY = max(1, args.repeat), args.only
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    import importlib.metadata as md

    env = environment()
    for pkg in ("pyhessian", "curvlinops-for-pytorch", "hessian-eigenthings", "scipy", "numpy"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = None
    write_json(FOLDER, "environment", env)
    rows = []
    for name in args.workloads:
        run_workload(name, args.tasks, rows)
    print("\n" + table(merged_rows(), COLUMNS))
    print(f"\nJSON in {RESULTS / FOLDER} (the table merges every (workload, task, method) file there)")


COLUMNS = [
    "workload",
    "task",
    "method",
    "matvecs",
    "seconds",
    "cpu_seconds",
    "rel_err",
    "w1_rel",
    "top_node_err",
    "note",
]


def merged_rows() -> list[dict]:
    """Rows of every per-method JSON in the results folder (so partial re-runs with --only merge)."""
    from curvscope.io import read_json

    files = sorted((RESULTS / FOLDER).glob("*__*__*.json"), key=lambda p: p.stat().st_mtime)
    rows = [read_json(p) for p in files]
    tasks = ["products", "top1", "top20", "density", "trace"]
    return sorted(rows, key=lambda r: (list(SPEC).index(r["workload"]), tasks.index(r["task"])))


if __name__ == "__main__":
    main()
