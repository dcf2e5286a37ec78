"""The Goldilocks zone (Fort & Scherlis 2018) and training in random hyperplanes, for ``fortganguli2019``.

A bias-free ReLU MLP 64-16-16-10 on scikit-learn digits (quick scale) or on Fashion-MNIST
average-pooled to 8×8 (full scale; ``--data`` images likewise, the input width taken from the
data: 3·64 for CIFAR-10) with PyTorch's initial weights scaled by ``α``: on random
``d``-dimensional subspaces, ``Tr(H_d)/‖H_d‖_F`` and the fraction of positive eigenvalues of
``H_d = Mᵀ H M`` (``docs/science.md``, "Goldilocks measure"), per ``α``; and the same network
trained inside random hyperplanes (reported, not asserted). The paper claim is a rule, not a
fitted number: the maximum over the ``α`` grid lies at an interior ``α``, above both ends. The
levels and the ``α`` range of the peak measured on digits are ``regression`` guards (quick
scale only: they were not measured on other data).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from curvscope.data import batches, load_dataset, train_test_split
from curvscope.experiments.paper_values import GOLDILOCKS2018
from curvscope.experiments.registry import Context
from curvscope.experiments.run import Claim, Figure, RunDir, array_ref, trusted
from curvscope.metrics import goldilocks
from curvscope.models import build_model
from curvscope.operators import Hessian
from curvscope.train import TrainConfig, train_subspace

C = 10  # digits classes
F64 = torch.float64
PLANE_LR = {"sgd": 0.05, "adam": 0.01}
GOLD = "Fort & Scherlis 2018 (arXiv:1807.02581)"
GUARD = "measured by curvscope (docs/science.md, 'Claim kinds and verdicts')"
#: ``s`` below: the experiment's settings (alphas, gold_dim, gold_subspaces, plane_dims, plane_alphas,
#: plane_epochs, plane_optimizers).
Settings = Any


def _fmt(xs) -> str:
    """Comma-separated numbers, 3 significant digits."""
    return ", ".join(f"{float(x):.3g}" for x in xs)


def _claim(run: RunDir, name: str, statement: str, measured, criterion: str, passed, source: str = GOLD, *,
           kind: str, **kw) -> None:  # fmt: skip
    """Record a :class:`Claim` (``passed`` cast to bool; ``None`` = reported; ``kw``: ``inputs``, ``paper_value``)."""
    run.claim(Claim(name, statement, measured, criterion, None if passed is None else bool(passed), source, kind=kind,
                    **kw))  # fmt: skip


def _xy(name: str, title: str, xlabel: str, ylabel: str, series: list, **kw) -> Figure:
    """An x–y figure spec."""
    return Figure(name, title, xlabel, ylabel, series=series, **kw)


def goldilocks_net(alpha: float, ctx: Context, dtype: torch.dtype, in_features: int = 64) -> nn.Module:
    """Bias-free ReLU MLP ``in_features``-16-16-10 (D = 1440 for 64 inputs) with PyTorch's initial weights ×α."""
    return build_model(
        "mlp", in_features=in_features, widths=(16, 16), num_classes=C, bias=False, init_scale=alpha, seed=ctx.seed,
        dtype=dtype,
    ).to(ctx.device)  # fmt: skip


def gold_data(ctx: Context, s: Settings, split: str, size: int | None, dtype: torch.dtype = F64):
    """The Goldilocks images: digits (quick), or ``ctx.image_data()`` pooled to ``s.gold_image_size``² (full).

    ``size``: a class-balanced subset of this many samples (``None``: the whole split).
    """
    if s.gold_data == "digits":
        return load_dataset("digits", dtype=dtype)
    return load_dataset(ctx.image_data(), split=split, size=s.gold_image_size, flatten=True, subset=size,
                        seed=ctx.seed, dtype=dtype)  # fmt: skip


def gold_label(s: Settings, ctx: Context) -> str:
    """Network and data of the Goldilocks runs, for titles."""
    if s.gold_data == "digits":
        return "64-16-16-10, digits"
    return f"{ctx.image_data()} {s.gold_image_size}×{s.gold_image_size}"


