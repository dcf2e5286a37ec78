"""Local geometry of the loss landscape: logit-gradient clusters, a tiny gradient subspace, the Goldilocks zone.

What the papers claim (definitions in ``docs/science.md``, "Gradient confinement" and
"Goldilocks measure"):

- Fort & Ganguli 2019, "Emergent properties of the local geometry of neural loss
  landscapes": per-sample logit gradients ``∇_θ z_k(x_i)`` cluster by logit ``k`` (mean
  ``c_k`` plus noise), with a weaker dependence on the input's class. This one fact explains
  about C high-curvature directions, a gradient confined to them, a top eigenvalue that
  rises early then falls, and the Goldilocks zone.
- Gur-Ari, Roberts & Dyer 2018, "Gradient descent happens in a tiny subspace": after a
  short time, ``f_top = ‖P_k g‖²/‖g‖²`` with ``P_k`` the projector on the top-k Hessian
  eigenvectors (k = C − 1 here) is close to 1, and that subspace changes slowly.
- Fort & Scherlis 2018, "The Goldilocks zone": for a random ``d``-dimensional hyperplane
  ``θ₀ + M w``, ``Tr(H_d)/‖H_d‖_F`` and the fraction of positive eigenvalues of
  ``H_d = Mᵀ H M`` are high only in a band of initialisation radii.

What is measured. Two runs on the GMM setup (C = 10, d = 30, N = 2000, MLP 30-32-32-10,
SGD lr 0.05, momentum 0.9, batch 64, float64): overlapping classes (spread s = 0.4; the loss
stays above 0.3 for the whole run, where confinement and persistence are claimed) and
separable classes (s = 1; the net interpolates, where λ_max rises then falls and the
confinement collapses). At each snapshot: the top-C eigenpairs of the full-batch Hessian
(certified Lanczos), ``f_top`` of the full-batch gradient and of 64-sample mini-batch
gradients, the persistence of the top-(C−1) eigenspace between snapshots, and the cosine
matrix of per-sample logit gradients on a class-balanced subset (per-sample Jacobians),
grouped by (logit, class). Goldilocks: bias-free ReLU MLP 64-16-16-10 on digits with the
initial weights ×α, ``H_d`` on random subspaces for α on a log grid. Hyperplane training:
the same network trained with :func:`curvscope.train.train_subspace` for several ``d`` and
α — reported, not asserted.

Scales. ``quick`` (≤ 90 s on one core): the two GMM runs (20 epochs, 8 snapshots: epochs 0,
0.5, 1, 2, 3, 5, 10, 20), top-10 eigenpairs at eigsh's float64 tolerance, 8 mini-batches,
logit gradients of 100 samples at 4 snapshots; Goldilocks on digits: 9 values of α with 2
random 100-dimensional subspaces each, hyperplane training for d ∈ {16, 64, 256},
α ∈ {0.2, 1, 4, 32}, SGD and Adam, 4 epochs.

``full`` (≤ 20 CPU-min on one core): the paper-sized run is on ``ctx.image_data()``
(Fashion-MNIST by default; ``--data`` MNIST or CIFAR-10 likewise, the input width taken from
the data): an MLP 784-32-32-10 (D = 26 506; Gur-Ari et al.'s MNIST network has two hidden
layers of 32) trained by plain SGD (lr 0.1, batch 64, float64) on all 60 000 training images
for 20 epochs, 13 snapshots (dense in the first epoch, where the top subspace forms). The
top-C Hessian eigenpairs and the "full-batch" gradient are those of a class-balanced
curvature subset of 10 000 training images (1000 per class: the Hessian of 60k images costs
6× more per product for a sample mean that changes little); 16 random 64-image mini-batches
of the train split; the per-sample logit gradients of 200 images (20 per class; 2000 logit
gradients, the [200, 10, D] Jacobian is 0.4 GB) at 5 snapshots. Goldilocks on the same images
average-pooled to 8×8 (so the same 64-16-16-10 network, D = 1440): a 4000-image class-
balanced curvature subset, 17 values of α (0.05–256) with 6 random 200-dimensional subspaces each;
hyperplane training on 10 000 training images (tested on 2000 test images) for
d ∈ {16, 64, 256, 1024}, 6 scales, SGD and Adam, 5 epochs. The two GMM runs are kept at the
quick sizes (the small-scale reference, ~1 CPU-min). The regression guards measured on the
GMM runs and on digits are checked only on those runs; the image run carries the paper claims
(confinement, persistence after epoch 1, λ_max rise and fall) and the Goldilocks paper claims
read the Fashion-MNIST scan.

Denormals are flushed by ``run_experiment`` (a process-wide choice made by the application):
late-training Hessian products run several times slower without it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from curvscope.data import balanced_subset, batches, load_dataset
from curvscope.experiments import instruments as ins
from curvscope.experiments.fortganguli2019_figures import figures
from curvscope.experiments.goldilocks import (
    gold_label,
    goldilocks_claims,
    hyperplane_claims,
    measure_goldilocks,
    train_hyperplanes,
)
from curvscope.experiments.paper_values import FORT_GANGULI2019
from curvscope.experiments.registry import Context, Recipe, by_scale
from curvscope.experiments.run import Claim, RunDir
from curvscope.metrics import (
    confinement_chance,
    gradient_confinement,
    logit_gradient_clustering,
    subspace_persistence,
)
from curvscope.models import build_model
from curvscope.operators import Hessian, LossProblem
from curvscope.operators.dense import per_sample_jacobians
from curvscope.train import TrainConfig, steps_per_epoch, train

C = 10
GMM = {"num_classes": C, "dim": 30, "num_samples": 2000}
RUNS = {"overlap": 0.4, "separable": 1.0}  # GMM class-mean spread s of each training run
F64 = torch.float64
SRC = "Fort & Ganguli 2019 (arXiv:1910.05929)"
GUR_ARI = "Gur-Ari, Roberts & Dyer 2018 (arXiv:1812.04754)"
GUARD = "measured by curvscope (docs/science.md, 'Claim kinds and verdicts')"
DYN_KEYS = ("epoch", "ftop", "ftop_C", "mb_mean", "mb_min", "mb_max", "lambda_max")
LOGIT_KEYS = ("same_logit", "cross_logit", "same_logit_same_class", "same_logit_cross_class")


@dataclass(frozen=True)
class Settings:
    """Scale-dependent sizes (see the module docstring)."""

    epochs: float
    snapshot_epochs: tuple[float, ...]
    num_minibatches: int
    logit_per_class: int
    logit_epochs: tuple[float, ...]
    alphas: tuple[float, ...]
    gold_dim: int
    gold_subspaces: int
    plane_dims: tuple[int, ...]
    plane_alphas: tuple[float, ...]
    plane_epochs: float
    plane_optimizers: tuple[str, ...] = ("sgd", "adam")
    # What "positive" means for H_d's eigenvalues: above the products' noise band (GoldilocksResult.
    # noise_band). Part of the run's fingerprint, so a directory measured under the earlier rule
    # (λ > 0, no band; its cached steps lack the unresolved fraction) is refused, not resumed.
    gold_positive_rule: str = "above_noise_band"
    # Which GMM runs (RUNS keys) to train; the full scale keeps both at the quick sizes above.
    gmm_runs: tuple[str, ...] = ("overlap", "separable")
    # The image run (full scale; image_epochs = 0: none): MLP on ctx.image_data(), flattened.
    image_epochs: float = 0.0
    image_snapshot_epochs: tuple[float, ...] = ()
    image_logit_epochs: tuple[float, ...] = ()
    image_train_size: int | None = None  # None: the whole train split (60k for Fashion-MNIST)
    image_curv_size: int = 0  # class-balanced curvature subset (Hessian, full-batch gradient)
    image_minibatches: int = 0
    image_logit_per_class: int = 0
    image_widths: tuple[int, ...] = (32, 32)
    image_lr: float = 0.1
    image_momentum: float = 0.0
    # Goldilocks data: "digits" (8×8 scikit-learn digits) or "image" (ctx.image_data() pooled to gold_image_size²)
    gold_data: str = "digits"
    gold_image_size: int = 8
    gold_samples: int | None = None  # class-balanced curvature subset of the Goldilocks Hessian (None: all)
    plane_train_size: int | None = None  # hyperplane training / test subsets (image data only)
    plane_test_size: int | None = None


QUICK = Settings(
    epochs=20, snapshot_epochs=(0, 0.5, 1, 2, 3, 5, 10, 20), num_minibatches=8, logit_per_class=10,
    logit_epochs=(0, 2, 5, 20), alphas=(0.1, 0.2, 0.5, 1, 2, 4, 8, 16, 32), gold_dim=100, gold_subspaces=2,
    plane_dims=(16, 64, 256), plane_alphas=(0.2, 1, 4, 32), plane_epochs=4,
)  # fmt: skip
FULL = Settings(
    # GMM runs: the quick sizes (the small-scale reference, ~1 CPU-min for both); the image run is the full-scale one.
    epochs=20, snapshot_epochs=(0, 0.5, 1, 2, 3, 5, 10, 20), num_minibatches=8, logit_per_class=10,
    logit_epochs=(0, 2, 5, 20),
    # Image run: 60k images, 938 steps an epoch (~5 CPU-s in float64); 13 snapshots, dense early (the top subspace
    # forms within the first few hundred steps); eigsh on 10k images costs ~5-20 CPU-s a snapshot.
    image_epochs=20, image_snapshot_epochs=(0, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 15, 20),
    image_logit_epochs=(0, 0.1, 1, 5, 20), image_curv_size=10000, image_minibatches=16, image_logit_per_class=20,
    # Goldilocks: 8×8 pooled images (D = 1440), 4000-image curvature subset; d = 200 costs ~1.3 CPU-s a subspace.
    alphas=(0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1, 1.4, 2, 2.8, 4, 8, 16, 32, 64, 128, 256), gold_dim=200,
    gold_subspaces=6,
    gold_data="image", gold_samples=4000,
    # Hyperplanes: 10k training images, 5 epochs (~1-2 CPU-s a run), 4 dimensions × 6 scales × 2 optimizers.
    plane_dims=(16, 64, 256, 1024), plane_alphas=(0.1, 0.3, 1, 3, 10, 30), plane_epochs=5,
    plane_train_size=10000, plane_test_size=2000,
)  # fmt: skip
LABEL = {"overlap": "s = 0.4 (overlapping)", "separable": "s = 1 (separable)"}


def _gmm_run(run: RunDir, ctx: Context, s: Settings, tag: str) -> dict:
    """Train one GMM run; per snapshot: top-C eigenpairs, confinement, logit-gradient cosines; then a summary."""
    data = load_dataset("gmm", **GMM, spread=RUNS[tag], seed=ctx.seed, dtype=F64).to(device=ctx.device)
    model = build_model("mlp", in_features=GMM["dim"], widths=(32, 32), num_classes=C, seed=ctx.seed, dtype=F64)
    config = TrainConfig(lr=0.05, momentum=0.9, batch_size=64, epochs=s.epochs, seed=ctx.seed)
    mini = batches(data, 64, shuffle=True, seed=ctx.seed)[: s.num_minibatches]
    sub = balanced_subset(data, s.logit_per_class * C, seed=ctx.seed)
    return _track(run, ctx, tag, model.to(ctx.device), data, data, mini, sub, config, s.snapshot_epochs, s.logit_epochs)


def _image_run(run: RunDir, ctx: Context, s: Settings) -> dict:
    """The same measurements on ``ctx.image_data()`` (Fashion-MNIST by default): MLP on the flattened images.

    Trained on the whole train split (``s.image_train_size`` samples when set); the Hessian and the
    full-batch gradient on a class-balanced curvature subset of ``s.image_curv_size`` training images;
    mini-batch gradients on random 64-image batches of the train split; logit gradients on another
    class-balanced subset of ``s.image_logit_per_class`` images per class.
    """
    data = load_dataset(ctx.image_data(), split="train", flatten=True, subset=s.image_train_size, seed=ctx.seed,
                        dtype=F64).to(device=ctx.device)  # fmt: skip
    if data.num_classes != C:
        raise ValueError(f"fortganguli2019 measures C = {C} classes; {ctx.image_data()} has {data.num_classes}")
    model = build_model("mlp", in_features=data.x.shape[1], widths=s.image_widths, num_classes=C, seed=ctx.seed,
                        dtype=F64).to(ctx.device)  # fmt: skip
    config = TrainConfig(lr=s.image_lr, momentum=s.image_momentum, batch_size=64, epochs=s.image_epochs,
                         seed=ctx.seed)  # fmt: skip
    curv = data if s.image_curv_size >= len(data) else balanced_subset(data, s.image_curv_size, seed=ctx.seed)
    gen = torch.Generator().manual_seed(ctx.seed + 1)
    idx = torch.randperm(len(data), generator=gen)[: 64 * s.image_minibatches].to(data.y.device)
    mini = batches(data.replace(x=data.x[idx], y=data.y[idx]), 64)
    sub = balanced_subset(data, s.image_logit_per_class * C, seed=ctx.seed + 2)
    out = _track(run, ctx, "image", model, data, curv, mini, sub, config, s.image_snapshot_epochs,
                 s.image_logit_epochs, progress=ctx.progress)  # fmt: skip
    return {**out, "in_features": int(data.x.shape[1])}


def _track(run: RunDir, ctx: Context, tag: str, model: nn.Module, data, curv, mini: list, sub, config: TrainConfig,
           snapshot_epochs, logit_epochs, progress: bool = False) -> dict:  # fmt: skip
    """Train on ``data``; per snapshot the top-C Hessian eigenpairs and confinement; then a summary.

    The Hessian and full-batch gradient are those of ``curv``; the ``mini`` batch gradients are confined
    to the same eigenspace; the logit-gradient cosines of ``sub`` are measured at ``logit_epochs``.
    """
    spe = steps_per_epoch(len(data), config)
    config = TrainConfig(**{**config.to_dict(), "snapshot_steps": tuple(round(e * spe) for e in snapshot_epochs)})

    def fit() -> dict:
        hist = train(model, data, config, progress=ctx.progress)
        out = {k: torch.tensor([sn.metrics[k] for sn in hist.snapshots], dtype=F64) for k in ("loss", "accuracy")}
        out["epoch"] = torch.tensor([sn.epoch for sn in hist.snapshots], dtype=F64)
        out["batch_loss"] = torch.tensor(hist.batch_loss, dtype=F64)
        for i, sn in enumerate(hist.snapshots):
            out.update({f"state{i}.{k}": v.detach().cpu() for k, v in sn.load_state().items()})
        return out

    fitted = run.step(f"train_{tag}", fit)
    loss_fn = nn.CrossEntropyLoss()
    bases, rows, logit_rows, logit_step, eig_status = [], [], [], "", []
    for i, ep in enumerate(fitted["epoch"].tolist()):
        model.load_state_dict({k: fitted[f"state{i}.{k}"] for k in model.state_dict()})
        H = Hessian(model, loss_fn, batches(curv))
        top = ins.eigenpairs(run, f"eig_{tag}_{i}", H, C, seed=ctx.seed, progress=progress)
        V = top["eigenvectors"].to(F64)
        bases.append(V[:, : C - 1])

        def confine(V=V, H=H) -> dict:
            g = H.gradient().cpu().to(F64)
            mb = torch.stack([Hessian(model, loss_fn, [b], probe=False).gradient().cpu().to(F64) for b in mini], 1)
            full = [float(gradient_confinement(g, V[:, : C - 1])), float(gradient_confinement(g, V))]
            return {"full": full, "minibatch": gradient_confinement(mb, V[:, : C - 1]).fractions.to(F64)}

        conf = run.step(f"confine_{tag}_{i}", confine)
        mb = conf["minibatch"]
        rows.append([ep, *conf["full"], mb.mean(), mb.min(), mb.max(), top["eigenvalues"][0]])
        eig_status.append(str(top["status"]))
        if any(abs(ep - e) * spe < 0.5 for e in logit_epochs):  # snapshots sit on whole steps: 0.1 → 94/938
            logit_step = f"logits_{tag}_{i}"
            lg = run.step(logit_step, lambda: _logit_cosines(model, loss_fn, sub.x, sub.y))
            logit_rows.append([ep] + [lg[k] for k in LOGIT_KEYS])
    table, ltable = torch.tensor(rows, dtype=F64), torch.tensor(logit_rows, dtype=F64)

    def summarize() -> dict:
        out = {k: table[:, j].contiguous() for j, k in enumerate(DYN_KEYS)}
        out.update({f"logit_{k}": ltable[:, j].contiguous() for j, k in enumerate(("epoch", *LOGIT_KEYS))})
        out.update(persistence=subspace_persistence(bases).to(F64), loss=fitted["loss"])
        return {**out, "num_params": bases[0].shape[0], "logit_step": logit_step, "eig_status": eig_status}

    return run.step(f"dynamics_{tag}", summarize)


def _logit_cosines(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Per-sample logit gradients ``[B, C, D]`` (explicit Jacobians) → cosines grouped by (logit, class)."""
    _, J = per_sample_jacobians(LossProblem(model, loss_fn, [(x, y)]), x)
    res = logit_gradient_clustering(J.cpu(), y.cpu())
    return {"blocks": res.group_means.to(F64), **{k: float(getattr(res, k)) for k in LOGIT_KEYS}}


