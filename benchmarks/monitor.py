"""Cost of the curvature monitor (issue 13 §2): training time with and without it, products per λ_max.

Two workloads, one process, one run (the machine may be shared: each workload alternates
segments of plain and monitored training, so both see the same load, and the monitor's own
measured time is reported beside the wall-clock difference):

- (a) a LeNet-5 CNN on Fashion-MNIST (``/usr/share/datasets/fashion-mnist``), batch 128, SGD with
  momentum, ``--epochs`` epochs (``--cnn-samples`` caps the training set for a quick run);
- (b) a small GPT (HF ``GPT2LMHeadModel`` from a config: ``--gpt-layers`` × width ``--gpt-width``,
  byte vocabulary 256) on bytes of the Python standard library's sources, AdamW, ``--gpt-steps``
  steps of batch 16 × 64 tokens (the HF loss convention, ``loss_fn=None``).

The monitor runs at its **default settings** (``every``, ``metrics``, ``tol``) on a probe of two
training batches. Overhead = (monitored − plain) / plain training time, and the monitor's own
time (sum of its measurements' seconds) / plain time. Products: ``lambda_max/matvecs`` of every
measurement (the first is cold: no previous eigenvector), and a cold solve (random start, same
tolerance) at each measured point of the CNN run for comparison.

Usage::

    .venv/bin/python benchmarks/monitor.py                 # full: 3 epochs, 1500 GPT steps
    .venv/bin/python benchmarks/monitor.py --quick         # CPU smoke run: subsets, fewer steps
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, environment, loadavg, table
from curvscope.data import load_dataset
from curvscope.io import atomic_write_json
from curvscope.linalg import eigsh
from curvscope.models import build_model
from curvscope.monitor import CurvatureMonitor
from curvscope.operators import Hessian


def _segments(make_step, steps: int, monitor: CurvatureMonitor | None, segment: int):
    """Generator of per-segment wall times for ``steps`` training steps (monitor.step after each)."""
    step = 0
    while step < steps:
        t0 = time.perf_counter()
        for _ in range(min(segment, steps - step)):
            make_step(step)
            if monitor is not None:
                monitor.step(step)
            step += 1
        yield time.perf_counter() - t0


def compare(name: str, build, steps: int, probe, loss_fn, segment: int) -> dict:
    """Train two identical copies, alternating segments, the second with a default monitor."""
    model_a, step_a = build()
    model_b, step_b = build()
    monitor = CurvatureMonitor(model_b, loss_fn, probe)  # the default settings
    plain, monitored = 0.0, 0.0
    for ta, tb in zip(_segments(step_a, steps, None, segment), _segments(step_b, steps, monitor, segment)):
        plain, monitored = plain + ta, monitored + tb
        print(f"  {name}: plain {plain:.1f}s monitored {monitored:.1f}s", flush=True)
    h = monitor.history
    equal = all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()))
    return {
        "workload": name, "steps": steps, "every": monitor.every, "metrics": [m.name for m in monitor.metrics],
        "step_s": plain / steps, "plain_s": plain, "monitored_s": monitored,
        "overhead_pct": 100 * (monitored - plain) / plain,
        "monitor_own_pct": 100 * sum(r["seconds"] for r in h) / plain,
        "measurements": len(h), "first_s": h[0]["seconds"], "weights_bitwise_equal": equal,
    }  # fmt: skip


def products(name: str, build, probe, loss_fn, steps: int, every: int) -> dict:
    """λ_max products and seconds per measurement every ``every`` steps: the first is cold, the rest warm."""
    model, step = build()
    monitor = CurvatureMonitor(model, loss_fn, probe, every=every)
    for i in range(steps + 1):
        monitor.step(i)
        if i < steps:
            step(i)
    h = monitor.history
    mv, secs = [r["lambda_max/matvecs"] for r in h], [r["seconds"] for r in h]
    warm, warm_s = sorted(mv[1:]), sorted(secs[1:])
    H = Hessian(model, loss_fn, probe, move_batches=True)
    cold_end = eigsh(H, k=1, tol=monitor.options["tol"], seed=123, progress=False).num_matvecs
    print(f"  {name}: products per measurement {mv}", flush=True)
    return {
        "product_every": every, "cold_matvecs": mv[0], "warm_matvecs_median": warm[len(warm) // 2],
        "warm_matvecs_max": warm[-1], "cold_matvecs_at_end": cold_end, "warm_s_median": warm_s[len(warm_s) // 2],
        "all_certified": all(r["lambda_max/status"] == "converged" for r in h),
        "max_rel_residual": max(r["lambda_max/residual"] for r in h), "matvecs": mv,
    }  # fmt: skip


def projected(r: dict, steps: int) -> float:
    """Overhead (%) of the default schedule over ``steps`` training steps, from this run's measured times."""
    n_warm = steps // r["every"]
    return 100 * (r["first_s"] + n_warm * r["warm_s_median"]) / (steps * r["step_s"])


