"""``curvscope analyze``: the library's instruments on the user's own model and data.

The model is a factory (``pkg.module:factory``, weights from ``--checkpoint``) or a local
HuggingFace model directory (``hf:PATH``, measured on its task loss); the data a built-in dataset,
a folder, a text/jsonl file or a batch factory (see :mod:`curvscope.experiments.analyze_data`).
The run directory's fingerprint holds the sha256 of the weights (checkpoint file, or the model
directory's safetensors) and a hash of the data (dataset tensors, data file, or factory batches),
besides the config: resuming after the weights or the data changed is refused with an error
naming the change. Without ``--checkpoint`` a factory model is analysed at its initialisation,
and the run says so loudly (stderr, the report and ``results.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from curvscope.distributed import get_rank, is_distributed, shard_batches
from curvscope.experiments import instruments as ins
from curvscope.experiments.checkpoint import build_model
from curvscope.experiments.run import Claim, Figure, RunDir, array_ref, default_fingerprint
from curvscope.operators import GGN, ClassStructure, Hessian, Residual
from curvscope.operators.fingerprint import tensors_digest

LOSSES = {"cross_entropy": nn.CrossEntropyLoss, "mse": nn.MSELoss}
TASK_LOSS = "task"  # the HF model's own task loss (loss_fn=None)


def load_data(spec: str, num_samples: int | None, seed: int):
    """A built-in dataset name, ``FORMAT:PATH``, or a folder whose format is recognised."""
    from curvscope.data import balanced_subset, load_dataset

    path = Path(spec)
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if any(n.startswith("data_batch") or n == "test_batch" for n in names):
            spec = f"cifar10:{path}"
        elif any("idx" in n or "ubyte" in n for n in names):
            spec = f"mnist-idx:{path}"
        else:
            raise ValueError(f"{path} holds neither MNIST-IDX files (*-ubyte[.gz]) nor CIFAR-10 batches (data_batch_*)")
    data = load_dataset(spec)
    if num_samples is not None:
        data = balanced_subset(data, num_samples, seed=seed)
    return data


def mse_targets(loss_name: str, num_classes: int):
    """MSE on one-hot targets for classification data (``½``-free, as ``nn.MSELoss``)."""
    if loss_name != "mse":
        return LOSSES[loss_name]()
    mse = nn.MSELoss()
    return lambda out, y: mse(out, nn.functional.one_hot(y, num_classes).to(out.dtype))


def _to_device(obj: Any, device: str) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _loss_and_batches(data: Any, loss_name: str, batch_size: int, dtype: torch.dtype, device: str):
    """The loss (``None``: the model's task loss) and the list of batches of a dataset or of given batches."""
    from curvscope.data import batches

    if isinstance(data, (list, tuple)):  # batches given as they are (text file, factory)
        loss_fn = None if loss_name == TASK_LOSS else LOSSES[loss_name]()
        return loss_fn, [_to_device(b, device) for b in data]
    if loss_name == TASK_LOSS:
        raise ValueError("--loss task (the model's own loss) needs batches with labels: --data FILE or pkg.mod:factory")
    loss_fn = mse_targets(loss_name, data.num_classes)
    return loss_fn, batches(data.to(dtype=dtype, device=device), batch_size)


def analyze(
    model: nn.Module,
    data: Any,
    loss_name: str,
    out: str | Path,
    *,
    top_k: int = 10,
    density: bool = False,
    trace: bool = False,
    decompose: bool = False,
    overlap: bool = False,
    batch_size: int = 256,
    params: list[str] | None = None,
    units: str = "auto",
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    config: dict | None = None,
    fingerprint: dict | None = None,
    notes: list[str] | None = None,
    data_name: str | None = None,
    shard: str = "none",
) -> RunDir:
    """Run the chosen measurements on ``model`` at its current weights; returns the run directory.

    Args:
        data: a dataset (``x``, ``y``, ``num_classes``) batched by ``batch_size``, or a list of batches.
        loss_name: ``"cross_entropy"``, ``"mse"`` or ``"task"`` (an HF model's task loss, ``loss_fn=None``).
        params: glob patterns of the parameters the curvature is over (``None``: all trainable).
        units: the loss units (``"auto"``, ``"samples"``, ``"tokens"``), as the operators take them.
        fingerprint: what is measured (default: the config plus a hash of the data); a run
            directory holding another fingerprint is refused.
        notes: lines shown prominently in the report and stored in ``results.json``
            (e.g. that no checkpoint was given).
        shard: ``"fsdp"``: wrap the model with ``fully_shard`` per block and measure it with
            :class:`~curvscope.distributed.fsdp.ShardedCurvature` (Krylov vectors sharded over the
            ranks; top-k, density and trace; eigenvectors are not kept).
    """
    if shard == "fsdp" and (decompose or overlap or params):
        raise ValueError("--shard fsdp measures H over all parameters: drop --decompose, --overlap and --params")
    config = config or {"experiment": "analyze", "seed": seed, "params": params, "units": units}
    if fingerprint is None:
        fingerprint = default_fingerprint(config, data=data_identity(data))
    run = RunDir(out, config, fingerprint=fingerprint)
    name = data_name or getattr(data, "name", "data")
    run.results["title"] = f"curvscope analyze: {type(model).__name__} on {name}"
    run.results["summary"] = "Curvature of the mean training loss at the given weights."
    run.results["notes"] = list(notes or [])
    for key in ("checkpoint", "checkpoint_sha256", "model_weights_sha256", "data"):
        if key in fingerprint:
            run.metric(key, fingerprint[key])
    model = model.to(device=device, dtype=dtype)
    loss_fn, parts = _loss_and_batches(data, loss_name, batch_size, dtype, device)
    if is_distributed():
        parts = shard_batches(parts)
    if shard == "fsdp":
        from curvscope.distributed.fsdp import ShardedCurvature, wrap_fsdp

        H = ShardedCurvature(wrap_fsdp(model), loss_fn, parts, units=units)
        run.metric("product_method", H.method)
    else:
        H = Hessian(model, loss_fn, parts, params=params, units=units)
    run.metric("num_parameters", H.shape[0])
    run.metric("num_samples", H.num_samples)
    run.metric("units", H.unit_name if shard == "fsdp" else H.problem.loss.unit_name)
    run.metric("params", list(params) if params else "all trainable")
    t0 = time.perf_counter()
    top = _top(run, H, top_k, seed, progress, keep_vectors=shard != "fsdp") if top_k > 0 else None
    if density:
        _density(run, H, top, seed, progress)
    if trace:
        tr = ins.trace_estimate(run, "trace_H", H, seed=seed, method="xtrace")  # sharded too (Gram–Schmidt QR)
        run.metric("trace_H", tr["estimate"])
        run.metric("trace_H_stderr", tr["stderr"])
    if decompose:
        ops = {"params": params, "units": units}
        _decompose(run, model, loss_fn, parts, loss_name, density, seed, progress, ops)
    if overlap and top is not None:
        _overlap(run, H, top)
    run.metric("seconds", time.perf_counter() - t0)
    run.finish()
    return run


def _top(run: RunDir, H, top_k: int, seed: int, progress: bool, keep_vectors: bool = True) -> dict:
    """Top-k eigenpairs with their certificate claim and figure."""
    top = ins.eigenpairs(run, "top", H, top_k, seed=seed, progress=progress, keep_vectors=keep_vectors)
    conv = top["converged"].bool()
    run.claim(
        Claim(
            "eigenpairs_certified",
            f"top-{top_k} Hessian eigenpairs converged",
            f"{int(conv.sum())}/{top_k}",
            "residual ≤ tol·‖H‖ (eigsh's dtype-aware default tol)",
            bool(conv.all()),
            "curvscope eigsh: residual certificates",
            kind="sanity",
            inputs=ins.statuses(eigsh_H=top),
        )
    )
    run.figure(ins.sorted_eigenvalues_figure("top_eigenvalues", "top Hessian eigenvalues", {"H": "top"}))
    return top


def _density(run: RunDir, H, top: dict | None, seed: int, progress: bool) -> None:
    dens = ins.density(run, "density_H", H, seed=seed, progress=progress)
    # eigenvalues within the density's resolution cannot be told from zero: counted as zero
    run.metric("negative_mass_H", dens["negative_mass"])
    run.metric("negative_mass_band_H", dens["negative_mass_band"])
    run.figure(
        ins.density_figure(
            "density",
            "Hessian spectral density (SLQ)",
            {"H": "density_H"},
            outliers=None if top is None else top["eigenvalues"],
        )
    )


def _decompose(
    run: RunDir, model, loss_fn, parts, loss_name: str, density: bool, seed: int, progress: bool, ops: dict
) -> None:
    """Densities of G and H_res and, for cross-entropy, of the class-structure terms of G."""
    G, R = GGN(model, loss_fn, parts, **ops), Residual(model, loss_fn, parts, **ops)
    ins.density(run, "density_G", G, seed=seed, progress=progress)
    ins.density(run, "density_Hres", R, seed=seed, progress=progress)
    steps = {"H": "density_H"} if density else {}
    run.figure(
        ins.density_figure(
            "decomposition", "H, G and H_res densities", {**steps, "G": "density_G", "H_res": "density_Hres"}
        )
    )
    if loss_name == "cross_entropy":
        cs = ClassStructure(model, loss_fn, parts, **ops)
        for name, op in (("class", cs.class_term), ("cross", cs.cross_term), ("within", cs.within_term)):
            ins.density(run, f"density_G_{name}", op, seed=seed, progress=progress)
        run.figure(
            ins.density_figure(
                "class_structure",
                "class-structure terms of G",
                {n: f"density_G_{n}" for n in ("class", "cross", "within")},
            )
        )


def _overlap(run: RunDir, H, top: dict) -> None:
    """overlap/(k/D) of magnitude masks with the top-k eigenspace, for k up to the eigenpairs computed."""
    from curvscope.metrics import magnitude_mask, mask_overlap

    values = dict(H.problem.values)
    D = H.shape[0]

    def compute():
        Q = top["eigenvectors"].to(torch.float64)
        ks = [k for k in (1, 2, 5, 10, 20, 50, 100) if k <= Q.shape[1]]
        ratios = []
        for k in ks:
            mask = magnitude_mask(values, k)
            ratios.append(mask_overlap(mask, Q[:, :k]) / (k / D))
        return {"k": torch.tensor(ks, dtype=torch.float64), "ratio": torch.tensor(ratios, dtype=torch.float64)}

    run.step("overlap", compute)
    run.figure(
        Figure(
            "overlap",
            "magnitude mask vs top-k eigenspace",
            "k",
            "overlap / (k/D)",
            series=[
                {
                    "label": "magnitude mask",
                    "x": array_ref("overlap", "k"),
                    "y": array_ref("overlap", "ratio"),
                    "marker": "o",
                }
            ],
            hlines=[{"y": 1.0, "label": "chance"}],
            logx=True,
        )
    )


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_identity(data: Any) -> dict:
    """Name, size and a hash of a dataset's inputs and labels (part of the run's fingerprint)."""
    x, y = getattr(data, "x", None), getattr(data, "y", None)
    ident = {"name": str(getattr(data, "name", type(data).__name__))}
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
        ident.update(num_samples=int(x.shape[0]), digest=tensors_digest({"x": x, "y": y}))
    return ident


INIT_WARNING = (
    "no --checkpoint given: the model is analysed at its INITIALISATION (the weights its factory "
    "returns), not at trained weights"
)


def _load_model(args: argparse.Namespace) -> tuple[nn.Module, dict, list[str]]:
    """The model, its fingerprint entries (weights hash) and the notes for the report."""
    if args.model.startswith("hf:"):
        from curvscope.experiments.analyze_data import hf_model_dir, load_hf_model, weights_sha256

        if args.checkpoint:
            raise ValueError("--checkpoint does not apply to --model hf:PATH (the weights are the directory's)")
        path = hf_model_dir(args.model)
        return load_hf_model(args.model), {"model_weights_sha256": weights_sha256(path)}, []
    model = build_model(args.model, args.checkpoint)
    if args.checkpoint:
        return model, {"checkpoint_sha256": file_sha256(args.checkpoint)}, []
    if get_rank() == 0:
        print(f"curvscope analyze: warning: {INIT_WARNING}", file=sys.stderr)
    return model, {"checkpoint": "none: initialisation"}, ["WARNING: " + INIT_WARNING]


def _load_inputs(args: argparse.Namespace, model: nn.Module) -> tuple[Any, dict]:
    """The dataset or the list of batches ``--data`` names, and its identity for the fingerprint."""
    from curvscope.experiments import analyze_data as ad

    kind = ad.data_kind(args.data)
    if kind == "dataset":
        data = load_data(args.data, args.num_samples, args.seed)
        return data, data_identity(data)
    if kind == "factory":
        data = ad.factory_batches(args.data, args.num_batches)
        return data, {"name": args.data, "num_batches": len(data), "digest": ad.batches_digest(data)}
    model_dir = Path(args.model[3:]) if args.model.startswith("hf:") else None
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    data, tokenizer = ad.text_file_batches(
        args.data,
        model_dir,
        vocab,
        seq_len=args.seq_len,
        batch_size=args.batch_size or 8,
        num_samples=args.num_samples,
        text_field=args.text_field,
    )
    ident = {"name": Path(args.data).name, "sha256": file_sha256(args.data), "tokenizer": tokenizer,
             "num_sequences": sum(int(b["input_ids"].shape[0]) for b in data)}  # fmt: skip
    return data, ident


def analyze_from_args(args: argparse.Namespace) -> RunDir:
    """The CLI's ``analyze`` verb."""
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is available")
    model, extra, notes = _load_model(args)
    if args.loss is None:
        args.loss = TASK_LOSS if args.model.startswith("hf:") else "cross_entropy"
    data, ident = _load_inputs(args, model)
    config = {k: v for k, v in vars(args).items() if k not in ("verb", "verbose", "quiet")}
    config["experiment"] = "analyze"
    fingerprint = default_fingerprint(config, data=ident, dtype=args.dtype, device=args.device, **extra)
    # Every rank computes the same results; only rank 0 keeps its run directory.
    out = args.out if get_rank() == 0 else tempfile.mkdtemp(prefix=f"curvscope-rank{get_rank()}-")
    return analyze(
        model,
        data,
        args.loss,
        out,
        top_k=args.top_k,
        density=args.density,
        trace=args.trace,
        decompose=args.decompose,
        overlap=args.overlap,
        batch_size=args.batch_size or 256,
        params=args.params,
        units=args.units,
        dtype=dtype,
        device=args.device,
        seed=args.seed,
        progress=not args.quiet,
        config=config,
        fingerprint=fingerprint,
        notes=notes,
        data_name=ident["name"],
        shard=getattr(args, "shard", "none"),
    )
