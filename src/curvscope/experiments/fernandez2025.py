"""Fernandez, Schneider, Mahsereci & Hennig (2025): magnitude masks vs the top Hessian eigenspace.

What the paper claims (definitions in ``docs/science.md``, "Overlap of subspaces and masks"). A sketched
symmetric eigendecomposition gives the top-``k`` eigenspace ``Q_k`` (by ``|λ|``) of large nets.
The overlap of a ``k``-sparse parameter mask ``m`` with it, ``Σ_{i∈m} ‖Q_k[i, :]‖² / k``, is ``k/D``
for a random mask (chance); masks of the ``k`` largest-magnitude weights score consistently above
chance, for ``k`` from tens to over 1000, more so for larger nets; masks and top eigenspace both form
early in training and persist. The above-chance claims are tested at ``k ≥ 50`` (after training, and
at every snapshot after initialisation); ``k = 10`` is reported, not asserted (a 10-dimensional
eigenspace is a handful of outliers, and the paper does not single it out). The range
``overlap/(k/D) ≈ 1.5–5`` of the quick scale was measured here and is a ``regression`` guard, as is
the agreement of the sketched and Lanczos eigenspaces; random masks scoring ``k/D`` is a ``sanity``
check (its expectation is exactly ``k/D``). Layer-matched random masks (the magnitude mask's count per
layer, random within each layer) separate "large weights" from "which layers".

Certification. A claim at size ``k`` uses a snapshot only when its ``k`` leading eigenpairs all have
residual ``‖Hv − λv‖ ≤ 0.01·|λ|`` (an eigenvalue of ``H`` lies that close to each ``λ``); sizes beyond
are excluded and named in the claim, and a claim with no certified size is ``inconclusive``. Every
eigenvalue is stored with its residual (arrays ``eigenvalues``/``residuals``, figure ``top_eigenvalues``).

What is measured, for two model sizes, at snapshots over training: ``overlap/(k/D)`` of the global and
per-layer magnitude masks, of the best possible mask (the ``k`` largest row norms of ``Q_k``), and the
Monte-Carlo mean and 95% band of random and of layer-matched random masks (:mod:`curvscope.metrics`).
The top-``k`` eigenspace comes from ``eigsh`` (thick-restart Lanczos; a dense ``eigh`` where
``D ≤ dense_max``) or from :func:`curvscope.linalg.sketch.sketched_eigh` (block Krylov, whose residuals
come free with the basis); at the quick scale the smaller net is also sketched at the end and the two
eigenspaces compared.

Setup (quick): Gaussian mixture ``C = 10``, ``d = 30``, ``N = 2000``, spread ``s = 1.0`` (separable:
the loss is ≈ 1e-3 after a few epochs, so "after training" is well defined); MLPs 30-32-32-10
(``D = 2378``, the reference GMM net) and 30-64-64-10 (``D = 6794``), ReLU, float64 training;
SGD lr 0.05, momentum 0.9, batch 64, 10 epochs, snapshots at epochs 0, 1, 10; Hessian products
in float32 (the eigenspaces, not round-off, matter here).

Full: Fashion-MNIST, all 60,000 training images. Two LeNets (conv 6, 16; dense 120, 84; ReLU), the
input size set by the data: 16×16 average-pooled images (``D = 44,426``; the paper's small exact
setting is a net on 16×16 downsampled MNIST) and the native 28×28 (``D = 107,786``): two model sizes
within one CPU hour. Training in float64, SGD lr 0.05, momentum 0.9, batch 128, 3 epochs (1,407
steps; the training loss falls from 2.31 to 0.35 (16×16) and 0.28 (28×28): trained nets, and longer
training would only add minutes). Snapshots at epochs 0, 0.1 (47 steps: "early"), 1 and 3. The Hessian
is that of the mean loss on 250 class-balanced training images (25 a class): its Gauss–Newton part
then has rank ≤ 2,250, and a block Krylov sketch of 2,500 products certifies all of the top 1,000
pairs (profiled, and in the run: largest residual ~1e-6·|λ|), while an earlier setting with the
Hessian on 10,000 images left sketch pairs uncertified (1,472 s wall, 672 CPU-s). ``k`` ∈ {10, 50,
100, 200, 500, 1000} after training (2,500 products), ``k`` ∈ {10, 50, 100} at the earlier snapshots
(300 products certify the top 100; "early and persistent" needs no more). Products in float32 where
the operator's probe accepts them against float64 (defect ≤ sqrt(eps32)), float64 where it does not
(the 28×28 net at step 47: 8.4e-3; recorded in ``info["products"]``). 500 random
masks per point. Cost: 1,346 CPU-s on one thread (the committed run), most of it the two final sketches.

Reference:
    F. Fernandez, F. Schneider, M. Mahsereci, P. Hennig, "Connecting parameter magnitudes and
    Hessian eigenspaces at scale using sketched methods", TMLR 2025 (arXiv:2504.14701).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from curvscope.data import balanced_subset, batches, load_dataset
from curvscope.experiments.fernandez2025_claims import claims
from curvscope.experiments.fernandez2025_figures import figures
from curvscope.experiments.registry import Context, Recipe, by_scale
from curvscope.experiments.run import RunDir
from curvscope.linalg import eigsh
from curvscope.linalg.sketch import sketched_eigh
from curvscope.metrics import (
    best_mask,
    layer_matched_random_mask,
    magnitude_mask,
    mask_overlap,
    random_mask,
    subspace_overlap,
)
from curvscope.models import build_model
from curvscope.operators import Hessian, NondeterministicProductError
from curvscope.train import TrainConfig, steps_per_epoch, train

F64 = torch.float64
MASKS = ("magnitude", "magnitude_layer", "best")


@dataclass(frozen=True)
class Net:
    """One model size and how its top eigenspace is computed (``"dense"``, ``"lanczos"`` or ``"sketch"``)."""

    name: str
    model_kwargs: dict
    method: str
    dtype: torch.dtype = torch.float32  # of the Hessian products
    validate: bool = False  # also sketch (float32) at the final snapshot and compare with ``method``


@dataclass(frozen=True)
class Settings:
    """One scale of the experiment (see the module docstring)."""

    dataset: str
    data_kwargs: dict
    model: str
    nets: tuple[Net, ...]  # ascending size; the first is the reference for the 1.5–5 range claim
    batch_size: int
    lr: float
    snapshot_epochs: tuple[float, ...]  # training runs to the last one
    ks: tuple[int, ...]  # at the last snapshot
    curvature_samples: int | None  # Hessian on a class-balanced subset of this size (None: all)
    curvature_batch: int | None
    eval_batch_size: int | None  # batch of the trainer's snapshot metrics (None: all at once)
    num_random: int  # Monte-Carlo random masks per (k, snapshot)
    dense_max: int = 1500
    early_ks: tuple[int, ...] | None = None  # at the snapshots before the last (None: ``ks``)
    sketch_matvecs: tuple[tuple[int, int], ...] = ()  # (k, products) of the sketches; absent: the default
    certify_rtol: float = 1e-2  # a pair is certified when its residual is ≤ rtol·|λ|
    range_claim: bool = True  # the 1.5–5 regression guard (measured at the quick scale only)


QUICK = Settings(
    dataset="gmm",
    data_kwargs={"num_classes": 10, "dim": 30, "num_samples": 2000, "spread": 1.0},
    model="mlp",
    nets=(
        Net("MLP 30-32-32-10", {"in_features": 30, "widths": (32, 32), "num_classes": 10}, "lanczos", F64, True),
        Net("MLP 30-64-64-10", {"in_features": 30, "widths": (64, 64), "num_classes": 10}, "sketch"),
    ),
    batch_size=64,
    lr=0.05,
    snapshot_epochs=(0, 1, 10),
    ks=(10, 50, 100, 200),
    curvature_samples=None,
    curvature_batch=None,
    eval_batch_size=None,
    num_random=200,
)

FULL = Settings(
    dataset="fashion-mnist",
    data_kwargs={"split": "train"},
    model="lenet",
    nets=(
        Net("LeNet 16x16", {"in_channels": 1, "image_size": 16, "num_classes": 10}, "sketch"),
        Net("LeNet 28x28", {"in_channels": 1, "image_size": 28, "num_classes": 10}, "sketch"),
    ),
    batch_size=128,
    lr=0.05,
    snapshot_epochs=(0, 0.1, 1, 3),
    ks=(10, 50, 100, 200, 500, 1000),
    curvature_samples=250,
    curvature_batch=None,
    eval_batch_size=5000,
    num_random=500,
    early_ks=(10, 50, 100),
    sketch_matvecs=((100, 300), (1000, 2500)),
    range_claim=False,
)


#: The papers' own sizes where larger (``--scale full --device cuda``): training to 20 epochs and the
#: Hessian on 2000 class-balanced images (the CPU scale's 250 keep its 2,500-product sketch affordable).
PAPER = replace(FULL, snapshot_epochs=(0, 0.1, 1, 3, 20), curvature_samples=2000, curvature_batch=500,
                sketch_matvecs=((100, 300), (1000, 3000)))  # fmt: skip


def _settings(ctx: Context) -> Settings:
    return by_scale(ctx.scale, QUICK, FULL, PAPER)


def _data(cfg: Settings, net: Net, seed: int):
    if cfg.dataset == "gmm":
        return load_dataset("gmm", seed=seed, dtype=torch.float64, **cfg.data_kwargs)
    size = net.model_kwargs.get("image_size", 28)
    return load_dataset(cfg.dataset, size=None if size == 28 else size, dtype=torch.float64, **cfg.data_kwargs)


def _certified(lam: torch.Tensor, res: torch.Tensor, rtol: float) -> int:
    """Leading pairs (by ``|λ|``) whose residual is ``≤ rtol·|λ|``."""
    ok = [*(res <= rtol * lam.abs()).tolist(), False]
    return ok.index(False)


def _top_space(H, k: int, method: str, seed: int, matvecs: int | None = None, rtol: float = 1e-2) -> dict:
    """Top-``k`` eigenpairs of ``H`` by ``|λ|`` (float64 columns, orthonormal) with their certificates."""
    if method == "dense" and H.shape[0] <= 10_000:
        lam, Q = torch.linalg.eigh(H.to_dense().double().cpu())
        res, info = torch.zeros(len(lam), dtype=torch.float64), {"num_matvecs": H.shape[0], "status": "exact"}
    elif method in ("dense", "lanczos"):
        r = eigsh(H, k=k, which="LM", seed=seed)
        lam, Q, res = r.eigenvalues.double().cpu(), r.eigenvectors.double().cpu(), r.residuals.double().cpu()
        info = {"num_matvecs": int(r.num_matvecs), "converged": int(r.converged.sum()), "status": str(r.status),
                "tol": float(r.tol)}  # fmt: skip
    else:
        r = sketched_eigh(H, k, seed=seed, num_matvecs=matvecs)
        lam, Q, res = r.eigenvalues.double().cpu(), r.eigenvectors.double().cpu(), r.residuals.double().cpu()
        info = {"num_matvecs": int(r.num_matvecs), "status": str(r.status), "error_fro_rel": r.error_fro / r.norm_fro,
                "wall_time": round(r.wall_time, 1)}  # fmt: skip
    order = lam.abs().argsort(descending=True)[:k]
    lam, res = lam[order], res[order]
    info["certified"] = _certified(lam, res, rtol)
    info["max_rel_residual"] = float((res / lam.abs()).max())
    # QR keeps the nested spans (the first j columns span the top-j eigenvectors for every j); float32
    # eigenvectors are orthonormal only to ~1e-6 in float64.
    return {"eigenvalues": lam, "Q": torch.linalg.qr(Q[:, order])[0], "residuals": res, **info}


def _mask_scores(params: dict, Q: torch.Tensor, ks, num_random: int, seed: int) -> dict:
    """overlap/(k/D) of every mask type for every ``k`` (random masks: Monte-Carlo mean and 95% band)."""
    D = Q.shape[0]
    sizes = [p.numel() for p in params.values()]
    gen = torch.Generator().manual_seed(seed)
    out = {name: [] for name in (*MASKS, "random_mean", "random_std", "random_lo", "random_hi",
                                 "layer_matched_mean", "layer_matched_lo", "layer_matched_hi")}  # fmt: skip
    for k in ks:
        Qk, chance = Q[:, :k], k / D
        mag = magnitude_mask(params, k)
        masks = {"magnitude": mag, "magnitude_layer": magnitude_mask(params, k, per_layer=True),
                 "best": best_mask(Qk, k)}  # fmt: skip
        for name, m in masks.items():
            out[name].append(mask_overlap(m, Qk, orthonormalize=False) / chance)
        for kind, draw in (
            ("random", lambda k=k: random_mask(D, k, gen)),
            ("layer_matched", lambda mag=mag: layer_matched_random_mask(mag, sizes, gen)),
        ):
            vals = torch.tensor([mask_overlap(draw(), Qk, orthonormalize=False) / chance for _ in range(num_random)])
            lo, hi = torch.quantile(vals.double(), torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
            out[f"{kind}_mean"].append(vals.mean().item())
            out[f"{kind}_lo"].append(lo)
            out[f"{kind}_hi"].append(hi)
            if kind == "random":
                out["random_std"].append(vals.std().item() if len(vals) > 1 else 0.0)
    return {key: torch.tensor(v, dtype=torch.float64) for key, v in out.items()}


def _train(run: RunDir, cfg: Settings, net: Net, i: int, data, steps: list[int], ctx: Context) -> dict:
    def fit():
        model = build_model(cfg.model, seed=ctx.seed, dtype=torch.float64, **net.model_kwargs).to(ctx.device)
        tc = TrainConfig(lr=cfg.lr, momentum=0.9, batch_size=cfg.batch_size, steps=max(steps), seed=ctx.seed,
                         snapshot_steps=tuple(steps), eval_batch_size=cfg.eval_batch_size)  # fmt: skip
        hist = train(model, data, tc, progress=ctx.progress)
        out = {"loss": [hist.snapshot(s).metrics["loss"] for s in steps]}
        out.update({f"s{s}/{k}": v.cpu() for s in steps for k, v in hist.snapshot(s).load_state().items()})
        return out

    return run.step(f"train_net{i}", fit)


def _measure(run: RunDir, name: str, cfg: Settings, net: Net, model, data, final: bool, ctx: Context) -> dict:
    def compute():
        sub = data if cfg.curvature_samples is None else balanced_subset(data, cfg.curvature_samples, seed=ctx.seed)
        parts = batches(sub, cfg.curvature_batch)
        H, products = _hessian(model, parts, net.dtype, ctx)
        method = "dense" if H.shape[0] <= cfg.dense_max else net.method
        ks = cfg.ks if final or cfg.early_ks is None else cfg.early_ks
        kmax = max(ks)
        top = _top_space(H, kmax, method, ctx.seed, dict(cfg.sketch_matvecs).get(kmax), cfg.certify_rtol)
        params = {n: p.detach().double().cpu() for n, p in model.named_parameters() if n in H.problem.names}
        out = _mask_scores(params, top["Q"], ks, cfg.num_random, ctx.seed)
        out.update({"k": torch.tensor(ks, dtype=torch.float64), "eigenvalues": top["eigenvalues"],
                    "abs_eigenvalues": top["eigenvalues"].abs(),
                    "residuals": top["residuals"], "D": H.shape[0], "method": method,
                    "info": {k: v for k, v in top.items() if k not in ("eigenvalues", "Q", "residuals")}})  # fmt: skip
        out["info"]["products"] = products
        if final and net.validate and method != "sketch":
            H32 = Hessian(model, nn.CrossEntropyLoss(), parts, dtype=torch.float32, device=ctx.device)
            sk = _top_space(H32, kmax, "sketch", ctx.seed, rtol=cfg.certify_rtol)
            sk_scores = _mask_scores(params, sk["Q"], ks, 1, ctx.seed)
            out["sketch_subspace_overlap"] = [
                float(subspace_overlap(top["Q"][:, :k], sk["Q"][:, :k], False)) for k in ks
            ]
            out["sketch_magnitude"] = sk_scores["magnitude"]
            out["sketch_abs_eigenvalues"] = sk["eigenvalues"].abs()
            out["sketch_info"] = {k: v for k, v in sk.items() if k not in ("eigenvalues", "Q", "residuals")}
        return out

    return run.step(name, compute)


def _hessian(model, parts, dtype: torch.dtype, ctx: Context) -> tuple[Hessian, str]:
    """The Hessian with products in ``dtype``, or in float64 where its probe rejects ``dtype``.

    The probe compares a ``dtype`` product with the float64 one and rejects a relative defect above
    ``sqrt(eps(dtype))`` (ReLU and max-pool kinks can flip between precisions); the second item says
    which dtype was used, with the probe's measured defect.
    """
    H = Hessian(model, nn.CrossEntropyLoss(), parts, dtype=dtype, device=ctx.device)
    try:
        H @ torch.zeros(H.shape[0], 1, dtype=dtype, device=ctx.device)  # runs the probe first
    except NondeterministicProductError as err:
        if err.reference != "float64":  # the same product disagreed with itself: randomness, not precision
            raise
        H = Hessian(model, nn.CrossEntropyLoss(), parts, dtype=F64, device=ctx.device)
        return H, f"float64 (probe: {dtype} products off the {err.reference} ones by {err.defect:.2e}, relative)"
    report = H.probe_report
    return H, f"{dtype}" + (f" (probe defect vs float64 {report.repeat_defect:.1e})" if report is not None else "")


def run_fernandez(run: RunDir, ctx: Context) -> None:
    """Train two model sizes, then score masks against the top-k Hessian eigenspace at each snapshot."""
    cfg = _settings(ctx)
    res: dict[int, list[dict]] = {}
    steps: list[int] = []
    for i, net in enumerate(cfg.nets):
        data = _data(cfg, net, ctx.seed)
        spe = steps_per_epoch(len(data), TrainConfig(epochs=1, batch_size=cfg.batch_size))
        steps = [round(e * spe) for e in cfg.snapshot_epochs]
        fitted = _train(run, cfg, net, i, data, steps, ctx)
        run.metric(f"train_loss_net{i}", [round(x, 4) for x in fitted["loss"]])
        model = build_model(cfg.model, seed=ctx.seed, dtype=torch.float64, **net.model_kwargs).to(ctx.device)
        res[i] = []
        for s in steps:
            model.load_state_dict({k: fitted[f"s{s}/{k}"].to(ctx.device) for k in model.state_dict()})
            res[i].append(_measure(run, f"masks_net{i}_s{s}", cfg, net, model, data, s == steps[-1], ctx))
        run.metric(f"top_eigenpairs_net{i}", _eigenpairs(res[i][-1]))
    run.metric("setup", _setup(cfg, res, len(data), steps))
    names = [n.name for n in cfg.nets]
    claims(run, cfg, res, names)
    figures(run, cfg, res, steps)


def _eigenpairs(r: dict) -> dict:
    """A few of the final snapshot's eigenvalues, each with its residual (all of them: arrays of the step)."""
    lam, res = r["eigenvalues"], r["residuals"]
    return {f"λ_{j}": [float(f"{lam[j - 1]:.4g}"), float(f"{res[j - 1]:.2g}")]
            for j in (1, 10, 100, len(lam)) if j <= len(lam)}  # fmt: skip


