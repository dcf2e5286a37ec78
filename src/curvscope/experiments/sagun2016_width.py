"""sagun2016, the width sweep: the bulk at zero grows with the network, the outliers stay (Sagun et al. 2016).

Split from :mod:`curvscope.experiments.sagun2016` (files under 500 lines); the settings and the
claims' criteria are documented there.
"""

from __future__ import annotations

import itertools

import torch

from curvscope.experiments import instruments as ins
from curvscope.experiments.paper_values import SAGUN2016
from curvscope.experiments.registry import Context
from curvscope.experiments.run import Claim, Figure, RunDir, array_ref
from curvscope.experiments.sagun2016_nets import (
    BULK_REL,
    C_MAIN,
    F64,
    GUARD,
    SRC,
    TOP_WIDTH,
    Settings,
    bulk_share,
    dense_eigenvalues,
    fit_net,
    hessian_of,
)


# ---------------------------------------------------------------- width sweep
def width_sweep(run: RunDir, ctx: Context, s: Settings) -> None:
    """Bulk fraction (share of |λ| < 1e-3 λ_max) and top-10 mean vs width (MSE, C = 10)."""
    rows, dens = [], {}
    for w in s.widths:
        row = _width_row(run, ctx, s, w)
        dens[f"w = {w} (D = {row['D']})"] = w
        rows.append(row)
    run.metric("width_sweep", rows)
    run.step("width_table", lambda: _width_table(run, s, rows))
    _width_claims(run, s, rows)
    _width_figures(run, s, rows, dens)


def _width_row(run: RunDir, ctx: Context, s: Settings, w: int) -> dict:
    """Train the MSE net of width ``w``; its top eigenvalues, SLQ bulk share, exact one if D is small."""
    model, data, tag, fitted = fit_net(run, ctx, s, "mse", C_MAIN, w)
    H = hessian_of(model, data, "mse")
    D = H.shape[0]
    # For w = 32 this reuses the class sweep's step (31 eigenvalues there): keep the top 10.
    top = ins.eigenpairs(run, f"top_{tag}", H, TOP_WIDTH, seed=ctx.seed, keep_vectors=False, progress=ctx.progress)
    top_vals = top["eigenvalues"][:TOP_WIDTH]
    lam_max = top_vals[0].item()
    slq = ins.density(
        run,
        f"density_{tag}",
        H,
        num_probes=s.slq_probes,
        num_steps=s.slq_steps,
        seed=ctx.seed,
        progress=ctx.progress,
    )
    row = {
        "width": w,
        "D": D,
        "bulk_slq": round(_slq_bulk_share(slq, lam_max), 4),
        "top10_mean": round(top_vals.mean().item(), 4),
        "lambda_max": round(lam_max, 4),
        "loss": round(fitted["final_loss"], 4),
        "status_eigsh": str(top["status"]),
        "status_slq": str(slq["status"]),
    }
    if D <= s.exact_max_dim:
        lam = run.step(f"exact_{tag}", lambda: {"eigenvalues": dense_eigenvalues(H)})["eigenvalues"]
        row["bulk_exact"] = round(bulk_share(lam), 4)
    return row


def _slq_bulk_share(slq: dict, lam_max: float) -> float:
    """SLQ quadrature mass of the Ritz nodes with ``|θ| < BULK_REL · λ_max``, averaged over probes."""
    inside = (slq["nodes"].abs() < BULK_REL * lam_max).double()
    return float((slq["weights"] * inside).sum() / slq["weights"].shape[0])


def _width_table(run: RunDir, s: Settings, rows: list[dict]) -> dict:
    """The sweep's rows as arrays for the figures, with each width's SLQ density (floored)."""
    out = {
        k: torch.tensor([float(r[k]) for r in rows], dtype=F64)
        for k in ("width", "bulk_slq", "top10_mean", "lambda_max")
    }
    ex = [r for r in rows if "bulk_exact" in r]
    out["exact_width"] = torch.tensor([float(r["width"]) for r in ex], dtype=F64)
    out["bulk_exact"] = torch.tensor([r["bulk_exact"] for r in ex], dtype=F64)
    for w in s.widths:  # densities with a floor, so the log axis stays readable
        d = run.arrays(f"density_mse_C{C_MAIN}_w{w}")
        out[f"grid_w{w}"], out[f"pdf_w{w}"] = d["grid"], d["pdf"].clamp_min(1e-6 * d["pdf"].max())
    return out


