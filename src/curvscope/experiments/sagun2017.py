"""Sagun, Evci, Güney, Dauphin & Bottou 2017: G carries the outliers; large- and small-batch solutions share a basin.

What the paper claims ("Empirical analysis of the Hessian of over-parametrized neural
networks", arXiv:1706.04454; definitions in ``docs/science.md``, "Gauss–Newton split"):

- the Hessian splits as ``H = G + H_res``: the Gauss–Newton term ``G = (1/N) Σ J_iᵀ A_i J_i``
  is PSD and carries the outliers; the residual ``H_res = (1/N) Σ_i Σ_c r_ic ∇²f_c`` is
  indefinite, carries every negative eigenvalue and shrinks with the residuals;
- a small-batch SGD run started from a large-batch (here full-batch GD) solution ends in
  the same basin: the loss along the straight line between the two has no barrier
  (monotone on ``[0, 1]``), and the small-batch point is flatter (smaller ``λ_max``).

Claim kinds: ``G ⪰ 0`` and Weyl's ``λ_min(H_res) ≤ λ_min(H)`` are identities of the split
(``sanity``); "the outliers come from G" is tested by a rule, not a fitted number: by Weyl
``|λ_i(H) − λ_i(G)| ≤ ‖H_res‖``, so when ``‖H_res‖`` is below the smallest of the top-k
eigenvalues of ``H`` the residual cannot have made those outliers. The 10% agreement of
the top eigenvalues measured here is kept as a ``regression`` guard.

What is measured. Full-batch GD (lr 0.05, momentum 0.9) from initialisation to θ_LB, then
batch-10 SGD (lr 0.01, momentum 0.9) continued from θ_LB to θ_SB; cross-entropy, ReLU MLPs with
two hidden layers of 32. At an early GD iterate (step 40, loss still ≈ 0.5–1) and at θ_LB: the
top-10 eigenvalues of H and G (certified Lanczos) and SLQ densities of H, G and H_res (their
extreme Ritz values give λ_min and λ_max of each). Along θ(α) = (1 − α) θ_LB + α θ_SB,
α ∈ [−0.5, 1.5] (41 points): the loss, and ``λ_max`` by eigsh
(:func:`curvscope.train.interpolate`). The barrier is
``max_{α∈[0,1]} L(α) − ((1 − α) L(0) + α L(1))`` on the grid.

Quick scale: scikit-learn digits (1797 8×8 images), MLP 64-32-32-10 (D = 3466), all in float64
with every image in the curvature; 300 GD steps, 10 SGD epochs, λ_max at 9 values of α, SLQ
4 probes × 60 steps.

Full scale (:mod:`.sagun2017_parts`): ``ctx.image_data()`` (Fashion-MNIST, or ``--data``), all
training images (60k) flattened, MLP 784-32-32-10 (D = 26,506; the input width follows the
data), trained in float32 (a full-batch GD step on 60k images is ≈ 0.17 CPU-s in float32,
3× that in float64). 1000 GD steps (≈ 3 CPU-min) and 10 SGD epochs (60k steps, ≈ 1 ms each).
Curvature (H, G, H_res, λ_max on the line) in float64 on a class-balanced subset of 2000
training images (200 per class; D is far beyond a dense Hessian, and an HVP on 2000 images
costs ≈ 20 ms, so 16 SLQ probes × 100 steps for three operators at two points plus 41 λ_max
solves stay ≈ 5 CPU-min); the loss along the line in float64 on all training images. Whole
run ≈ 10 CPU-min single-threaded. The network is of the paper's kind (a fully connected ReLU
net on MNIST-type images); its width is set by the CPU budget, not by the paper.

Caveats: λ_max of full-batch GD with momentum is bounded by its stability edge 2(1 + β)/η
(= 76 here; Cohen et al. 2021), which the run records next to λ_max(θ_LB); SGD also changes the
loss, and for cross-entropy λ_max falls with the loss near a solution, so this run does not
separate "flatter because of the noise" from "flatter because lower".
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from curvscope.data import batches
from curvscope.experiments import instruments as ins
from curvscope.experiments import sagun2017_parts as parts
from curvscope.experiments.paper_values import SAGUN2017
from curvscope.experiments.registry import Context, Recipe, by_scale
from curvscope.experiments.run import Claim, Figure, RunDir, array_ref
from curvscope.operators import GGN, Hessian, Residual
from curvscope.train import TrainConfig, get_loss, train

F64 = torch.float64
C = 10
TOP_K = 10
SRC = "Sagun et al. 2017 (arXiv:1706.04454), large-batch vs small-batch solutions"
SRC_SPLIT = "Sagun et al. 2017 (arXiv:1706.04454), Gauss–Newton decomposition of the Hessian"
SANITY = "identity of the split H = G + H_res (docs/science.md)"
GUARD = "measured by curvscope (docs/science.md, 'Claim kinds and verdicts')"
POINTS = {"early": "early GD iterate", "lb": "large-batch solution θ_LB"}
OPS = {"H": Hessian, "G": GGN, "Hres": Residual}
OP_LABEL = {"H": "H", "G": "G (Gauss–Newton)", "Hres": "H_res (residual)"}


@dataclass(frozen=True)
class Settings:
    """Scale-dependent sizes (quick: ≤ 90 s on one core; full: longer runs and finer grids, for a GPU)."""

    gd_steps: int
    early_step: int
    sb_epochs: float
    line_points: int
    lambda_every: int
    slq_probes: int
    slq_steps: int
    data: str = "digits"  # "digits", or "images": ctx.image_data() (Fashion-MNIST unless --data)
    widths: tuple[int, ...] = (32, 32)
    train_dtype: str = "float64"
    train_samples: int | None = None  # None: the whole training split
    curvature_samples: int | None = None  # class-balanced subset for H, G, H_res (None: the training set)
    eval_batch: int | None = None  # batch of the metric and line-loss passes (None: one batch)


QUICK = Settings(
    gd_steps=300,
    early_step=40,
    sb_epochs=10,
    line_points=41,
    lambda_every=5,
    slq_probes=4,
    slq_steps=60,
)
FULL = Settings(
    gd_steps=1000,
    early_step=40,
    sb_epochs=10,
    line_points=41,
    lambda_every=1,
    slq_probes=16,
    slq_steps=100,
    data="images",
    widths=(32, 32),
    train_dtype="float32",
    curvature_samples=2000,
    eval_batch=10000,
)
GD = {"lr": 0.05, "momentum": 0.9}
SB = {"lr": 0.01, "momentum": 0.9, "batch_size": 10}


def _train(run: RunDir, ctx: Context, s: Settings, model, data) -> dict:
    """Full-batch GD to θ_LB (snapshot at the early step), then batch-10 SGD from θ_LB to θ_SB."""

    def fit() -> dict:
        gd = TrainConfig(**GD, batch_size=None, steps=s.gd_steps, seed=ctx.seed, snapshot_steps=(s.early_step,),
                         eval_batch_size=s.eval_batch)  # fmt: skip
        hist = train(model, data, gd, progress=ctx.progress)
        out = {f"early.{k}": v.cpu() for k, v in hist.snapshot(s.early_step).load_state().items()}
        out.update({f"lb.{k}": v.cpu() for k, v in hist.final.load_state().items()})
        sb = TrainConfig(**SB, epochs=s.sb_epochs, seed=ctx.seed, eval_batch_size=s.eval_batch)
        hist_sb = train(model, data, sb, progress=ctx.progress)
        out.update({f"sb.{k}": v.cpu() for k, v in hist_sb.final.load_state().items()})
        out["gd_loss"] = torch.tensor(hist.batch_loss, dtype=F64)
        out["sb_batch_loss"] = torch.tensor(hist_sb.batch_loss, dtype=F64)
        out["gd_step"] = torch.arange(len(hist.batch_loss), dtype=F64)
        out["sb_step"] = len(hist.batch_loss) + torch.arange(len(hist_sb.batch_loss), dtype=F64)
        out["loss"] = {
            "early": hist.snapshot(s.early_step).metrics["loss"],
            "lb": hist.final.metrics["loss"],
            "sb": hist_sb.final.metrics["loss"],
        }
        out["accuracy"] = {"lb": hist.final.metrics["accuracy"], "sb": hist_sb.final.metrics["accuracy"]}
        return out

    return run.step("train", fit)


# ---------------------------------------------------------------- G vs H_res
def _split(run: RunDir, ctx: Context, s: Settings, model, data, fitted: dict) -> dict:
    """Top eigenvalues of H and G, SLQ densities of H, G, H_res at the early iterate and at θ_LB."""
    loss_fn = get_loss("cross_entropy")
    full = batches(data)
    rows = {}
    for point in POINTS:
        model.load_state_dict(parts.state(fitted, point, model))
        ops = {name: Op(model, loss_fn, full) for name, Op in OPS.items()}
        row = {"loss": round(fitted["loss"][point], 4)}
        for name in ("H", "G"):
            top = ins.eigenpairs(
                run,
                f"top_{name}_{point}",
                ops[name],
                TOP_K,
                seed=ctx.seed,
                keep_vectors=False,
                progress=ctx.progress,
            )
            row[f"top_{name}"] = top["eigenvalues"]
            row[f"status_eigsh_{name}"] = str(top["status"])
        for name, op in ops.items():
            d = ins.density(
                run,
                f"density_{name}_{point}",
                op,
                num_probes=s.slq_probes,
                num_steps=s.slq_steps,
                seed=ctx.seed,
                progress=ctx.progress,
            )
            row[f"min_{name}"], row[f"max_{name}"] = d["range_lo"], d["range_hi"]
            row[f"negmass_{name}"] = d["negative_mass"]
            row[f"status_slq_{name}"] = str(d["status"])
        rel = ((row["top_H"] - row["top_G"]).abs() / row["top_H"].abs()).max().item()
        row["top_rel_diff"] = rel
        rows[point] = row

    def plot() -> dict:
        out = {}
        for point in POINTS:
            for name in OPS:  # densities with a floor, so the log axis stays readable
                d = run.arrays(f"density_{name}_{point}")
                out[f"grid_{name}_{point}"] = d["grid"]
                out[f"pdf_{name}_{point}"] = d["pdf"].clamp_min(1e-6 * d["pdf"].max())
            out[f"top_H_{point}"] = rows[point]["top_H"]
            out[f"top_G_{point}"] = rows[point]["top_G"]
        return out

    run.step("split_plot", plot)
    return rows


def _r(x: float) -> float:
    return float(f"{x:.4g}")


def _inputs(rows: dict, *names: str, eigsh: tuple[str, ...] = (), point: str | None = None) -> dict:
    """Statuses of the SLQ runs of ``names`` and eigsh runs of ``eigsh`` (at ``point``, or at both)."""
    pts = {p: row for p, row in rows.items() if point in (None, p)}
    out = {f"SLQ {n} ({p})": row[f"status_slq_{n}"] for p, row in pts.items() for n in names}
    return {**out, **{f"eigsh {n} ({p})": row[f"status_eigsh_{n}"] for p, row in pts.items() for n in eigsh}}


def _split_claims(run: RunDir, rows: dict) -> None:
    """Identities of the split (sanity), then what the paper says about G, H_res and the outliers."""
    r = _r

    def inputs(*names: str, eigsh: tuple[str, ...] = ()) -> dict:
        return _inputs(rows, *names, eigsh=eigsh)

    run.metric(
        "split",
        {p: {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in row.items()} for p, row in rows.items()},
    )

    g_min = {p: r(row["min_G"] / row["max_G"]) for p, row in rows.items()}
    run.claim(
        Claim(
            "gauss_newton_psd",
            "G has no negative eigenvalue: smallest SLQ Ritz value of G relative to its largest",
            g_min,
            "≥ −1e-8 at both points (round-off)",
            all(v >= -1e-8 for v in g_min.values()),
            SANITY + ": G ⪰ 0 for cross-entropy",
            kind="sanity",
            inputs=inputs("G"),
        )
    )
    neg = {
        p: {"λ_min(H)": r(row["min_H"]), "λ_min(H_res)": r(row["min_Hres"]), "λ_max(H_res)": r(row["max_Hres"])}
        for p, row in rows.items()
    }
    run.claim(
        Claim(
            "hessian_has_negative_eigenvalues",
            "H has negative eigenvalues and H_res is indefinite, at an early iterate and at the solution θ_LB "
            "(extreme SLQ Ritz values)",
            neg,
            "at both points: λ_min(H) < 0 < λ_max(H_res) and λ_min(H_res) < 0",
            all(row["min_H"] < 0 < row["max_Hres"] and row["min_Hres"] < 0 for row in rows.values()),
            SRC_SPLIT,
            kind="paper",
            paper_value=SAGUN2017["negative"],
            inputs=inputs("H", "Hres"),
        )
    )
    run.claim(
        Claim(
            "residual_carries_negative",
            "the negative eigenvalues come from H_res: λ_min(H_res) ≤ λ_min(H) (Weyl, since G ⪰ 0)",
            neg,
            "at both points: λ_min(H_res) ≤ λ_min(H) + 1e-6·λ_max(H) (SLQ Ritz values, not exact)",
            all(row["min_Hres"] <= row["min_H"] + 1e-6 * row["max_H"] for row in rows.values()),
            SANITY + ": Weyl's inequality",
            kind="sanity",
            inputs=inputs("H", "Hres"),
        )
    )
    _outlier_claims(run, rows)


def _outlier_claims(run: RunDir, rows: dict) -> None:
    """The outliers come from G (Weyl rule, paper), the measured agreement (guard), the residual's size."""
    r = _r
    lb = rows["lb"]
    res_norm = max(abs(lb["min_Hres"]), abs(lb["max_Hres"]))
    lam_k = float(lb["top_H"][-1])
    run.claim(
        Claim(
            "outliers_from_gauss_newton",
            f"G carries the outliers at the solution θ_LB: ‖H_res‖ is smaller than each of the top-{TOP_K} "
            "eigenvalues of H, so (Weyl: |λ_i(H) − λ_i(G)| ≤ ‖H_res‖) the residual cannot have made them",
            {"‖H_res‖": r(res_norm), f"λ_{TOP_K}(H)": r(lam_k), f"λ_{TOP_K}(G)": r(float(lb["top_G"][-1]))},
            f"‖H_res‖ < λ_{TOP_K}(H) at θ_LB",
            res_norm < lam_k,
            SRC_SPLIT,
            kind="paper",
            paper_value=SAGUN2017["outliers"],
            inputs=_inputs(rows, "Hres", eigsh=("H", "G"), point="lb"),
        )
    )
    rel = {p: r(row["top_rel_diff"]) for p, row in rows.items()}
    run.claim(
        Claim(
            "top_eigenvalues_H_G_agree",
            f"the top-{TOP_K} eigenvalues of H and G agree at θ_LB (early iterate reported)",
            {"max_i |λ_i(H) − λ_i(G)| / λ_i(H)": rel},
            "≤ 0.10 at θ_LB (10%: measured here, a guard)",
            rel["lb"] <= 0.10,
            GUARD,
            kind="regression",
            inputs=_inputs(rows, eigsh=("H", "G"), point="lb"),
        )
    )
    norm = {p: max(abs(row["min_Hres"]), abs(row["max_Hres"])) for p, row in rows.items()}
    shrink = {p: r(norm[p] / row["max_H"]) for p, row in rows.items()}
    run.claim(
        Claim(
            "residual_shrinks_with_loss",
            "‖H_res‖ / λ_max(H) at the early iterate and at θ_LB (the residual term follows the loss)",
            {
                **shrink,
                "‖H_res‖": {p: r(v) for p, v in norm.items()},
                "loss": {p: row["loss"] for p, row in rows.items()},
            },
            "reported, not asserted",
            None,
            SRC_SPLIT,
            kind="paper",
            paper_value=SAGUN2017["residual"],
        )
    )
    _split_figures(run, rows)


