"""The figures of the Papyan (2019, 2020) reproduction (:mod:`curvscope.experiments.papyan2019`).

Declarative figures over the run's saved arrays: SLQ densities of G, H_res and the
class-structure terms, the eigenvalue hierarchy of the low-rank terms, and the overlaps and
H-vs-G agreement over training.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from curvscope.experiments import instruments as ins
from curvscope.experiments.run import Figure, RunDir, array_ref
from curvscope.train import TrainConfig, steps_per_epoch

if TYPE_CHECKING:
    from curvscope.experiments.papyan2019 import Settings


def _deep(fig: Figure) -> Figure:
    """A density figure whose log axis reaches 9 decades below the highest peak (low-rank terms spike at 0)."""
    return dataclasses.replace(fig, ymin_ratio=1e-9)


def _label(s: int, spe: int) -> str:
    """A snapshot's legend label: its SGD step and epoch."""
    return f"step {s} (epoch {s / spe:g})"


def figures(run: RunDir, cfg: Settings, results, density_steps, steps, spe, C) -> None:
    """Densities of the terms, the eigenvalue hierarchy, and the overlaps and H-vs-G over training."""
    _density_figures(run, cfg, density_steps, steps, spe, C)
    _hierarchy_figures(run, cfg, results, steps, spe, C)
    _over_training_figures(run, cfg, results, steps, spe, C)


def _density_figures(run: RunDir, cfg: Settings, density_steps, steps, spe, C) -> None:
    """SLQ densities: every term at every snapshot, H over training, vs sample size, Papyan's G_B + G_W."""
    n0 = cfg.sizes[0]
    term_labels = {"G": "G", "Hres": "H_res", "class": "G_class", "cross": "G_cross", "within": "G_within"}
    for (n, s), by_name in density_steps.items():
        epochs = s / steps_per_epoch(n, TrainConfig(epochs=1, batch_size=cfg.batch_size))
        run.figure(_deep(ins.density_figure(
            f"terms_N{n}_step{s}",
            f"N={n}, step {s} (epoch {epochs:g}): G, H_res and the class-structure terms",
            {term_labels[k]: by_name[k] for k in term_labels},
            caption=f"SLQ densities (log scale) at N={n}, step {s}. G_class (rank ≤ C) and G_cross (rank ≤ C(C−1)) "
            "carry the outliers, G_within the bulk; H_res carries the negative eigenvalues.",
        )))  # fmt: skip
    run.figure(ins.density_figure(
        "H_over_training",
        f"Hessian density over training, N={n0}",
        {_label(s, spe): density_steps[(n0, s)]["H"] for s in steps},
        caption="SLQ densities of H (log scale) at each snapshot: the outliers leave the bulk as training proceeds.",
    ))  # fmt: skip
    final = steps[-1]
    both = {f"{term} N={n}": density_steps[(n, final)][key] for n in cfg.sizes for key, term in
            (("G", "G"), ("within", "G_within"), ("Hres", "H_res"))}  # fmt: skip
    run.figure(ins.density_figure(
        "sample_size",
        f"sample size at step {final}: G, G_within and H_res for N = {' and '.join(map(str, cfg.sizes))}",
        both,
        caption="Same SGD steps on nested class-balanced training sets (the smaller one sees more epochs). Papyan: "
        "the outliers come from the class / cross-class means, the bulk from the within-class scatter.",
    ))  # fmt: skip
    run.figure(ins.density_figure(
        "papyan_split",
        f"Papyan's split G = G_B + G_W at step {final}, N={n0}",
        {"G": density_steps[(n0, final)]["G"], "G_B": density_steps[(n0, final)]["G_B"],
         "G_W": density_steps[(n0, final)]["G_W"]},
        caption=f"G_B (p-weighted cross-class means, rank C(C−1) = {C * (C - 1)}) holds the outliers; G_W the bulk.",
    ))  # fmt: skip


