"""sagun2017, second part: the full-scale data and networks, and the LB/SB line interpolation.

Split from :mod:`curvscope.experiments.sagun2017` (which holds the settings, training, the
G/H_res split and the recipe) to keep each file short; see that module's docstring.
"""

from __future__ import annotations

from typing import Any

import torch

from curvscope.data import balanced_subset, batches, load_dataset
from curvscope.experiments.paper_values import SAGUN2017
from curvscope.experiments.registry import Context
from curvscope.experiments.run import Claim, Figure, RunDir, array_ref
from curvscope.linalg import eigsh
from curvscope.models import build_model
from curvscope.operators import Hessian
from curvscope.train import get_loss, interpolate

F64 = torch.float64
SRC = "Sagun et al. 2017 (arXiv:1706.04454), large-batch vs small-batch solutions"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def state(fitted: dict, prefix: str, model) -> dict:
    """The saved state ``prefix`` (``early``, ``lb``, ``sb``) for ``model``, floating tensors cast to its dtype."""
    dtype = next(model.parameters()).dtype
    return {
        k: (v.to(dtype) if v.is_floating_point() else v) for k in model.state_dict() for v in [fitted[f"{prefix}.{k}"]]
    }


# ---------------------------------------------------------------- data and networks
def setup(ctx: Context, s: Any) -> dict:
    """The training set, the curvature set, the line set and the networks of one scale.

    Quick: scikit-learn digits in float64 for everything (curvature on all 1797 images).
    Full: ``ctx.image_data()`` (Fashion-MNIST unless ``--data``), all training images flattened,
    the network trained in ``s.train_dtype``; curvature (eigsh, SLQ, λ_max on the line) in float64
    on a class-balanced subset of ``s.curvature_samples``; the line's loss in float64 on the whole
    training set. The input width comes from the loaded data (784 for Fashion-MNIST, 3072 for CIFAR-10).
    """
    if s.data == "digits":
        data = load_dataset("digits", dtype=F64).to(device=ctx.device)
    else:
        kw = {} if s.train_samples is None else {"subset": s.train_samples, "seed": ctx.seed}
        data = load_dataset(ctx.image_data(), split="train", flatten=True, dtype=DTYPES[s.train_dtype], **kw)
        data = data.flat().to(device=ctx.device)
    d_in = data.x.shape[1]
    train_model = build_model(
        "mlp", in_features=d_in, widths=tuple(s.widths), num_classes=10, seed=ctx.seed, dtype=DTYPES[s.train_dtype]
    ).to(ctx.device)
    if s.curvature_samples is None or s.curvature_samples >= len(data):
        curv = data.to(dtype=F64)
    else:
        curv = balanced_subset(data, s.curvature_samples, seed=ctx.seed).to(dtype=F64)
    model = build_model("mlp", in_features=d_in, widths=tuple(s.widths), num_classes=10, seed=ctx.seed, dtype=F64)
    info = {
        "dataset": data.name,
        "train_samples": len(data),
        "curvature_samples": len(curv),
        "curvature_class_counts": curv.class_counts().tolist(),
        "in_features": d_in,
        "num_params": sum(p.numel() for p in model.parameters()),
    }
    return {"data": data, "curv": curv, "train_model": train_model, "model": model.to(ctx.device), "info": info}


# ---------------------------------------------------------------- interpolation
def line(run: RunDir, ctx: Context, s: Any, model, data, curv, fitted: dict) -> dict:
    """Loss along θ(α) = (1 − α) θ_LB + α θ_SB (on ``data``) and λ_max (on ``curv``) at every ``lambda_every``-th α."""
    loss_fn = get_loss("cross_entropy")
    alphas = [round(-0.5 + 2.0 * i / (s.line_points - 1), 10) for i in range(s.line_points)]
    with_lambda = set(alphas[:: s.lambda_every]) | {0.0, 1.0}

    def lam_max(alpha: float, m) -> list | None:
        if not any(abs(alpha - x) < 1e-9 for x in with_lambda):
            return None
        res = eigsh(Hessian(m, loss_fn, batches(curv)), k=1, seed=ctx.seed, progress=False)
        return [float(res.eigenvalues[0]), float(res.residuals[0]), int(res.num_matvecs), str(res.status),
                float(res.tol)]  # fmt: skip

    def compute() -> dict:
        res = interpolate(
            model,
            state(fitted, "lb", model),
            state(fitted, "sb", model),
            data,
            alphas,
            batch_size=s.eval_batch,
            callback=lam_max,
        )
        lam = [(a, e) for a, e in zip(res.alphas, res.extras) if e is not None]
        return {
            "alpha": torch.tensor(res.alphas, dtype=F64),
            "loss": torch.tensor(res.loss, dtype=F64),
            "accuracy": torch.tensor(res.accuracy, dtype=F64),
            "lambda_alpha": torch.tensor([a for a, _ in lam], dtype=F64),
            "lambda_max": torch.tensor([e[0] for _, e in lam], dtype=F64),
            "lambda_residual": torch.tensor([e[1] for _, e in lam], dtype=F64),
            "lambda_tol": torch.tensor([e[4] for _, e in lam], dtype=F64),
            "lambda_status": [e[3] for _, e in lam],
            "barrier": res.barrier,
            "monotone": res.is_monotone(),
            "loss_lb": res.loss_a,
            "loss_sb": res.loss_b,
        }

    return run.step("interpolation", compute)


