"""Shared pieces of the Sagun 2016 reproduction, and the full scale's image sweeps.

Constants, sizes and one trained net (GMM or images), and the full scale's sweeps over the
first C classes and over widths, on dense spectra.

Kept apart from :mod:`curvscope.experiments.sagun2016` (which runs the spectra, the GMM class
sweep and width sweep, and dispatches the scales) so that module stays readable.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import torch

from curvscope.data import TensorData, batches, gaussian_mixture, load_dataset, standardize
from curvscope.experiments import instruments as ins
from curvscope.experiments.paper_values import SAGUN2016
from curvscope.experiments.registry import Context
from curvscope.experiments.run import Claim, Figure, RunDir, array_ref
from curvscope.metrics import split_spectrum
from curvscope.models import build_model
from curvscope.operators import Hessian
from curvscope.train import TrainConfig, get_loss, train

F64 = torch.float64
SRC = "Sagun, Bottou & LeCun 2016 (arXiv:1611.07476), bulk and edges vs data and architecture"
GUARD = "measured by curvscope (docs/science.md, 'Claim kinds and verdicts')"
DIM, SPREAD = 30, 0.4  # GMM input dimension and class-mean spread (overlapping classes)
C_MAIN, W_MAIN = 10, 32  # the spectra run: 30-32-32-10, D = 2378
GAP_K = 30  # gap searched among the top 30 ratios λ_k/λ_{k+1}
BULK_REL = 1e-3  # |λ| < BULK_REL · λ_max counts as bulk
TOP_WIDTH = 10  # mean of the top 10 eigenvalues in the width sweep
LOSS_TAG = {"cross_entropy": "ce", "mse": "mse"}
WHEN = {"init": "initialisation", "final": "after training"}
#: Batch of the curvature data loop at the full scale (bounds the memory of a 256-column HVP block).
CURV_BATCH = 1000


@dataclass(frozen=True)
class Settings:
    """Sizes of the GMM experiments (the quick scale; the full scale's cluster sweep)."""

    num_samples: int
    epochs: float
    ce_classes: tuple[int, ...]
    mse_classes: tuple[int, ...]
    widths: tuple[int, ...]
    slq_probes: int
    slq_steps: int
    exact_max_dim: int


def fit_net(run: RunDir, ctx: Context, s: Settings, loss: str, num_classes: int, width: int):
    """Train one net (resumable step).

    Returns:
        ``(model, data, tag, fitted)``: the model loaded with its final state, the training set,
        the step tag (``ce_C10_w32``) and the step's values (``init.*``/``final.*`` states, losses).
    """
    tag = f"{LOSS_TAG[loss]}_C{num_classes}_w{width}"
    data = gaussian_mixture(num_classes, DIM, s.num_samples, SPREAD, seed=ctx.seed, dtype=F64).to(device=ctx.device)
    model = build_model(
        "mlp", in_features=DIM, widths=(width, width), num_classes=num_classes, seed=ctx.seed, dtype=F64
    ).to(ctx.device)
    config = TrainConfig(
        lr=0.05, momentum=0.9, batch_size=64, epochs=s.epochs, seed=ctx.seed, loss=loss, snapshot_steps=(0,)
    )

    def fit() -> dict:
        hist = train(model, data, config, progress=ctx.progress)
        out = {f"init.{k}": v.detach().cpu() for k, v in hist.snapshots[0].load_state().items()}
        out.update({f"final.{k}": v.detach().cpu() for k, v in hist.final.load_state().items()})
        out["batch_loss"] = torch.tensor(hist.batch_loss, dtype=F64)
        out.update(init_loss=hist.snapshots[0].metrics["loss"], final_loss=hist.final.metrics["loss"])
        out["final_accuracy"] = hist.final.metrics["accuracy"]
        return out

    fitted = run.step(f"train_{tag}", fit)
    load_weights(model, fitted, "final")
    return model, data, tag, fitted


def load_weights(model, fitted: dict, which: str) -> None:
    """Load the ``init`` or ``final`` state saved by :func:`fit_net` into ``model``."""
    model.load_state_dict({k: fitted[f"{which}.{k}"] for k in model.state_dict()})


def hessian_of(model, data, loss: str, batch_size: int | None = None) -> Hessian:
    """The full-batch Hessian of ``loss`` over ``data`` (summed over batches of ``batch_size``)."""
    return Hessian(model, get_loss(loss), batches(data, batch_size))


def dense_eigenvalues(H: Hessian) -> torch.Tensor:
    """All eigenvalues of ``H`` by dense ``eigvalsh``, largest first."""
    return torch.linalg.eigvalsh(H.to_dense(max_dim=ins.EXACT_MAX_DIM).double().cpu()).flip(0)


def ratio_at(eigenvalues: torch.Tensor, k: int) -> float:
    """``λ_k/λ_{k+1}`` (1-based, largest first): the size of the gap after ``k`` eigenvalues."""
    return float(eigenvalues[k - 1] / eigenvalues[k])


def bulk_share(lam: torch.Tensor) -> float:
    """Share of a spectrum (largest first) with ``|λ| < BULK_REL · λ_max``."""
    return float((lam.abs() < BULK_REL * lam[0]).double().mean())


def gap_position(eigenvalues: torch.Tensor) -> tuple[int, float]:
    """Gap position ``argmax_{k≤30} λ_k/λ_{k+1}`` and its ratio (split_spectrum with no minimum gap)."""
    sp = split_spectrum(eigenvalues, max_outliers=GAP_K, min_gap=1.0)
    return int(sp.num_outliers_gap), float(sp.gap_ratio)


def broadened_densities(specs: dict[str, torch.Tensor]) -> dict:
    """Gaussian-broadened densities of the exact spectra on one grid (for the log-y plot)."""
    both = torch.cat(list(specs.values()))
    lo, hi = both.min().item(), both.max().item()
    pad = 0.05 * (hi - lo)
    grid = torch.linspace(lo - pad, hi + pad, 1200, dtype=F64)
    sigma = 0.004 * (hi - lo)
    out = {"grid": grid}
    for when, lam in specs.items():
        z = (grid[:, None] - lam[None, :]) / sigma
        pdf = torch.exp(-0.5 * z**2).sum(1) / (lam.numel() * sigma * (2 * torch.pi) ** 0.5)
        out[when] = pdf.clamp_min(1e-6 * pdf.max())  # floor: keeps the log axis readable
    return out


# ---------------------------------------------------------------- full scale: real images
@dataclass(frozen=True)
class FullSettings:
    """The full scale: Fashion-MNIST (or ``--data``) downsampled, MLPs small enough for dense spectra.

    ``image_size``: images are average-pooled to ``size × size`` and flattened (7 → 49 inputs, so
    the 49-32-32-10 net has D = 2986 and its dense Hessian fits eigvalsh); data with more channels is
    pooled further to keep about ``image_size²`` inputs. ``train_subset``: ``None`` trains on the
    whole train split (60k); a number takes a class-balanced subset (tests only).
    ``hessian_per_class``: the dense Hessian is taken over a class-balanced subset of the training
    set with this many images per class (its cost grows linearly with N). ``gmm``: the synthetic
    cluster sweep (the paper's own kind of data for the class experiment), as at the quick scale.
    """

    image_size: int
    train_subset: int | None
    epochs: float
    hessian_per_class: int
    main_width: int
    classes: tuple[int, ...]
    widths: tuple[int, ...]
    gmm: Settings


@functools.lru_cache(maxsize=2)
def _pooled(name: str, size: int, limit: int | None, seed: int) -> TensorData:
    """The train split pooled to about ``size²`` inputs per image, flattened (float64; cached: read-only)."""
    data = load_dataset(name, split="train", size=size, subset=limit, seed=seed, dtype=F64)
    channels = data.x.shape[1] if data.x.ndim == 4 else 1
    if channels > 1:  # e.g. CIFAR: 3 × s² inputs; pool further so the net stays dense-sized
        small = max(2, round((size * size / channels) ** 0.5))
        data = load_dataset(name, split="train", size=small, subset=limit, seed=seed, dtype=F64)
    return data.flat()


def image_data(ctx: Context, s: FullSettings, num_classes: int) -> tuple[TensorData, TensorData]:
    """``(training set, curvature subset)`` of the first ``num_classes`` classes of ``ctx.image_data()``.

    The curvature subset is class-balanced: ``hessian_per_class`` images of each class (seeded),
    drawn from the training set itself (the Hessian is the training loss's).
    """
    data = _pooled(ctx.image_data(), s.image_size, s.train_subset, ctx.seed)
    if num_classes < data.num_classes:
        data = data.subset(torch.nonzero(data.y < num_classes).squeeze(1)).replace(num_classes=num_classes)
    data, _ = standardize(data)  # statistics of the training images of these classes
    gen = torch.Generator().manual_seed(ctx.seed)
    picks = []
    for c in range(num_classes):
        idx = torch.nonzero(data.y == c).squeeze(1)
        picks.append(idx[torch.randperm(len(idx), generator=gen)[: s.hessian_per_class]])
    curv = data.subset(torch.cat(picks).sort().values)
    return data.to(device=ctx.device), curv.to(device=ctx.device)


def fit_image_net(run: RunDir, ctx: Context, s: FullSettings, num_classes: int, width: int):
    """Train the CE MLP ``in-w-w-C`` on the image data (resumable step).

    Returns:
        ``(model, curvature subset, tag, fitted)`` as :func:`fit_net` (``fitted`` also holds the
        loss on the curvature subset, ``curv_loss``, and the sizes ``num_train`` / ``num_curv``).
    """
    tag = f"img_ce_C{num_classes}_w{width}"
    data, curv = image_data(ctx, s, num_classes)
    model = build_model(
        "mlp", in_features=data.x.shape[1], widths=(width, width), num_classes=num_classes, seed=ctx.seed, dtype=F64
    ).to(ctx.device)
    config = TrainConfig(
        lr=0.05, momentum=0.9, batch_size=64, epochs=s.epochs, seed=ctx.seed, loss="cross_entropy", snapshot_steps=(0,)
    )
    loss_fn = get_loss("cross_entropy")

    def fit() -> dict:
        hist = train(model, data, config, progress=ctx.progress)
        out = {f"init.{k}": v.detach().cpu() for k, v in hist.snapshots[0].load_state().items()}
        out.update({f"final.{k}": v.detach().cpu() for k, v in hist.final.load_state().items()})
        out["batch_loss"] = torch.tensor(hist.batch_loss, dtype=F64)
        out.update(init_loss=hist.snapshots[0].metrics["loss"], final_loss=hist.final.metrics["loss"])
        out["final_accuracy"] = hist.final.metrics["accuracy"]
        with torch.no_grad():
            out["curv_loss"] = float(loss_fn(model(curv.x), curv.y))
        out.update(num_train=len(data), num_curv=len(curv), in_features=int(data.x.shape[1]))
        return out

    fitted = run.step(f"train_{tag}", fit)
    load_weights(model, fitted, "final")
    return model, curv, tag, fitted


# ---------------------------------------------------------------- full scale: images
def image_spectrum(run: RunDir, ctx: Context, s: FullSettings, num_classes: int, width: int) -> dict:
    """Dense spectrum after training of the image net ``(C, w)`` with its gap, bulk share and loss.

    The main net (C = 10, w = ``main_width``) reuses the spectra section's ``spectrum_final`` step.
    """
    model, curv, tag, fitted = fit_image_net(run, ctx, s, num_classes, width)
    main = (num_classes, width) == (C_MAIN, s.main_width)
    H = hessian_of(model, curv, "cross_entropy", CURV_BATCH)
    lam = run.step("spectrum_final" if main else f"exact_{tag}", lambda: {"eigenvalues": dense_eigenvalues(H)})
    lam = lam["eigenvalues"]
    k, ratio = gap_position(lam)
    return {
        "C": num_classes,
        "width": width,
        "D": lam.numel(),
        "gap_at": k,
        "ratio": round(ratio, 2),
        "ratio_at_C-1": round(ratio_at(lam, num_classes - 1), 2),
        "bulk_exact": round(bulk_share(lam), 4),
        "top_mean": round(lam[: num_classes - 1].mean().item(), 5),
        "lambda_max": round(lam[0].item(), 5),
        "loss": round(fitted["final_loss"], 4),
        "accuracy": round(fitted["final_accuracy"], 4),
        "num_train": fitted["num_train"],
        "num_curv": fitted["num_curv"],
        "in_features": fitted["in_features"],
        "eigenvalues": lam,
    }


def image_class_sweep(run: RunDir, ctx: Context, s: FullSettings) -> None:
    """Gap position of the dense spectrum vs C: the first C classes of the image data, w = main width."""
    rows = [image_spectrum(run, ctx, s, C, s.main_width) for C in s.classes]
    table = [{k: v for k, v in r.items() if k != "eigenvalues"} for r in rows]
    run.metric("class_sweep_images", table)
    run.claim(
        Claim(
            "gap_tracks_classes_images",
            f"{ctx.image_data()} restricted to its first C classes (real data, not clusters), CE, MLP "
            f"{rows[0]['in_features']}-{s.main_width}-{s.main_width}-C: argmax_(k≤30) λ_k/λ_(k+1) = C − 1 for every C "
            "(dense spectrum after training)",
            {
                f"C={r['C']}": f"{r['gap_at']} (ratio {r['ratio']}; at C − 1: {r['ratio_at_C-1']}; loss {r['loss']})"
                for r in rows
            },
            f"gap_at = C − 1 for C in {list(s.classes)} (rule: the softmax Hessian has rank C − 1)",
            all(r["gap_at"] == r["C"] - 1 for r in rows),
            SRC,
            kind="paper",
            inputs={f"dense spectrum C={r['C']} (D = {r['D']}, N = {r['num_curv']})": "exact" for r in rows},
            paper_value=SAGUN2016["classes"],
        )
    )
    lo, hi = min(s.classes), max(s.classes)
    run.figure(
        Figure(
            "gap_vs_classes_images",
            f"position of the largest gap λ_k/λ_(k+1) (k ≤ 30) vs number of classes, {ctx.image_data()}",
            "number of classes C",
            "gap position k",
            series=[
                {"label": "y = C − 1", "x": [lo, hi], "y": [lo - 1, hi - 1]},
                {
                    "label": "measured gap",
                    "x": [r["C"] for r in rows],
                    "y": [r["gap_at"] for r in rows],
                    "style": "scatter",
                    "size": 40,
                },
            ],
            caption=f"First C classes of {ctx.image_data()} ({s.image_size}×{s.image_size} pooled, all training images "
            f"of those classes), MLP with two hidden layers of {s.main_width}, CE, {s.epochs} epochs; dense Hessian "
            f"over {s.hessian_per_class} training images per class. Training losses: "
            + ", ".join(f"C={r['C']}: {r['loss']}" for r in rows),
        )
    )
    top = 30
    run.figure(
        Figure(
            "top_eigenvalues_vs_classes_images",
            f"top {top} eigenvalues after training vs number of classes (log scale)",
            "rank k",
            "λ_k",
            series=[
                {
                    "label": f"C = {r['C']}",
                    "x": list(range(1, top + 1)),
                    "y": r["eigenvalues"][:top].clamp_min(1e-12).tolist(),
                    "marker": "o",
                }
                for r in rows
            ],
            logy=True,
            caption="Each curve should bend after k = C − 1 (the outliers) into the bulk.",
        )
    )


def image_width_sweep(run: RunDir, ctx: Context, s: FullSettings) -> None:
    """Near-zero share of the dense spectrum vs width (C = 10, same data), and the outliers' stability."""
    rows = [image_spectrum(run, ctx, s, C_MAIN, w) for w in s.widths]
    table = [{k: v for k, v in r.items() if k != "eigenvalues"} for r in rows]
    run.metric("width_sweep_images", table)
    fr = [r["bulk_exact"] for r in rows]
    dense = {f"dense spectrum w={r['width']} (D = {r['D']}, N = {r['num_curv']})": "exact" for r in rows}
    run.claim(
        Claim(
            "bulk_grows_with_width",
            f"{ctx.image_data()}, CE, C = {C_MAIN}: the share of eigenvalues with |λ| < 1e-3·λ_max (exact, dense "
            "float64 spectrum: round-off ≈ 1e-15·λ_max, so the share is resolved) grows with width",
            {f"w={r['width']} (D={r['D']})": r["bulk_exact"] for r in rows},
            "strictly increasing in width (direction stated by the paper)",
            all(b > a for a, b in itertools.pairwise(fr)),
            SRC,
            kind="paper",
            paper_value=SAGUN2016["bulk"],
            inputs=dense,
        )
    )
    run.claim(
        Claim(
            "outliers_set_by_data_not_width",
            f"{ctx.image_data()}, CE, C = {C_MAIN}: the outliers depend on the data, not on the width: "
            "the gap stays after C − 1 eigenvalues at every width",
            {f"w={r['width']}": f"{r['gap_at']} (ratio {r['ratio']}; at C − 1: {r['ratio_at_C-1']})" for r in rows},
            f"gap_at = C − 1 = {C_MAIN - 1} at every width (rule: rank of the softmax Hessian)",
            all(r["gap_at"] == C_MAIN - 1 for r in rows),
            SRC,
            kind="paper",
            paper_value=SAGUN2016["edges"],
            inputs=dense,
        )
    )
    tops = [r["top_mean"] for r in rows]
    run.claim(
        Claim(
            "top_eigenvalues_vs_width",
            f"mean of the top C − 1 = {C_MAIN - 1} eigenvalues at each width",
            {"top_mean": {f"w={r['width']}": r["top_mean"] for r in rows}, "max/min": round(max(tops) / min(tops), 3)},
            "reported, not asserted (the paper gives no number for the outliers' size vs width)",
            None,
            SRC,
            kind="paper",
            inputs=dense,
        )
    )
    specs = {f"w{r['width']}": r["eigenvalues"] for r in rows}
    run.step("width_densities_images", lambda: broadened_densities(specs))
    run.step(
        "width_table_images",
        lambda: {k: torch.tensor([float(r[k]) for r in rows], dtype=F64) for k in ("width", "bulk_exact", "top_mean")},
    )
    ref = {k: array_ref("width_table_images", k) for k in ("width", "bulk_exact", "top_mean")}
    run.figure(
        Figure(
            "bulk_fraction_vs_width",
            f"bulk fraction (|λ| < 1e-3·λ_max) vs width, {ctx.image_data()}, CE, C = {C_MAIN} (dense spectra)",
            "hidden width w",
            "fraction of eigenvalues in the bulk",
            series=[{"label": "exact (dense)", "x": ref["width"], "y": ref["bulk_exact"], "marker": "o"}],
            caption="Same data, wider nets: D = " + ", ".join(str(r["D"]) for r in rows) + f"; dense Hessian over "
            f"{rows[0]['num_curv']} training images (class-balanced).",
        )
    )
    run.figure(
        Figure(
            "top_eigenvalues_vs_width",
            f"mean of the top C − 1 eigenvalues vs width, {ctx.image_data()}, CE, C = {C_MAIN}",
            "hidden width w",
            "eigenvalue",
            series=[{"label": f"mean of top {C_MAIN - 1}", "x": ref["width"], "y": ref["top_mean"], "marker": "o"}],
            hlines=[{"y": 0.0}],
        )
    )
    run.figure(
        Figure(
            "width_densities",
            f"exact spectral densities vs width, {ctx.image_data()}, CE, C = {C_MAIN} (log scale)",
            "eigenvalue λ",
            "density (Gaussian-broadened, log scale)",
            series=[
                {
                    "label": f"w = {r['width']} (D = {r['D']})",
                    "x": array_ref("width_densities_images", "grid"),
                    "y": array_ref("width_densities_images", f"w{r['width']}"),
                }
                for r in rows
            ],
            logy=True,
            caption="Exact eigenvalues broadened by a Gaussian of σ = 0.4% of the common range; floor 1e-6·max.",
        )
    )