def _rng(xs) -> str:
    """``lo–hi`` of numbers, 3 significant digits."""
    xs = [float(x) for x in xs]
    return f"{min(xs):.3g}–{max(xs):.3g}" if len(xs) > 1 else f"{xs[0]:.3g}"


def _fmt(xs) -> str:
    """Comma-separated numbers, 3 significant digits."""
    return ", ".join(f"{float(x):.3g}" for x in xs)


def _claim(run: RunDir, name: str, statement: str, measured, criterion: str, passed, source: str = SRC, *,
           kind: str, **kw) -> None:  # fmt: skip
    """Record a :class:`Claim` (``passed`` cast to bool; ``None`` = reported; ``kw``: ``inputs``, ``paper_value``)."""
    run.claim(Claim(name, statement, measured, criterion, None if passed is None else bool(passed), source, kind=kind,
                    **kw))  # fmt: skip


def _eig_inputs(d: dict, tag: str, mask=None) -> dict:
    """Statuses of the eigsh runs (one per snapshot, or those where ``mask`` holds) of a GMM run."""
    sts = d.get("eig_status") or ["unverified"] * len(d["epoch"])
    keep = range(len(sts)) if mask is None else [i for i, m in enumerate(mask.tolist()) if m]
    return {f"eigsh {tag}, epoch {float(d['epoch'][i]):.3g}": sts[i] for i in keep}