def cnn_workload(args, device):
    data = load_dataset("fashion-mnist")
    n = min(args.cnn_samples or len(data), len(data))
    X, y = data.x[:n].to(device), data.y[:n].to(device)
    B = 128
    per_epoch = (n + B - 1) // B

    def build():
        torch.manual_seed(0)
        model = build_model("lenet", seed=0, device=device)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(0)
        order = []

        def step(i):
            if i % per_epoch == 0:
                order[:] = [torch.randperm(n, generator=g)]
            idx = order[0][(i % per_epoch) * B : (i % per_epoch + 1) * B].to(device)
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()

        return model, step

    probe = [(X[:B], y[:B])]  # one training batch
    return build, per_epoch * args.epochs, probe, nn.CrossEntropyLoss()


def corpus_ids(nbytes: int) -> torch.Tensor:
    """Bytes of the standard library's ``.py`` files (sorted paths), as int64 token ids."""
    root = Path(sysconfig.get_paths()["stdlib"])
    buf = bytearray()
    for path in sorted(root.glob("*.py")):
        buf += path.read_bytes()
        if len(buf) >= nbytes:
            break
    return torch.tensor(list(buf[:nbytes]), dtype=torch.long)


def gpt_workload(args, device):
    import transformers

    T, B = 64, 16
    ids = corpus_ids(T * B * 200).reshape(-1, T).to(device)

    def build():
        torch.manual_seed(0)
        cfg = transformers.GPT2Config(vocab_size=256, n_positions=T, n_embd=args.gpt_width, n_layer=args.gpt_layers,
                                      n_head=4, bos_token_id=0, eos_token_id=0)  # fmt: skip
        model = transformers.GPT2LMHeadModel(cfg).to(device)
        model.config.use_cache = False
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
        g = torch.Generator().manual_seed(0)

        def step(i):
            torch.manual_seed(1000 + i)  # the same dropout masks in both copies at step i (they alternate)
            rows = torch.randint(0, ids.shape[0], (B,), generator=g).to(device)
            batch = ids[rows]
            opt.zero_grad()
            model(input_ids=batch, labels=batch).loss.backward()
            opt.step()

        return model, step

    probe = [{"input_ids": ids[:B], "labels": ids[:B]}]  # one training batch
    return build, args.gpt_steps, probe, None


COLUMNS = ["workload", "steps", "every", "step_s", "plain_s", "monitored_s", "overhead_pct", "monitor_own_pct",
           "projected_steps", "projected_overhead_pct", "cold_matvecs", "warm_matvecs_median", "warm_matvecs_max",
           "cold_matvecs_at_end", "all_certified", "weights_bitwise_equal"]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="CPU smoke run: 200 CNN steps, 200 GPT steps")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--cnn-samples", type=int, default=None)
    p.add_argument("--gpt-steps", type=int, default=1500)
    p.add_argument("--gpt-layers", type=int, default=2)
    p.add_argument("--gpt-width", type=int, default=128)
    p.add_argument("--segment", type=int, default=25, help="steps per alternating segment")
    p.add_argument("--product-steps", type=int, default=100, help="training steps of the products phase")
    p.add_argument("--product-every", type=int, default=20, help="measurement interval of the products phase")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--only", choices=("cnn", "gpt"), default=None)
    p.add_argument("--out", default=str(RESULTS / "monitor.json"))
    args = p.parse_args()
    full_steps = {"cnn": 469 * args.epochs, "gpt": args.gpt_steps}
    if args.quick:
        args.epochs, args.cnn_samples, args.gpt_steps = 1, args.cnn_samples or 25600, min(args.gpt_steps, 200)
    device = torch.device(args.device)
    load0 = loadavg()
    rows = []
    for name, make in (("cnn", cnn_workload), ("gpt", gpt_workload)):
        if args.only and args.only != name:
            continue
        build, steps, probe, loss_fn = make(args, device)
        r = compare(name, build, steps, probe, loss_fn, args.segment)
        r.update(products(name, build, probe, loss_fn, args.product_steps, args.product_every))
        r["projected_steps"] = full_steps[name]
        r["projected_overhead_pct"] = projected(r, full_steps[name])
        rows.append(r)
        print(table([r], COLUMNS), flush=True)
    payload = {"environment": environment(), "device": str(device), "loadavg": [load0, loadavg()], "rows": rows,
               "args": vars(args)}  # fmt: skip
    atomic_write_json(args.out, payload)
    print(table(rows, COLUMNS))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