def measure_goldilocks(run: RunDir, ctx: Context, s: Settings) -> dict:
    """``Tr(H_d)/‖H_d‖_F`` and the positive fraction of ``H_d`` on random subspaces, per init scale α."""
    data = gold_data(ctx, s, "train", s.gold_samples).to(device=ctx.device)
    width, digits = int(data.x[0].numel()), s.gold_data == "digits"
    rows, status = [], {}
    for a in s.alphas:

        def measure(a=a) -> dict:
            net = goldilocks_net(a, ctx, F64, width)
            H = Hessian(net, nn.CrossEntropyLoss(), batches(data), **({"strategy": "vmap"} if digits else {}))
            res = [goldilocks(H, s.gold_dim, seed=1000 * ctx.seed + j) for j in range(s.gold_subspaces)]
            keys = ("trace_ratio", "positive_fraction", "unresolved_fraction")
            ratio, pos, unresolved = ([getattr(r, k) for r in res] for k in keys)
            return {"ratio": torch.tensor(ratio, dtype=F64), "positive": torch.tensor(pos, dtype=F64),
                    "unresolved": torch.tensor(unresolved, dtype=F64),
                    "status": [str(r.status) for r in res]}  # fmt: skip

        # positive: eigenvalues of H_d resolved above the products' noise band (GoldilocksResult.noise_band)
        r = run.step(f"goldilocks_a{a:g}", measure)
        rows.append([a, r["ratio"].mean(), r["ratio"].min(), r["ratio"].max(), r["positive"].mean(),
                     r["unresolved"].mean()])  # fmt: skip
        sts = r.get("status") or ["unverified"]
        status[f"H_d α={a:g}"] = next((x for x in sts if not trusted(x)), sts[0])  # the worst of the subspaces
    t, keys = torch.tensor(rows, dtype=F64), ("alpha", "ratio", "ratio_min", "ratio_max", "positive")
    out = run.step("goldilocks", lambda: {k: t[:, j].contiguous() for j, k in enumerate(keys)})
    return {**out, "status": status}


def train_hyperplanes(run: RunDir, ctx: Context, s: Settings) -> dict:
    """Train the Goldilocks network inside random ``d``-dimensional hyperplanes, per (optimizer, α)."""
    if s.gold_data == "digits":
        tr, te = train_test_split(load_dataset("digits"), 0.2, seed=ctx.seed)
    else:
        tr = gold_data(ctx, s, "train", s.plane_train_size, torch.float32)
        te = gold_data(ctx, s, "test", s.plane_test_size, torch.float32)
    width = int(tr.x[0].numel())
    out = {}
    for opt in s.plane_optimizers:
        cfg = TrainConfig(optimizer=opt, lr=PLANE_LR[opt], batch_size=64, epochs=s.plane_epochs, seed=ctx.seed)
        for a in s.plane_alphas:

            def fit(a=a, cfg=cfg) -> dict:
                acc = []
                for d in s.plane_dims:
                    net = goldilocks_net(a, ctx, torch.float32, width)
                    _, hist = train_subspace(net, tr, d, cfg, kind="dense", seed=ctx.seed, eval_data=te)
                    acc.append([hist.final.metrics["accuracy"], hist.final.metrics["test_accuracy"]])
                acc = torch.tensor(acc, dtype=F64).T.contiguous()
                return {"train_accuracy": acc[0], "test_accuracy": acc[1]}

            out[(opt, a)] = run.step(f"plane_{opt}_a{a:g}", fit)["train_accuracy"]
    return out


def _interior_peak(values: list[float]) -> tuple[int, bool]:
    """Index of the maximum, and whether it lies strictly inside the grid and above both ends."""
    k = max(range(len(values)), key=values.__getitem__)
    return k, 0 < k < len(values) - 1 and values[k] > max(values[0], values[-1])