def _main(dyn: dict) -> str:
    """The run that carries the paper claims: the image run at the full scale, the overlapping GMM run at quick."""
    return "image" if "image" in dyn else "overlap"


def _claims_logits(run: RunDir, dyn: dict) -> None:
    """Same-logit vs cross-logit cosines over every measured snapshot of every run."""
    same, cross, sc, oc = ([x for d in dyn.values() for x in d[f"logit_{k}"].tolist()] for k in LOGIT_KEYS)
    pairs = [(a, b) for d in dyn.values() for a, b in zip(d["logit_same_logit"].tolist(),
                                                          d["logit_cross_logit"].tolist())]  # fmt: skip
    runs = ", ".join(d["label"] for d in dyn.values())
    measured = f"same logit {_rng(same)}, cross logit {_rng(cross)}"
    _claim(
        run, "logit_gradient_clustering",
        "per-sample logit gradients cluster by logit: mean cosine of ∇z_k(x_i), ∇z_k(x_j) (i ≠ j) exceeds that of "
        f"∇z_k(x_i), ∇z_k'(x_j) (k ≠ k'), at every measured snapshot of every run ({runs})",
        measured, "same-logit > |cross-logit| at every snapshot", all(a > abs(b) for a, b in pairs),
        SRC + ", logit-gradient clustering", kind="paper", paper_value=FORT_GANGULI2019["logit_clustering"],
    )  # fmt: skip
    gmm = [d for t, d in dyn.items() if t in RUNS]
    if gmm:
        g_same, g_cross = ([x for d in gmm for x in d[f"logit_{k}"].tolist()] for k in LOGIT_KEYS[:2])
        _claim(
            run, "logit_gradient_clustering_levels",
            "levels of the same-logit and cross-logit cosines, every measured snapshot of the GMM runs",
            f"same logit {_rng(g_same)}, cross logit {_rng(g_cross)}",
            "same-logit ≥ 0.1 and |cross-logit| ≤ 0.05 (levels measured here)",
            min(g_same) >= 0.1 and max(map(abs, g_cross)) <= 0.05, GUARD, kind="regression",
        )  # fmt: skip
    per_run = "; ".join(f"{d['label']}: same class {_rng(d['logit_same_logit_same_class'])}, other classes "
                        f"{_rng(d['logit_same_logit_cross_class'])}" for d in dyn.values())  # fmt: skip
    _claim(
        run, "logit_gradient_class_dependence",
        "within one logit, gradients of inputs of the same class are more aligned than of other classes",
        per_run if len(dyn) > 1 else f"same class {_rng(sc)}, other classes {_rng(oc)}",
        "reported (the weaker class dependence), not asserted", None, SRC, kind="paper",
        paper_value=FORT_GANGULI2019["class_dependence"],
    )  # fmt: skip


