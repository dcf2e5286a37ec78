"""``curvscope`` command line: argument parsing only; the work lives in experiments/ and report/."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

EPILOG_DEMO = """example:
  curvscope demo                 # ~1-2 min on 2 CPU cores; prints where the report is
  curvscope demo --out runs/my-demo
"""
EPILOG_REPRODUCE = """examples:
  curvscope reproduce sagun2016 --scale quick
  curvscope reproduce all --scale quick --out runs/
  curvscope reproduce papyan2019 --scale full --device cuda --seed 1
  curvscope reproduce fortganguli2019 --resume runs/fortganguli2019-quick-seed0   # continue a killed run
  curvscope reproduce all --keep-going     # exit 0 even when a paper claim fails or is inconclusive

exit status: 1 when a paper claim fails or is inconclusive (an eigensolve, density or sketch it rests on
did not converge), unless --keep-going; regression guards and sanity checks are reported, not fatal.
"""
EPILOG_ANALYZE = """examples:
  curvscope analyze --model mypkg.models:make_net --checkpoint net.safetensors \\
      --data digits --loss cross_entropy --top-k 20 --density --trace --decompose --out runs/mynet
  curvscope analyze --model hf:./my-gpt2 --data corpus.txt --seq-len 128 --batch-size 8 \\
      --num-samples 64 --top-k 5 --trace --dtype float64 --out runs/gpt2   # local files only
  curvscope analyze --model hf:./my-gpt2 --data rows.jsonl --text-field body \\
      --params 'transformer.h.0.*' --units tokens --top-k 5 --out runs/gpt2-block0
  curvscope analyze --model hf:./my-bert-cls --data mypkg.data:eval_batches --num-batches 4 --top-k 3
  (torchrun --nproc-per-node=2 -m curvscope analyze ... shards the batches over two processes;
   add --shard fsdp to shard the model and the Krylov vectors too)