def goldilocks_claims(run: RunDir, g: dict, s: Settings, label: str = "64-16-16-10, digits") -> None:
    """The zone: a peak at an interior init scale (paper); the measured levels and α range (guards)."""
    a, r, pos = g["alpha"].tolist(), g["ratio"].tolist(), g["positive"].tolist()
    small = [x for al, x in zip(a, r) if al <= 0.2]
    (k, inside), (kp, inside_p) = _interior_peak(r), _interior_peak(pos)
    where = f"d = {s.gold_dim}, {s.gold_subspaces} random subspaces per α, {label}"
    st = g.get("status", {})
    _claim(
        run, "goldilocks_peak", f"Tr(H_d)/‖H_d‖_F peaks at an intermediate init scale ({where})",
        f"max {r[k]:.3g} at α = {a[k]:g}; {r[0]:.3g} at α = {a[0]:g}, {r[-1]:.3g} at α = {a[-1]:g}",
        "the maximum over the α grid is at an interior α, above both ends", inside, GOLD, inputs=st, kind="paper",
        paper_value=GOLDILOCKS2018["peak"],
    )  # fmt: skip
    _claim(
        run, "goldilocks_positive_fraction", f"the positive fraction of H_d is highest in the zone ({where})",
        f"{pos[0]:.2f} (α = {a[0]:g}), max {pos[kp]:.2f} (α = {a[kp]:g}), {pos[-1]:.2f} (α = {a[-1]:g})",
        "the maximum over the α grid is at an interior α, above both ends", inside_p, GOLD, inputs=st, kind="paper",
        paper_value=GOLDILOCKS2018["positive"],
    )  # fmt: skip
    if s.gold_data != "digits":  # the levels below were measured on digits: no guard for other data
        return
    _claim(
        run, "goldilocks_small_init", f"Tr(H_d)/‖H_d‖_F ≈ 0 for small initial weights ({where})",
        f"{_fmt(small)} at α ≤ 0.2", "|ratio| ≤ 0.5 for every α ≤ 0.2 (level measured here)",
        bool(small) and max(map(abs, small)) <= 0.5, GUARD, kind="regression", inputs=st,
    )  # fmt: skip
    _claim(
        run, "goldilocks_peak_location", f"where and how high the measure peaks ({where})",
        f"max {r[k]:.3g} at α = {a[k]:g}", "argmax α in [2, 8] and peak ≥ 3 (measured here)",
        2 <= a[k] <= 8 and r[k] >= 3, GUARD, kind="regression", inputs=st,
    )  # fmt: skip
    _claim(
        run, "goldilocks_large_init", f"beyond the zone the measure falls again ({where})",
        f"{r[-1]:.3g} at α = {a[-1]:g} vs peak {r[k]:.3g}",
        "ratio at the largest α ≤ 0.5 × peak (factor measured here)", r[-1] <= 0.5 * r[k], GUARD,
        kind="regression", inputs=st,
    )  # fmt: skip


def hyperplane_claims(run: RunDir, planes: dict, s: Settings) -> None:
    """Hyperplane trainability per (optimizer, d, α): reported only."""
    for opt in s.plane_optimizers:
        best = []
        for j, d in enumerate(s.plane_dims):
            acc = {a: float(planes[(opt, a)][j]) for a in s.plane_alphas}
            top = max(acc, key=acc.get)
            best.append(f"d = {d}: best α = {top:g} ({_fmt(acc.values())})")
        _claim(
            run, f"hyperplane_training_{opt}",
            f"train accuracy after {s.plane_epochs:g} epochs of {opt.upper()} (lr {PLANE_LR[opt]}) in a random "
            f"hyperplane, per d, for α = {_fmt(s.plane_alphas)}",
            "; ".join(best), "reported, not asserted (at this scale trainability need not peak in the zone)", None,
            GOLD + "; Li et al. 2018", kind="paper",
        )  # fmt: skip


def goldilocks_figures(run: RunDir, s: Settings, label: str) -> None:
    """The Goldilocks measure and positive fraction vs α; hyperplane training per optimizer."""
    g = lambda key: array_ref("goldilocks", key)  # noqa: E731
    band = {"band": [g("ratio_min"), g("ratio_max")]} if s.gold_subspaces > 1 else {}
    run.figure(_xy(
        "goldilocks_ratio",
        f"Goldilocks zone: Tr(H_d)/‖H_d‖_F, random {s.gold_dim}-dim subspaces ({label})",
        "init scale α (log scale)", "Tr(H_d) / ‖H_d‖_F",
        [{"label": f"mean of {s.gold_subspaces} subspaces (band: min–max)", "x": g("alpha"), "y": g("ratio"),
          "marker": "o", **band}], logx=True, hlines=[{"y": 0.0, "label": "0 (random symmetric matrix)"}],
    ))  # fmt: skip
    run.figure(_xy(
        "goldilocks_positive", f"fraction of positive eigenvalues of H_d (d = {s.gold_dim})",
        "init scale α (log scale)", "fraction of λ(H_d) > 0",
        [{"label": "mean over subspaces", "x": g("alpha"), "y": g("positive"), "marker": "o"}], logx=True,
        hlines=[{"y": 0.5, "label": "0.5"}],
    ))  # fmt: skip
    for opt in s.plane_optimizers:
        series = [{"label": f"α = {a:g}", "x": list(s.plane_dims), "y": array_ref(f"plane_{opt}_a{a:g}",
                   "train_accuracy"), "marker": "o"} for a in s.plane_alphas]  # fmt: skip
        run.figure(_xy(
            f"hyperplane_training_{opt}", f"training in a random d-dim hyperplane ({opt.upper()}, lr "
            f"{PLANE_LR[opt]}, {s.plane_epochs:g} epochs)", "hyperplane dimension d (log scale)", "train accuracy",
            series, logx=True, hlines=[{"y": 1 / C, "label": "chance"}],
        ))  # fmt: skip