def _late(d: dict, tag: str):
    """Snapshots after the initial phase: epoch ≥ 3 with loss > 0.3 (GMM, where measured), epoch ≥ 1 (images)."""
    return d["epoch"] >= 1 if tag == "image" else (d["epoch"] >= 3) & (d["loss"] > 0.3)


def _last(d: dict) -> torch.Tensor:
    """Mask of a run's last snapshot."""
    last = torch.zeros_like(d["epoch"], dtype=torch.bool)
    last[-1] = True
    return last


def _claims_dynamics(run: RunDir, dyn: dict) -> None:
    """Confinement, its collapse at interpolation, persistence, λ_max rise and fall."""
    tag = _main(dyn)
    m = dyn[tag]
    chance = confinement_chance(C - 1, int(m["num_params"]))
    ep, ft, loss = m["epoch"], m["ftop"], m["loss"]
    late, last = _late(m, tag), _last(m)
    where = (
        "after training on overlapping classes (GMM, s = 0.4: the loss stays away from zero)"
        if tag == "overlap"
        else f"after training on {m['label']} (Hessian and gradient on the class-balanced curvature subset)"
    )
    _claim(
        run, "gradient_confinement",
        f"{where}, the full-batch gradient lies mostly in the top-(C−1) Hessian eigenspace",
        f"f_top {float(ft[-1]):.3f} at epoch {float(ep[-1]):g} (loss {float(loss[-1]):.3g}); after the initial "
        f"phase {_rng(ft[late])} at epochs {_fmt(ep[late])}",
        f"f_top > 0.5 (most of ‖g‖²) at the last snapshot; chance (C−1)/D = {chance:.2g}",
        float(ft[-1]) > 0.5, GUR_ARI, inputs=_eig_inputs(m, m["label"], last), kind="paper",
        paper_value=FORT_GANGULI2019["confinement"],
    )  # fmt: skip
    if "overlap" in dyn:
        ov = dyn["overlap"]
        lo = _late(ov, "overlap")
        vals = ov["ftop"][lo].tolist()
        _claim(
            run, "gradient_confinement_level",
            "f_top of the full-batch gradient at every snapshot with epoch ≥ 3 and loss > 0.3 (s = 0.4)",
            f"f_top {_rng(vals)} at epochs {_fmt(ov['epoch'][lo])} (loss {_rng(ov['loss'][lo])})",
            "f_top ≥ 0.7 at every such snapshot (level and window measured here)",
            bool(vals) and min(vals) >= 0.7, GUARD, kind="regression", inputs=_eig_inputs(ov, "s = 0.4", lo),
        )  # fmt: skip
    early = [f"{d['label']}: " + "; ".join(f"{e:.3g}: {f:.3f}" for e, f in zip(d["epoch"].tolist(), d["ftop"].tolist())
                                          if e < (1 if t == "image" else 3)) for t, d in dyn.items()]  # fmt: skip
    _claim(
        run, "gradient_confinement_early",
        "f_top in the first epochs, before the top subspace has formed (epoch: f_top)",
        " | ".join(early), "reported, not asserted", None, GUR_ARI, kind="paper",
    )  # fmt: skip
    _claim(
        run, "gradient_confinement_minibatch",
        f"share of 64-sample mini-batch gradients in the full-batch top-(C−1) eigenspace ({m['label']}, same "
        "snapshots)", f"mean {_rng(m['mb_mean'][late])} (min {m['mb_min'][late].min():.3f}); full batch "
        f"{_rng(ft[late])}", "reported, not asserted", None, GUR_ARI, kind="paper",
    )  # fmt: skip
    if "separable" in dyn:
        sep = dyn["separable"]
        fin, ch = float(sep["ftop"][-1]), confinement_chance(C - 1, int(sep["num_params"]))
        _claim(
            run, "gradient_confinement_collapse",
            "at interpolation (separable GMM, s = 1) the gradient leaves the top subspace",
            f"f_top {fin:.3f} at epoch {sep['epoch'][-1]:g} (loss {sep['loss'][-1]:.1e}); {fin / ch:.0f}× chance",
            "f_top ≤ 0.2 at the last snapshot (threshold measured here)", fin <= 0.2, GUARD, kind="regression",
            inputs=_eig_inputs(sep, "s = 1", _last(sep)),
        )  # fmt: skip
    if "overlap" in dyn:
        _claims_persistence_gmm(run, dyn["overlap"])
    if tag == "image":
        P, eps = m["persistence"], m["epoch"].tolist()
        i1 = next((i for i, e in enumerate(eps) if e >= 1), len(eps) - 1)  # the last one if none (tiny test runs)
        later = P[i1, i1 + 1 :]
        _claim(
            run, "subspace_persistence_image",
            f"after the initial phase the top-(C−1) eigenspace changes slowly ({m['label']}): overlap of the "
            f"eigenspace at epoch {eps[i1]:g} with every later snapshot",
            f"{_fmt(later)} at epochs {_fmt(eps[i1 + 1 :])}; overlap(init, epoch {eps[-1]:g}) = {float(P[0, -1]):.3f}",
            f"every overlap > 0.5 (more than half of the subspace kept; chance (C−1)/D = {chance:.2g})",
            bool(len(later)) and float(later.min()) > 0.5, GUR_ARI, kind="paper",
            inputs=_eig_inputs(m, m["label"], ep >= eps[i1]), paper_value=FORT_GANGULI2019["persistence"],
        )  # fmt: skip
    _claims_rise_fall(run, dyn)


