"""fernandez2025's figure specs (split from :mod:`curvscope.experiments.fernandez2025`, files under 500 lines)."""

from __future__ import annotations

from typing import Any

from curvscope.experiments.run import Figure, RunDir, array_ref

LOG = {"logx": True, "logy": True, "ymin_ratio": 0.003, "hlines": [{"y": 1.0, "label": "chance k/D"}]}
XLABEL, YLABEL = "k (mask size = eigenspace dimension)", "overlap / (k/D)  (log scale)"


def figures(run: RunDir, cfg: Any, res: dict, steps: list[int]) -> None:
    """Masks vs eigenspace per net (final snapshot and over training), model sizes, top eigenpairs.

    Series with a band come first: the report fills bands in the colour cycle's order, so the
    first band matches the first line, and so on.
    """
    ks = list(cfg.ks)
    band = {"x": ks, "marker": "."}
    for i, net in enumerate(cfg.nets):
        D, last = res[i][0]["D"], f"masks_net{i}_s{steps[-1]}"

        def ref(key, step=last):
            return array_ref(step, key)

        random = {**band, "label": "random (chance, 95% band)", "y": ref("random_mean"),
                  "band": [ref("random_lo"), ref("random_hi")]}  # fmt: skip
        cert = res[i][-1]["info"].get("certified")
        run.figure(Figure(
            f"masks_net{i}",
            f"{net.name} (D={D}) after training: masks vs top-k eigenspace", XLABEL, YLABEL, **LOG,
            series=[random,
                    {**band, "label": "layer-matched random (mean, 95% band)", "y": ref("layer_matched_mean"),
                     "band": [ref("layer_matched_lo"), ref("layer_matched_hi")]},
                    {"label": "magnitude (global)", "x": ks, "y": ref("magnitude"), "marker": "o"},
                    {"label": "magnitude (per layer)", "x": ks, "y": ref("magnitude_layer"), "marker": "s"},
                    {"label": "best possible mask", "x": ks, "y": ref("best"), "marker": "^"}],
            caption=f"Top-k eigenspace (by |λ|) from {res[i][-1]['method']}; {cert} leading eigenpairs certified "
            f"(residual ≤ {cfg.certify_rtol}·|λ|). Bands: 2.5–97.5% of {cfg.num_random} Monte-Carlo masks. "
            "Layer-matched: as many entries per layer as the magnitude mask.",
        ))  # fmt: skip
        snaps = [{"label": f"magnitude, epoch {e:g}", "x": ref("k", f"masks_net{i}_s{s}"),
                  "y": ref("magnitude", f"masks_net{i}_s{s}"), "marker": "o"}
                 for e, s in zip(cfg.snapshot_epochs, steps)]  # fmt: skip
        run.figure(Figure(
            f"training_net{i}",
            f"{net.name} (D={D}): magnitude mask over training", XLABEL, YLABEL, **LOG,
            series=[{**random, "label": "random, end of training (95% band)"}, *snaps],
            caption="Global magnitude mask vs the top-k Hessian eigenspace at each snapshot"
            + (f" (k ≤ {max(cfg.early_ks)} before the last)." if cfg.early_ks else "."),
        ))  # fmt: skip
    finals = [f"masks_net{i}_s{steps[-1]}" for i in range(len(cfg.nets))]
    run.figure(Figure(
        "model_sizes",
        "magnitude masks after training: two model sizes", XLABEL, YLABEL, **LOG,
        series=[*({**band, "label": f"random, {net.name} (95% band)", "y": array_ref(f, "random_mean"),
                   "band": [array_ref(f, "random_lo"), array_ref(f, "random_hi")]} for net, f in zip(cfg.nets, finals)),
                *({"label": f"magnitude, {net.name} (D={res[i][0]['D']})", "x": ks, "y": array_ref(f, "magnitude"),
                   "marker": "o"} for i, (net, f) in enumerate(zip(cfg.nets, finals)))],
        caption="Paper: magnitude masks overlap the top eigenspace more for larger nets.",
    ))  # fmt: skip
    _eigenvalue_figure(run, cfg, res, finals)


def _eigenvalue_figure(run: RunDir, cfg: Any, res: dict, finals: list[str]) -> None:
    """|λ| of the top-k pairs after training, each with its residual ‖Hv − λv‖ beside it."""
    series = []
    for i, (net, f) in enumerate(zip(cfg.nets, finals)):
        series.append({"label": f"{net.name}, {res[i][-1]['method']}: |λ|", "y": array_ref(f, "abs_eigenvalues"),
                       "style": "scatter", "size": 6})  # fmt: skip
        series.append({"label": f"{net.name}: residual ‖Hv − λv‖", "y": array_ref(f, "residuals"),
                       "style": "scatter", "size": 2})  # fmt: skip
        if "sketch_abs_eigenvalues" in res[i][-1]:
            series.append({"label": f"{net.name}, sketch: |λ|", "y": array_ref(f, "sketch_abs_eigenvalues"),
                           "style": "scatter", "size": 2})  # fmt: skip
    run.figure(Figure(
        "top_eigenvalues",
        f"top-{max(cfg.ks)} Hessian eigenvalues by |λ| after training, with their residuals",
        "rank (by |λ|)", "|eigenvalue|, residual  (log scale)", logy=True, ymin_ratio=1e-9,
        series=series,
        caption="The eigenpairs whose span defines the top-k eigenspaces (sorted by |λ|); a pair is certified "
        f"when its residual is ≤ {cfg.certify_rtol}·|λ| (an eigenvalue of H lies within the residual of λ). "
        "Exact (dense) pairs have residual 0 and are not drawn on the log scale.",
    ))  # fmt: skip