def _hierarchy_figures(run: RunDir, cfg: Settings, results, steps, spe, C) -> None:
    """Eigenvalues by rank of H and the low-rank terms, and the singular values of the G_B factor."""
    n0, final = cfg.sizes[0], steps[-1]
    last = f"measure_N{n0}_s{final}"
    run.figure(Figure(
        "hierarchy",
        f"three-level hierarchy at step {final}, N={n0}: eigenvalues by rank",
        "rank", "eigenvalue (log scale)", logy=True, ymin_ratio=1e-4,
        series=[{"label": "top-(C−1) of H (eigsh)", "y": array_ref(last, "eig_H"), "style": "scatter"},
                {"label": "G_class (exact, rank ≤ C)", "y": array_ref(last, "eig_class"), "style": "scatter"},
                {"label": "G_cross (exact, rank ≤ C(C−1))", "y": array_ref(last, "eig_cross"), "style": "scatter"},
                {"label": "G_B (exact)", "y": array_ref(last, "eig_G_B"), "style": "scatter", "size": 5}],
        vlines=[{"x": C - 1, "label": "C − 1"}, {"x": C * (C - 1), "color": "red", "label": "C(C−1)"}],
        caption="Eigenvalues of the low-rank terms from their factors: C−1 outliers, then C(C−1) mini-outliers from "
        "the cross-class term, then zero (round-off).",
    ))  # fmt: skip
    run.figure(Figure(
        "rank_G_B",
        f"singular values of the G_B factor over training, N={n0}",
        "rank", "singular value / largest (log scale)", logy=True, ymin_ratio=1e-18,
        series=[{"label": _label(s, spe), "y": (r["eig_G_B"] / r["eig_G_B"][0]).sqrt().tolist(), "marker": "."}
                for r, s in zip(results[n0], steps)],
        vlines=[{"x": C * (C - 1), "color": "red", "label": f"C(C−1) = {C * (C - 1)}"}],
        hlines=[{"y": cfg.rank_rtol, "label": f"rank threshold {cfg.rank_rtol:g}"}],
        caption="G_B = F Fᵀ with F the p-weighted cross-class means (scaled): its singular values drop to round-off "
        "after exactly C(C−1) at every snapshot.",
    ))  # fmt: skip


def _over_training_figures(run: RunDir, cfg: Settings, results, steps, spe, C) -> None:
    """The top eigenspace's overlap with the gradient means, and H vs G's top eigenvalues, per SGD step."""
    n0 = cfg.sizes[0]
    run.figure(Figure(
        "overlap_over_training",
        f"top-{C - 1} eigenspace of H vs the span of gradient means",
        "SGD step", "overlap (mean cos² of principal angles)",
        series=[s for n in cfg.sizes for s in (
            {"label": f"C² cross-class means, N={n}", "x": steps, "marker": "o",
             "y": [r["overlap_cross_means"] for r in results[n]]},
            {"label": f"C class means, N={n}", "x": steps, "marker": "x",
             "y": [r["overlap_class_means"] for r in results[n]]})],
        hlines=[{"y": 0.9, "label": "claim: 0.9"}],
        vlines=[{"x": 2 * spe, "label": f"2 epochs of N={n0}"}],
        caption="Overlap of the top-(C−1) Hessian eigenvectors with the span of the cross-class means z̄_{c,c'} "
        "(and of the class means z̄_c).",
    ))  # fmt: skip
    run.figure(Figure(
        "H_vs_G",
        f"top-{C - 1} eigenvalues of H and G: largest relative difference",
        "SGD step", "max |λ(H) − λ(G)| / λ(H) (log scale)", logy=True, ymin_ratio=0.01,
        series=[{"label": f"N={n}", "x": steps, "y": [r["rel_diff_HG"] for r in results[n]], "marker": "o"}
                for n in cfg.sizes],
        hlines=[{"y": 0.1, "label": "claim: 10%"}],
        vlines=[{"x": spe, "label": f"1 epoch of N={n0}"}],
        caption="The outliers of H are those of G once training has started.",
    ))  # fmt: skip