def _claims_persistence_gmm(run: RunDir, ov: dict) -> None:
    """Persistence of the top-(C−1) eigenspace of the overlapping GMM run (levels measured here)."""
    P, eps = ov["persistence"], ov["epoch"].tolist()
    idx = [eps.index(e) for e in (5.0, 10.0, 20.0) if e in eps]
    pairs = [float(P[a, b]) for n, a in enumerate(idx) for b in idx[n + 1 :]]
    _claim(
        run, "subspace_persistence",
        "the top-(C−1) eigenspace changes slowly: overlaps (5, 10), (5, 20), (10, 20) in epochs (s = 0.4)",
        _fmt(pairs), "every overlap ≥ 0.7 (level measured here)", len(pairs) == 3 and min(pairs) >= 0.7,
        GUARD, kind="regression", inputs={k: v for k, v in _eig_inputs(ov, "s = 0.4").items()
                                          if any(f"epoch {e:g}" == k.split(", ")[-1] for e in (5, 10, 20))},
    )  # fmt: skip
    p0 = float(P[0, -1])
    _claim(
        run, "subspace_persistence_from_init",
        "the top eigenspace at initialisation is largely replaced by the end (s = 0.4)",
        f"overlap(init, epoch {eps[-1]:g}) = {p0:.3f}", "≤ 0.4 (level measured here)", p0 <= 0.4,
        GUARD, kind="regression", inputs={k: v for i, (k, v) in enumerate(_eig_inputs(ov, "s = 0.4").items())
                                          if i in (0, len(eps) - 1)},
    )  # fmt: skip


