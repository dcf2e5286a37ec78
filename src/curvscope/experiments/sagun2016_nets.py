"""The pieces every part of the Sagun 2016 reproduction shares: constants, sizes, one trained net.

Kept apart from :mod:`curvscope.experiments.sagun2016` (which runs the spectra, class sweep
and width sweep) so that module stays readable; everything here is re-exported there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from curvscope.data import batches, gaussian_mixture
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


def hessian_of(model, data, loss: str) -> Hessian:
    """The full-batch Hessian of ``loss`` over ``data``."""
    return Hessian(model, get_loss(loss), batches(data))


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