def _width_claims(run: RunDir, s: Settings, rows: list[dict]) -> None:
    """Bulk grows with width (paper), top eigenvalues stay within 2× (guard), SLQ vs exact (sanity)."""
    fr = [r["bulk_slq"] for r in rows]
    tops = [r["top10_mean"] for r in rows]
    run.claim(
        Claim(
            "bulk_grows_with_width",
            f"MSE, C = {C_MAIN}: the share of eigenvalues with |λ| < 1e-3·λ_max grows with width "
            f"(SLQ, {s.slq_probes} probes × {s.slq_steps} steps, at every width)",
            {f"w={r['width']} (D={r['D']})": r["bulk_slq"] for r in rows},
            "strictly increasing in width (direction stated by the paper)",
            all(b > a for a, b in itertools.pairwise(fr)),
            SRC,
            kind="paper",
            paper_value=SAGUN2016["bulk"],
            inputs={f"{m} w={r['width']}": r[f"status_{m}"] for r in rows for m in ("eigsh", "slq")},
        )
    )
    run.claim(
        Claim(
            "top_eigenvalues_stay_with_width",
            f"the mean of the top {TOP_WIDTH} eigenvalues (eigsh) stays within a factor 2 across widths",
            {
                "top10_mean": {f"w={r['width']}": r["top10_mean"] for r in rows},
                "max/min": round(max(tops) / min(tops), 3),
            },
            "max/min ≤ 2 (factor measured here, a guard)",
            max(tops) / min(tops) <= 2.0,
            GUARD,
            kind="regression",
            inputs={f"eigsh w={r['width']}": r["status_eigsh"] for r in rows},
        )
    )
    ex = [r for r in rows if "bulk_exact" in r]
    run.claim(
        Claim(
            "bulk_fraction_slq_vs_exact",
            "SLQ bulk fraction vs the exact one (dense spectrum) where D is small enough",
            {f"w={r['width']}": {"slq": r["bulk_slq"], "exact": r["bulk_exact"]} for r in ex},
            "reported: the accuracy of the SLQ estimator used in the width claim",
            None,
            "curvscope SLQ vs dense eigvalsh",
            kind="sanity",
        )
    )


def _width_figures(run: RunDir, s: Settings, rows: list[dict], dens: dict[str, int]) -> None:
    """Bulk fraction vs width, top eigenvalues vs width, and the SLQ densities per width (log y)."""
    tops = [r["top10_mean"] for r in rows]
    ref = {k: array_ref("width_table", k) for k in ("width", "bulk_slq", "exact_width", "bulk_exact")}
    run.figure(
        Figure(
            "bulk_fraction_vs_width",
            f"bulk fraction (|λ| < 1e-3·λ_max) vs width, MSE, C = {C_MAIN}",
            "hidden width w",
            "fraction of eigenvalues in the bulk",
            series=[
                {"label": "SLQ (all widths)", "x": ref["width"], "y": ref["bulk_slq"], "marker": "o"},
                {"label": "exact (dense)", "x": ref["exact_width"], "y": ref["bulk_exact"], "marker": "s"},
            ],
            caption="The near-zero share of the spectrum grows with the number of parameters (same data). "
            f"SLQ: {s.slq_probes} probes × {s.slq_steps} Lanczos steps, quadrature mass of the Ritz nodes in "
            "(−t, t), t = 1e-3·λ_max; exact: dense spectrum where D ≤ "
            f"{s.exact_max_dim}.",
        )
    )
    run.figure(
        Figure(
            "top_eigenvalues_vs_width",
            f"top eigenvalues vs width, MSE, C = {C_MAIN} (eigsh)",
            "hidden width w",
            "eigenvalue",
            series=[
                {
                    "label": f"mean of top {TOP_WIDTH}",
                    "x": ref["width"],
                    "y": array_ref("width_table", "top10_mean"),
                    "marker": "o",
                },
                {"label": "λ_max", "x": ref["width"], "y": array_ref("width_table", "lambda_max"), "marker": "s"},
            ],
            hlines=[{"y": 0.0}],  # anchors the axis at 0, so relative changes read true
            caption=f"Mean of the top {TOP_WIDTH} changes by {max(tops) / min(tops):.2f}× while D grows "
            f"{rows[-1]['D'] / rows[0]['D']:.1f}× (claim: within 2×).",
        )
    )
    run.figure(
        Figure(
            "width_densities",
            f"SLQ spectral densities vs width, MSE, C = {C_MAIN} (log scale)",
            "eigenvalue λ",
            "density (log scale)",
            series=[
                {
                    "label": label,
                    "x": array_ref("width_table", f"grid_w{w}"),
                    "y": array_ref("width_table", f"pdf_w{w}"),
                }
                for label, w in dens.items()
            ],
            logy=True,
            caption="Same data, wider nets: the mass at zero grows, the outliers stay. Papyan broadening; "
            "floor 1e-6·max.",
        )
    )