def _claims_rise_fall(run: RunDir, dyn: dict) -> None:
    """λ_max rises early then falls: the direction (paper) on the separable and image runs; the factors as a guard."""
    for tag, d in dyn.items():
        lam, k = d["lambda_max"], int(d["lambda_max"].argmax())
        measured = f"{lam[0]:.3g} → {lam[k]:.3g} (epoch {d['epoch'][k]:.3g}) → {lam[-1]:.3g} (epoch {d['epoch'][-1]:g})"
        inputs, name, what = _eig_inputs(d, d["label"]), f"lambda_max_rise_fall_{tag}", f"({d['label']})"
        if tag == "overlap":
            _claim(run, name, f"λ_max rises early in training, then falls {what}", measured,
                   "reported: the loss stays high in this run, no fall expected", None, SRC, kind="paper")  # fmt: skip
            continue
        _claim(
            run, name, f"λ_max rises early in training, then falls {what}", measured,
            "the largest λ_max is at an interior snapshot: above the first and the last",
            0 < k < len(lam) - 1 and lam[k] > lam[0] and lam[k] > lam[-1], SRC, inputs=inputs, kind="paper",
            paper_value=FORT_GANGULI2019["rise_fall"],
        )  # fmt: skip
        if tag == "separable":
            _claim(
                run, f"lambda_max_rise_fall_factors_{tag}", f"size of λ_max's rise and fall {what}",
                measured, "peak ≥ 2× initial and last ≤ 0.25× peak (factors measured here)",
                lam[k] >= 2 * lam[0] and lam[-1] <= 0.25 * lam[k], GUARD, kind="regression", inputs=inputs,
            )  # fmt: skip