def _setup(cfg: Settings, res: dict, n_train: int, steps: list[int]) -> str:
    """The setup line of the report: every size choice of the run."""
    nets = [(n.name, r[0]["D"], r[0]["method"]) for n, r in zip(cfg.nets, res.values())]
    curv = "all training samples" if cfg.curvature_samples is None else f"{cfg.curvature_samples} class-balanced"
    budget = ", ".join(f"k={k}: {n} products" for k, n in cfg.sketch_matvecs) or "library default"
    return (f"{cfg.dataset} {cfg.data_kwargs}, N = {n_train}; nets {nets}; SGD lr {cfg.lr} momentum 0.9 batch "
            f"{cfg.batch_size}, {cfg.snapshot_epochs[-1]} epochs; snapshots at epochs {list(cfg.snapshot_epochs)} "
            f"(steps {steps}); Hessian (float32 products unless stated) on {curv} training samples; sketch budgets "
            f"{budget}; k = {list(cfg.ks)} after training, {list(cfg.early_ks or cfg.ks)} before; pairs certified "
            f"at residual ≤ {cfg.certify_rtol}·|λ| (claims use certified k only); {cfg.num_random} random masks "
            "per point")  # fmt: skip


RECIPE = Recipe(
    name="fernandez2025",
    title="Fernandez et al. 2025: magnitude masks vs the top Hessian eigenspace",
    summary="Overlap/(k/D) of global and per-layer magnitude masks, the best mask, random and layer-matched "
    "random masks with the top-k Hessian eigenspace (Lanczos and sketched eigh), for several k, over training "
    "and for two model sizes.",
    run=run_fernandez,
    settings=lambda scale: by_scale(scale, QUICK, FULL, PAPER),
    papers="Fernandez, Schneider, Mahsereci & Hennig, TMLR 2025",
)