--model hf:PATH loads config.json + safetensors from PATH with local_files_only (never the network;
needs pip install 'curvscope[hf]') and measures the model's task loss. --data FILE.txt|FILE.jsonl is
tokenised with PATH's tokenizer when it has one, else read as bytes (vocab_size >= 256 needed);
--num-samples then counts sequences of --seq-len tokens. --data pkg.module:factory returns a list of
batches or a loader (read for --num-batches batches).
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="curvscope",
        description="Curvature of neural-network losses: Hessian eigenpairs, spectral densities, "
        "Gauss-Newton/residual split, subspace overlaps, and five published findings reproduced.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log what the library decides (strategies, …)")
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    d = sub.add_parser(
        "demo",
        help="the built-in end-to-end analysis (MLP on digits) with a report",
        description="Train a small MLP on sklearn digits, then compute the top Hessian eigenpairs with residuals, "
        "the densities of H, G and H_res, the trace, gradient confinement and magnitude-mask overlap, "
        "and write a report.",
        epilog=EPILOG_DEMO,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true", help="no progress bars")

    r = sub.add_parser(
        "reproduce",
        help="run a paper reproduction (or all of them) and write its report",
        description="Run a named experiment at the quick (<= 3 min on 2 CPU cores) or full scale "
        "(Fashion-MNIST or your --data; <= 60 min each on 2 CPU cores). "
        "Each claim has a kind (paper, regression, sanity) and a verdict (pass, fail, inconclusive, reported) "
        "in results.json and report.html.",
        epilog=EPILOG_REPRODUCE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("name", nargs="?", help="experiment name, or 'all' (see `curvscope list`)")
    r.add_argument(
        "--scale",
        choices=["quick", "full", "paper"],
        default="quick",
        help="quick (minutes), full (the papers' kind of data, <= 60 min on 2 CPU cores; on --device cuda it runs "
        "paper), paper (the papers' own, GPU-sized settings)",
    )
    r.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument(
        "--data",
        default=None,
        metavar="DATASET",
        help="full scale only: your images instead of Fashion-MNIST, e.g. mnist-idx:/data/mnist or "
        "cifar10:/data/cifar-10-batches-py",
    )
    r.add_argument("--out", default=None, help="run directory (for 'all': a parent directory)")
    r.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a partial run in RUN_DIR")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument(
        "--keep-going",
        action="store_true",
        help="exit with status 0 even when a paper claim fails or is inconclusive (default: status 1)",
    )
    r.add_argument("--strict", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts

    _add_analyze(sub)

    rep = sub.add_parser(
        "report",
        help="re-render a run directory's figures and report.html (no recomputation)",
        epilog="example:\n  curvscope report runs/demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rep.add_argument("run_dir")

    sub.add_parser(
        "list",
        help="experiments, datasets and models",
        epilog="example:\n  curvscope list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return p


def _add_analyze(sub) -> None:
    """The ``analyze`` verb's arguments."""
    a = sub.add_parser(
        "analyze",
        help="curvature of your own model",
        description="Load your model (a factory function) and checkpoint, a dataset, and compute what you ask for.",
        epilog=EPILOG_ANALYZE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument(
        "--model", required=True, help="package.module:factory returning an nn.Module, or hf:PATH (local HF model dir)"
    )
    a.add_argument("--checkpoint", help="weights: .safetensors, or a torch file loaded with weights_only=True")
    a.add_argument(
        "--data",
        required=True,
        help="built-in dataset name (digits, fashion-mnist, gmm), a folder, a .txt/.jsonl file, or pkg.module:factory",
    )
    a.add_argument(
        "--loss",
        default=None,
        choices=["cross_entropy", "mse", "task"],
        help="task: the HF model's own task loss (default for hf:PATH; cross_entropy otherwise)",
    )
    a.add_argument(
        "--num-samples", type=int, default=None, help="class-balanced subset of this size; text files: sequences"
    )
    a.add_argument("--batch-size", type=int, default=None, help="samples (default 256) or sequences (default 8)")
    a.add_argument("--seq-len", type=int, default=128, help="tokens per sequence for text/jsonl data (default 128)")
    a.add_argument("--text-field", default="text", help="the jsonl field holding the text (default: text)")
    a.add_argument("--num-batches", type=int, default=None, help="batches read from a factory's loader")
    a.add_argument(
        "--params",
        action="append",
        default=None,
        metavar="GLOB",
        help="curvature over the parameters matching GLOB only (repeatable; default: all trainable)",
    )
    a.add_argument("--units", default="auto", choices=["auto", "samples", "tokens"], help="loss units the mean is over")
    a.add_argument("--top-k", type=int, default=10, help="top Hessian eigenpairs (0: skip)")
    a.add_argument("--density", action="store_true", help="SLQ spectral density of H")
    a.add_argument("--trace", action="store_true", help="Hutch++ trace estimate of H")
    a.add_argument("--decompose", action="store_true", help="G / H_res split and the class structure (CE)")
    a.add_argument("--overlap", action="store_true", help="magnitude-mask overlap with the top eigenspace")
    a.add_argument("--device", default="cpu")
    a.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    a.add_argument("--seed", type=int, default=0)
    a.add_argument(
        "--shard",
        default="none",
        choices=["none", "fsdp"],
        help="fsdp (under torchrun): fully_shard the model per block; Krylov vectors sharded over the ranks",
    )
    a.add_argument("--out", default="runs/analyze")
    a.add_argument("--quiet", action="store_true")


def _print_claims(results: dict) -> None:
    from curvscope.experiments.run import claim_kind, claim_verdict

    words = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE", "reported": "info"}
    for c in results.get("claims", []):
        word = words[claim_verdict(c)]
        print(f"  [{word}] ({claim_kind(c)}) {c['name']}: measured {c.get('measured')} ({c.get('criterion', '')})")


def _reproduce(args: argparse.Namespace) -> int:
    from curvscope.distributed import get_rank
    from curvscope.experiments import names, run_experiment
    from curvscope.io import read_json
    from curvscope.report import render

    if args.resume:
        cfg = read_json(Path(args.resume) / "config.json")
        args.name, args.scale, args.seed, args.device = cfg["experiment"], cfg["scale"], cfg["seed"], cfg["device"]
        args.data = cfg.get("data")
        args.out = args.resume
    if not args.name:
        print("curvscope reproduce: name an experiment or 'all'; valid names: " + ", ".join(names()), file=sys.stderr)
        return 2
    todo = names() if args.name == "all" else [args.name]
    todo = [n for n in todo if n != "demo"] if args.name == "all" else todo
    rows = []
    for name in todo:
        out = args.out
        if args.name == "all":
            out = Path(args.out or "runs") / f"{name}-{args.scale}-seed{args.seed}"
        if get_rank() != 0:  # under torchrun every rank computes the same run; only rank 0 keeps it
            out = tempfile.mkdtemp(prefix=f"curvscope-rank{get_rank()}-")
        print(f"== {name} ({args.scale})", flush=True)
        run = run_experiment(name, args.scale, args.seed, args.device, out, progress=not args.quiet, data=args.data)
        report = render(run.path)
        _print_claims(run.results)
        print(f"   report: {report}")
        rows.append(_summary_row(name, run, report))
    if get_rank() == 0:
        _write_summary(Path(args.out or "runs") if args.name == "all" else None, rows, args)
    bad = sum(len(r["paper_failed"]) + len(r["paper_inconclusive"]) for r in rows)
    if bad and not args.keep_going:
        print(f"   exit status 1: {bad} paper claim(s) failed or inconclusive (--keep-going exits 0)", file=sys.stderr)
        return 1
    return 0


def _summary_row(name: str, run, report: Path) -> dict:
    """One experiment's claims by kind and verdict (and the legacy passed/failed/reported lists)."""
    from curvscope.experiments.run import KINDS, VERDICTS, claim_kind, claim_verdict

    claims = run.results["claims"]
    by = {kind: {v: [] for v in VERDICTS} for kind in KINDS}
    for c in claims:
        by.setdefault(claim_kind(c), {v: [] for v in VERDICTS})[claim_verdict(c)].append(c["name"])
    verdicts = {v: [n for kind in by.values() for n in kind[v]] for v in VERDICTS}
    return {
        "experiment": name,
        "claims": by,
        "passed": verdicts["pass"],
        "failed": verdicts["fail"],
        "inconclusive": verdicts["inconclusive"],
        "reported": verdicts["reported"],
        "paper_failed": by["paper"]["fail"],
        "paper_inconclusive": by["paper"]["inconclusive"],
        "wall_seconds": run.results.get("wall_seconds"),
        "run_dir": str(run.path),
        "report": str(report),
    }


def _write_summary(parent: Path | None, rows: list[dict], args: argparse.Namespace) -> None:
    """A table of claims per kind and verdict, naming failed or inconclusive paper claims.

    With ``parent`` (``reproduce all``) it is also written to ``parent/summary.json``.
    """
    from curvscope.experiments.run import KINDS, VERDICTS

    def cell(row: dict, kind: str) -> str:
        n = {v: len(row["claims"][kind][v]) for v in VERDICTS}
        return f"{n['pass']}/{n['fail']}/{n['inconclusive']}/{n['reported']}"

    print(f"\n== summary ({args.scale}, seed {args.seed}); claims pass/fail/inconclusive/reported")
    print(f"   {'experiment':<18}" + "".join(f"{k:>14}" for k in KINDS) + f"{'seconds':>10}")
    for r in rows:
        secs = f"{r['wall_seconds']:.0f}" if r["wall_seconds"] is not None else "-"
        print(f"   {r['experiment']:<18}" + "".join(f"{cell(r, k):>14}" for k in KINDS) + f"{secs:>10}")
        for name in r["paper_failed"]:
            print(f"      FAILED paper claim: {name}")
        for name in r["paper_inconclusive"]:
            print(f"      INCONCLUSIVE paper claim: {name}")
        for kind in ("regression", "sanity"):
            for name in r["claims"][kind]["fail"] + r["claims"][kind]["inconclusive"]:
                print(f"      ({kind} {'failed' if name in r['claims'][kind]['fail'] else 'inconclusive'}: {name})")
    totals = {k: {v: sum(len(r["claims"][k][v]) for r in rows) for v in VERDICTS} for k in KINDS}
    for k in KINDS:
        t = totals[k]
        print(f"   {k}: {t['pass']} pass, {t['fail']} fail, {t['inconclusive']} inconclusive, {t['reported']} reported")
    if parent is None:
        return
    from curvscope.io import atomic_write_json

    legacy = {key: sum(len(r[key]) for r in rows) for key in ("passed", "failed", "inconclusive", "reported")}
    summary = {"scale": args.scale, "seed": args.seed, "device": args.device, "totals": legacy,
               "by_kind": totals, "experiments": rows}  # fmt: skip
    atomic_write_json(parent / "summary.json", summary)
    print(f"   summary: {parent / 'summary.json'}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``curvscope`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.verb is None:
        _parser().print_help()
        return 2
    if args.verb in ("analyze", "reproduce"):
        from curvscope.distributed.comm import init_from_environment

        init_from_environment(getattr(args, "device", "cpu"))  # under torchrun: join the process group
    try:
        if args.verb == "demo":
            from curvscope.experiments import run_experiment
            from curvscope.report import render

            run = run_experiment("demo", "quick", args.seed, "cpu", args.out, progress=not args.quiet)
            report = render(run.path)
            _print_claims(run.results)
            print(f"report: {report.resolve()}")
            return 0
        if args.verb == "reproduce":
            return _reproduce(args)
        if args.verb == "report":
            from curvscope.report import render

            print(render(args.run_dir))
            return 0
        if args.verb == "list":
            from curvscope.cli.listing import print_listing

            print_listing()
            return 0
        if args.verb == "analyze":
            from curvscope.distributed import get_rank
            from curvscope.experiments.analyze import analyze_from_args
            from curvscope.report import render

            run = analyze_from_args(args)
            if get_rank() == 0:
                print(f"report: {render(run.path).resolve()}")
            return 0
    except (KeyError, ValueError, FileNotFoundError, PermissionError, RuntimeError, TypeError) as err:
        # Bad arguments and bad input end with the message that says what to do, not a traceback.
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"curvscope {args.verb}: error: {msg}", file=sys.stderr)
        if args.verbose:
            raise
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