#: The papers' own sizes where larger (``--scale full --device cuda``): the Hessian and the full-batch
#: gradient of the whole training set (60k images, not a 10k subset), the Goldilocks Hessian on all images.
PAPER = replace(FULL, image_curv_size=60000, gold_samples=None)


def run_fortganguli(run: RunDir, ctx: Context) -> None:
    """Logit-gradient clustering, confinement, persistence, λ_max, Goldilocks zone, hyperplane training."""
    s = by_scale(ctx.scale, QUICK, FULL, PAPER)
    dyn = {tag: {**_gmm_run(run, ctx, s, tag), "label": LABEL[tag]} for tag in s.gmm_runs}
    if s.image_epochs > 0:
        img = _image_run(run, ctx, s)
        widths = "-".join(map(str, (img["in_features"], *s.image_widths, C)))
        dyn["image"] = {**img, "label": f"{ctx.image_data()}, MLP {widths}"}
        run.metric("num_parameters_image", int(img["num_params"]))
    if s.gmm_runs:
        run.metric("num_parameters_gmm", int(dyn[s.gmm_runs[0]]["num_params"]))
    run.metric("settings", {**vars(s), "gmm_spread": RUNS, "gmm": GMM})
    _claims_logits(run, dyn)
    _claims_dynamics(run, dyn)
    gl = gold_label(s, ctx)
    goldilocks_claims(run, measure_goldilocks(run, ctx, s), s, gl)
    hyperplane_claims(run, train_hyperplanes(run, ctx, s), s)
    figures(run, s, dyn, gl, _main(dyn), C)


RECIPE = Recipe(
    name="fortganguli2019",
    title="Local geometry: logit-gradient clusters, gradient confinement, λ_max dynamics, Goldilocks zone",
    summary="Per-sample logit-gradient cosines grouped by (logit, class); the share of the full-batch and mini-batch "
    "gradients in the top-(C−1) Hessian eigenspace and its persistence; λ_max over training; Tr(H_d)/‖H_d‖_F and the "
    "positive fraction on random subspaces vs init scale α (Goldilocks zone), and training in random hyperplanes. "
    "Full scale: Fashion-MNIST (or --data), MLP 784-32-32-10 trained by SGD on all 60k images, curvature on a 10k "
    "class-balanced subset; Goldilocks on 8×8-pooled images (bias-free MLP 64-16-16-10). Both scales: GMM (C = 10, "
    "d = 30, N = 2000), MLP 30-32-32-10 on overlapping (s = 0.4) and separable (s = 1) classes; the quick scale's "
    "Goldilocks network runs on digits.",
    run=run_fortganguli,
    settings=lambda scale: by_scale(scale, QUICK, FULL, PAPER),
    papers="Fort & Ganguli 2019; Gur-Ari, Roberts & Dyer 2018; Fort & Scherlis 2018",
)
