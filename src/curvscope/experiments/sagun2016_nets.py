"""The pieces every part of the Sagun 2016 reproduction shares: constants, sizes, one trained net.

Kept apart from :mod:`curvscope.experiments.sagun2016` (which runs the spectra, class sweep
and width sweep) so that module stays readable; everything here is re-exported there.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from curvscope.data import TensorData, batches, gaussian_mixture, load_dataset, standardize
from curvscope.experiments import instruments as ins
from curvscope.experiments.registry import Context
from curvscope.experiments.run import RunDir
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


@dataclass(frozen=True)
class Settings:
    """Scale-dependent sizes (quick: ≤ 90 s on one core; full: paper sizes, for a GPU)."""

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


def bulk_share(lam: torch.Tensor) -> float:
    """Share of a spectrum (largest first) with ``|λ| < BULK_REL · λ_max``."""
    return float((lam.abs() < BULK_REL * lam[0]).double().mean())


def gap_position(eigenvalues: torch.Tensor) -> tuple[int, float]:
    """Gap position ``argmax_{k≤30} λ_k/λ_{k+1}`` and its ratio (split_spectrum with no minimum gap)."""
    sp = split_spectrum(eigenvalues, max_outliers=GAP_K, min_gap=1.0)
    return int(sp.num_outliers_gap), float(sp.gap_ratio)


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
