"""fortganguli2019's figure specs (split from :mod:`curvscope.experiments.fortganguli2019`, files under 500 lines)."""

from __future__ import annotations

from typing import Any

from curvscope.experiments.goldilocks import goldilocks_figures
from curvscope.experiments.run import Figure, RunDir, array_ref
from curvscope.metrics import confinement_chance


def _xy(name: str, title: str, xlabel: str, ylabel: str, series: list, **kw) -> Figure:
    """An x–y figure spec."""
    return Figure(name, title, xlabel, ylabel, series=series, **kw)


def _per_run(dyn: dict, key: str, x: str = "epoch", prefix: str = "", **kw) -> list[dict]:
    """One series per run from its ``dynamics_<run>`` step."""
    return [{"label": prefix + d["label"], "x": array_ref(f"dynamics_{t}", x), "y": array_ref(f"dynamics_{t}", key),
             "marker": "o", **kw} for t, d in dyn.items()]  # fmt: skip


def figures(run: RunDir, s: Any, dyn: dict, gold_label: str, tag: str, C: int) -> None:
    """Figure specs: cosine heat map, confinement, λ_max, loss, persistence, Goldilocks, hyperplanes.

    ``dyn``: the runs' dynamics steps by tag; ``tag``: the main run (the heat map and mini-batch band); ``C``: classes.
    """
    m = dyn[tag]
    chance = confinement_chance(C - 1, int(m["num_params"]))
    ticks = [f"z{k}" if c == 0 else "" for k in range(C) for c in range(C)]
    run.figure(Figure(
        "logit_gradient_cosines", f"logit-gradient cosines by (logit, class), {m['label']}, epoch "
        f"{m['logit_epoch'][-1]:g}", "(logit k', class c'): C classes per logit",
        "(logit k, class c)", kind="heatmap", z=array_ref(m["logit_step"], "blocks"),
        xticklabels=ticks, yticklabels=ticks,
        caption="Mean cosine of ∇θ z_k(x_i) and ∇θ z_k'(x_j) (i ≠ j), ordered by logit then class; bright "
        "diagonal C×C blocks are the same-logit clusters of Fort & Ganguli 2019.",
    ))  # fmt: skip
    series = _per_run(dyn, "logit_same_logit", "logit_epoch", "same logit, ")
    series += _per_run(dyn, "logit_cross_logit", "logit_epoch", "cross logit, ")
    run.figure(_xy("logit_cosines_training", "mean logit-gradient cosine over training", "epoch", "mean cosine",
                   series, hlines=[{"y": 0.0, "label": "0"}]))  # fmt: skip
    mb = {"label": f"mini-batch (64) mean, band min–max, {m['label']}", "x": array_ref(f"dynamics_{tag}", "epoch"),
          "y": array_ref(f"dynamics_{tag}", "mb_mean"),
          "band": [array_ref(f"dynamics_{tag}", "mb_min"), array_ref(f"dynamics_{tag}", "mb_max")]}  # fmt: skip
    run.figure(_xy(
        "gradient_confinement", "gradient confinement f_top = ‖P g‖²/‖g‖², P onto the top C−1 = 9 eigenvectors",
        "epoch", "f_top", [*_per_run(dyn, "ftop", prefix="full batch, "), mb],
        hlines=[{"y": chance, "label": f"chance (C−1)/D = {chance:.2g} ({m['label']})"}],
    ))  # fmt: skip
    run.figure(_xy("lambda_max", "top Hessian eigenvalue over training", "epoch", "λ_max (log scale)",
                   _per_run(dyn, "lambda_max"), logy=True))  # fmt: skip
    run.figure(_xy("training_loss", "full-batch training loss at the snapshots", "epoch", "loss (log scale)",
                   _per_run(dyn, "loss"), logy=True, hlines=[{"y": 0.3, "label": "loss 0.3"}]))  # fmt: skip
    for t, d in dyn.items():
        eps = [f"{e:g}" for e in d["epoch"].tolist()]
        ch = confinement_chance(C - 1, int(d["num_params"]))
        run.figure(Figure(
            f"persistence_{t}", f"persistence of the top-(C−1) eigenspace, {d['label']}", "epoch", "epoch",
            kind="heatmap", z=array_ref(f"dynamics_{t}", "persistence"), xticklabels=eps, yticklabels=eps,
            caption=f"overlap(V(t), V(t')) = ‖V(t)ᵀV(t')‖_F²/k, k = C − 1: 1 = same subspace, chance k/D = {ch:.2g}",
        ))  # fmt: skip
    goldilocks_figures(run, s, gold_label)