def line_claims(run: RunDir, line: dict, edge: float) -> None:
    """No barrier and a monotone loss between θ_LB and θ_SB, and the small-batch end is flatter.

    ``edge``: GD's stability edge 2(1 + β)/η, reported beside λ_max(θ_LB) (GD cannot settle sharper).
    """
    a, lam = line["lambda_alpha"].tolist(), line["lambda_max"].tolist()
    lam_lb, lam_sb = lam[a.index(0.0)], lam[a.index(1.0)]
    status = line.get("lambda_status") or ["unverified"] * len(a)
    ends = {"eigsh λ_max(θ_LB)": status[a.index(0.0)], "eigsh λ_max(θ_SB)": status[a.index(1.0)]}
    run.metric("lambda_max_along_line", {f"{x:g}": round(v, 4) for x, v in zip(a, lam)})
    losses = {"L(θ_LB)": round(line["loss_lb"], 5), "L(θ_SB)": round(line["loss_sb"], 5)}
    run.claim(
        Claim(
            "no_barrier",
            "the loss along the line from θ_LB to θ_SB never rises above the chord between the endpoints",
            {"barrier": line["barrier"], **losses},
            "barrier ≤ 0 on the α grid",
            line["barrier"] <= 0.0,
            SRC,
            kind="paper",
            paper_value=SAGUN2017["barrier"],
        )
    )
    run.claim(
        Claim(
            "monotone_path",
            "the loss is monotone along the segment α ∈ [0, 1] (one flat basin)",
            {"monotone": line["monotone"], **losses},
            "monotone on the grid",
            bool(line["monotone"]),
            SRC,
            kind="paper",
            paper_value=SAGUN2017["barrier"],
        )
    )
    run.claim(
        Claim(
            "small_batch_flatter",
            "the small-batch solution is flatter than the large-batch one",
            {"λ_max(θ_LB)": round(lam_lb, 4), "λ_max(θ_SB)": round(lam_sb, 4), "GD edge 2(1+β)/η": round(edge, 4)},
            "λ_max(θ_SB) < λ_max(θ_LB)",
            lam_sb < lam_lb,
            SRC,
            kind="paper",
            paper_value=SAGUN2017["flatter"],
            inputs=ends,
        )
    )


def line_figures(run: RunDir) -> None:
    """Loss and λ_max along the line between the two solutions, and the two training phases."""
    run.figure(
        Figure(
            "interpolation",
            "loss and λ_max along θ(α) = (1 − α) θ_LB + α θ_SB",
            "α  (0: large-batch GD solution, 1: small-batch SGD solution)",
            "loss / λ_max (log scale)",
            series=[
                {
                    "label": "training loss",
                    "x": array_ref("interpolation", "alpha"),
                    "y": array_ref("interpolation", "loss"),
                    "marker": ".",
                },
                {
                    "label": "λ_max of H (eigsh)",
                    "x": array_ref("interpolation", "lambda_alpha"),
                    "y": array_ref("interpolation", "lambda_max"),
                    "marker": "s",
                },
            ],
            logy=True,
            vlines=[{"x": 0.0, "label": "θ_LB (α = 0)"}, {"x": 1.0, "color": "black", "label": "θ_SB (α = 1)"}],
            caption="No barrier between the two solutions; the small-batch end is flatter.",
        )
    )
    run.figure(
        Figure(
            "training",
            "training: full-batch GD, then batch-10 SGD from its solution",
            "step",
            "loss (log scale)",
            series=[
                {
                    "label": "GD (full-batch loss)",
                    "x": array_ref("train", "gd_step"),
                    "y": array_ref("train", "gd_loss"),
                },
                {
                    "label": "SGD, batch 10 (mini-batch loss)",
                    "x": array_ref("train", "sb_step"),
                    "y": array_ref("train", "sb_batch_loss"),
                },
            ],
            logy=True,
        )
    )