def _split_figures(run: RunDir, rows: dict) -> None:
    """Densities of H, G, H_res at both points; top eigenvalues of H and G."""
    for point, label in POINTS.items():
        run.figure(
            Figure(
                f"densities_{point}",
                f"H, G and H_res at the {label} (loss {rows[point]['loss']:.3g}; SLQ, log scale)",
                "eigenvalue λ",
                "density (log scale)",
                series=[
                    {
                        "label": OP_LABEL[name],
                        "x": array_ref("split_plot", f"grid_{name}_{point}"),
                        "y": array_ref("split_plot", f"pdf_{name}_{point}"),
                    }
                    for name in OPS
                ],
                logy=True,
                vlines=[
                    {"x": v, "color": "red", "label": f"top-{TOP_K} eigenvalues of H (eigsh)" if i == 0 else None}
                    for i, v in enumerate(rows[point]["top_H"].tolist())
                ],
                caption="G (PSD) carries the outliers; H_res is indefinite and holds the negative part. "
                "Papyan broadening, floor 1e-6·max.",
            )
        )
    run.figure(
        Figure(
            "top_eigenvalues_H_G",
            f"top-{TOP_K} eigenvalues of H and G",
            "rank k",
            "λ_k",
            series=[
                {"label": f"{op}, {POINTS[p]}", "y": array_ref("split_plot", f"top_{op}_{p}"), "marker": m}
                for p in POINTS
                for op, m in (("H", "o"), ("G", "x"))
            ],
            caption="Certified Lanczos (eigsh). Where the loss is small the two coincide: the outliers are G's.",
        )
    )


#: The papers' own sizes where larger (``--scale full --device cuda``): H, G and H_res of the whole
#: training set (60k images) instead of a 2000-image class-balanced subset.
PAPER = replace(FULL, curvature_samples=None)


def run_sagun2017(run: RunDir, ctx: Context) -> None:
    """G vs H_res spectra and the large-batch / small-batch interpolation (see the module docstring)."""
    s = by_scale(ctx.scale, QUICK, FULL, PAPER)
    run.metric("settings", {**s.__dict__, "gd": GD, "sb": SB})
    setup = parts.setup(ctx, s)
    run.metric("setup", setup["info"])
    data, curv, model = setup["data"], setup["curv"], setup["model"]
    fitted = _train(run, ctx, s, setup["train_model"], data)
    run.metric("train_loss", fitted["loss"])
    run.metric("train_accuracy", fitted["accuracy"])
    _split_claims(run, _split(run, ctx, s, model, curv, fitted))
    lb, sb = (torch.cat([v.flatten().double() for v in parts.state(fitted, p, model).values()]) for p in ("lb", "sb"))
    run.metric("distance_lb_sb", {"‖θ_SB − θ_LB‖": _r(float((sb - lb).norm())), "‖θ_LB‖": _r(float(lb.norm()))})
    edge = 2 * (1 + GD["momentum"]) / GD["lr"]
    parts.line_claims(run, parts.line(run, ctx, s, model, data, curv, fitted), edge)
    parts.line_figures(run)


RECIPE = Recipe(
    name="sagun2017",
    title="Sagun et al. 2017: G carries the outliers, H_res the negative part; LB and SB solutions share a basin",
    summary="MLP 64-32-32-10 on scikit-learn digits: spectra of H, the Gauss–Newton term G and the residual H_res "
    "early in training and at a full-batch GD solution; then batch-10 SGD from that solution, and the loss and "
    "λ_max along the straight line between the two solutions.",
    run=run_sagun2017,
    settings=lambda scale: by_scale(scale, QUICK, FULL, PAPER),
    papers="Sagun, Evci, Güney, Dauphin, Bottou 2017, Empirical analysis of the Hessian of over-parametrized "
    "neural networks (arXiv:1706.04454)",
)
