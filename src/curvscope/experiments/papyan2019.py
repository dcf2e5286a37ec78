"""Papyan (2019, 2020): the class structure of the Gauss–Newton term, through training and vs. sample size.

What the papers claim (definitions in ``docs/science.md``, "Class structure of G"). For
cross-entropy ``H = G + H_res`` and the Gauss–Newton term is a second moment of the vectors
``δ_{i,c'} = J_iᵀ(e_{c'} − p_i)``; grouping them by true class ``c`` and hypothetical class
``c'`` splits ``G`` exactly into a class term (``C`` outliers), a cross-class term
(``C(C−1)`` "mini-outliers") and a within-class term (the bulk). Papyan's p-weighted split
``G = G_B + G_W`` has ``rank G_B = C(C−1)``. The top eigenspace of ``H`` is (nearly) the span
of the class / cross-class gradient means, so it can be found without an eigensolver, and the
outliers of ``H`` are those of ``G``.

What is measured here, for two training-set sizes at the same SGD steps (snapshots at 0, 1, 2
and 5 epochs of the larger set):

- SLQ densities of ``H``, ``G``, ``H_res`` and of the terms of :class:`~curvscope.operators.ClassStructure`
  (``class_term``, ``cross_term``, ``within_term``; ``papyan_between``/``papyan_within`` at the end);
- the identities, from per-sample vectors on a class-balanced subset
  (:func:`~curvscope.operators.dense.dense_class_structure`, built from definitions, not by
  subtraction) against the matrix-free operators, on random vectors, and the PSD-ness of the
  within-class terms (quick: 100 samples, the parameters of the last two layers, ``D = 1386``:
  the identities hold for any parameter subset, and the dense terms at ``D = 2378`` take ~15 s);
- ``rank G_B`` from the singular values of its low-rank factor (exact at any ``D``);
- the overlap of the top-``(C−1)`` eigenspace of ``H`` (``eigsh``, certified) with the span of the
  ``C²`` cross-class means, and the agreement of the top-``(C−1)`` eigenvalues of ``H`` and ``G``.

Setup (quick): Gaussian mixture ``C = 10``, ``d = 30``, spread ``s = 0.4`` (overlapping classes:
at ``N = 2000`` the final loss is 0.7–0.9, so the class structure does not collapse), ``N = 2000``
(the reference GMM) and a nested class-balanced subset of ``N = 500`` (the same steps are epochs
0, 4, 8, 20 of it); MLP 30-32-32-10 ReLU (``D = 2378``), float64; SGD lr 0.05, momentum 0.9,
batch 64, 160 steps; SLQ with 4 probes × 40 Lanczos steps.

Full (1215 CPU-s on one thread, 1946 s wall on a shared machine; on this LeNet one product with ``H`` on
1000 images takes 0.35 s, ``G`` 0.17 s, the class sums 40 s, eigsh top-9 of ``H`` 14 s): LeNet (conv 6, 16,
5×5, max-pool; fc 120, 84; ``D = 107,786``) on 28×28 Fashion-MNIST, float32, SGD lr 0.05, momentum 0.9,
batch 128, trained on all ``N = 60000`` training images and on a class-balanced ``N = 6000`` for the
same 938 steps (2 epochs of 60000, 20 of 6000), snapshots at epochs 0, 1, 2. The curvature operators
(``H``, ``G``, ``H_res``, the class-structure terms, their eigsh and SLQ) use a class-balanced subset of
1000 images of each training set (100 per class: enough for the C² class means and the within-class
scatter; every ``H`` product on all 60k would cost 60× more). SLQ 4 probes × 40 Lanczos steps: at
``D ≈ 10⁵`` one Rademacher probe already averages the bulk over ``D`` eigenvectors, and 40 steps
converge the outliers' Ritz values (eigsh certifies the top ones). Why not the paper-sized 20 epochs,
5 snapshots, 10 × 90 SLQ: ~10× over the budget. The claims are then read on a net trained for 2
epochs of 60000 (its training loss is in the report), not a converged one. The outlier count takes
the top-2C eigenvalues of ``H`` (eigsh) at the last snapshot; the dense identity check is restricted
to the last layer (200 images, ``D = 850``).

Claim kinds: the identities, the PSD-ness of the within-class terms and ``rank G_B`` are
``sanity`` checks of the implementation. The paper claims, at the last snapshot of each size: "C
outliers" is the position of the largest ratio ``λ_k/λ_(k+1)`` among the top 2C eigenvalues of ``H``
(C or C − 1: the softmax Hessian has rank C − 1 per sample); "the top eigenspace lies in the span of
the cross-class means" is read as "more than half of it" (overlap > 0.5, a stated rule); "the outliers
of H are G's" as the top-(C−1) eigenspaces of ``H`` and ``G`` overlapping > 0.5. The 0.9 level
after 2 epochs and the 10% agreement of the top eigenvalues of ``H`` and ``G`` were measured here
and are ``regression`` guards.

References:
    V. Papyan, "Measurements of three-level hierarchical structure in the outliers in the spectrum
    of deepnet Hessians", ICML 2019. V. Papyan, "The full spectrum of deepnet Hessians at scale:
    dynamics with SGD training and sample size", arXiv:1811.07062 (2019). V. Papyan, "Traces of
    class/cross-class structure pervade deep learning spectra", JMLR 2020.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import torch
from torch import nn

from curvscope.data import balanced_subset, batches, load_dataset
from curvscope.experiments import instruments as ins
from curvscope.experiments.paper_values import PAPYAN2019
from curvscope.experiments.papyan2019_figures import figures
from curvscope.experiments.registry import Context, Recipe, by_scale
from curvscope.experiments.run import Claim, RunDir
from curvscope.linalg import eigsh
from curvscope.metrics import split_spectrum, subspace_overlap
from curvscope.models import build_model
from curvscope.operators import ClassStructure, Hessian, Residual
from curvscope.operators.dense import dense_class_structure
from curvscope.train import TrainConfig, steps_per_epoch, train

SOURCE = "Papyan 2019 (ICML), 2020 (JMLR): class / cross-class structure of G"
SANITY = "identity of the class-structure split of G (docs/science.md)"
GUARD = "measured by curvscope (docs/science.md, 'Claim kinds and verdicts')"
#: "The top eigenspace lies in the span of the gradient means", read as: more of its energy inside than outside.
MAJORITY = 0.5


@dataclass(frozen=True)
class Settings:
    """One scale of the experiment (see the module docstring)."""

    dataset: str
    data_kwargs: dict
    sizes: tuple[int, ...]  # training-set sizes; the first one defines the epochs
    model: str
    model_kwargs: dict
    batch_size: int
    lr: float
    snapshot_epochs: tuple[int, ...]
    dtype: torch.dtype
    curvature_batch: int | None  # samples per batch of the curvature operators (None: all)
    eval_batch_size: int | None  # batch of the trainer's snapshot metrics (None: all at once)
    num_probes: int
    num_steps: int
    identity_samples: int
    identity_params: tuple[str, ...] | None = None  # restrict the dense identity check (large D)
    rank_rtol: float = 1e-8  # numerical rank: singular values above rank_rtol · σ_max (float64 gap ~1e-2 → 1e-16)
    all_densities_for: tuple[int, ...] = (0,)  # indices of `sizes` with densities at every snapshot
    curvature_samples: int | None = None  # class-balanced subset of each training set for the curvature (None: all)


QUICK = Settings(
    dataset="gmm",
    data_kwargs={"num_classes": 10, "dim": 30, "num_samples": 2000, "spread": 0.4},
    sizes=(2000, 500),
    model="mlp",
    model_kwargs={"in_features": 30, "widths": (32, 32), "num_classes": 10},
    batch_size=64,
    lr=0.05,
    snapshot_epochs=(0, 1, 2, 5),
    dtype=torch.float64,
    curvature_batch=None,
    eval_batch_size=None,
    num_probes=4,
    num_steps=40,
    identity_samples=100,
    identity_params=("layers.2.*", "layers.4.*"),  # D = 1386: the dense terms at D = 2378 take ~15 s
)

FULL = Settings(
    dataset="fashion-mnist",
    data_kwargs={"split": "train"},
    sizes=(60000, 6000),
    model="lenet",
    model_kwargs={"in_channels": 1, "image_size": 28, "num_classes": 10},
    batch_size=128,
    lr=0.05,
    snapshot_epochs=(0, 1, 2),
    dtype=torch.float32,
    curvature_batch=1000,
    eval_batch_size=5000,
    num_probes=4,
    num_steps=40,
    identity_samples=200,
    identity_params=("classifier.4.*",),
    rank_rtol=1e-5,  # the factors are float32
    curvature_samples=1000,
)


#: The papers' own sizes where larger (``--scale full --device cuda``): Papyan trains until the classes
#: separate (the 20 epochs the CPU scale cannot afford), measures on far more samples, and uses ~10 probes
#: × ~90 Lanczos steps; the LeNet stays (the VGG/ResNet of the papers are not built in).
PAPER = replace(FULL, snapshot_epochs=(0, 1, 2, 5, 20), curvature_samples=10000, curvature_batch=2000,
                num_probes=10, num_steps=90, identity_samples=1000)  # fmt: skip


def _settings(ctx: Context) -> Settings:
    return by_scale(ctx.scale, QUICK, FULL, PAPER)


class _Ops:
    """Curvature operators of one snapshot, built on first use (a resumed run builds none)."""

    def __init__(self, model: nn.Module, data: Any, cfg: Settings, device: torch.device) -> None:
        self.args = (model, nn.CrossEntropyLoss(), batches(data, cfg.curvature_batch))
        self.kw = {"dtype": cfg.dtype, "device": device}

    @cached_property
    def H(self):
        return Hessian(*self.args, **self.kw)

    @cached_property
    def G(self):
        return self.cs.ggn

    @cached_property
    def Hres(self):
        return Residual(*self.args, **self.kw)

    @cached_property
    def cs(self):
        return ClassStructure(*self.args, **self.kw)

    def get(self, name: str):
        cs_terms = {"class": "class_term", "cross": "cross_term", "within": "within_term",
                    "G_B": "papyan_between", "G_W": "papyan_within"}  # fmt: skip
        return getattr(self.cs, cs_terms[name]) if name in cs_terms else getattr(self, name)


def _outliers(run: RunDir, name: str, H, C: int, seed: int) -> dict:
    """Top-2C eigenvalues of H (certified eigsh): enough to see where the outliers end."""

    def compute():
        e = eigsh(H, k=2 * C, seed=seed)
        return {"eigenvalues": e.eigenvalues.double().cpu(), "residuals": e.residuals.double().cpu(),
                "status": str(e.status)}  # fmt: skip

    return run.step(name, compute)


def _eigenvalues(op) -> torch.Tensor:
    """Eigenvalues of a low-rank term ``U diag(w) Uᵀ`` from the singular values of ``U √w`` (exact)."""
    return torch.linalg.svdvals(op.factor.double() * op.weights.double().clamp(min=0).sqrt()).cpu() ** 2


def _train(run: RunDir, cfg: Settings, data, n: int, steps: list[int], ctx: Context, device) -> dict:
    def fit():
        model = build_model(cfg.model, seed=ctx.seed, dtype=cfg.dtype, **cfg.model_kwargs).to(device)
        tc = TrainConfig(lr=cfg.lr, momentum=0.9, batch_size=cfg.batch_size, steps=max(steps), seed=ctx.seed,
                         snapshot_steps=tuple(steps), eval_batch_size=cfg.eval_batch_size)  # fmt: skip
        hist = train(model, data, tc, progress=ctx.progress)
        out: dict[str, Any] = {"loss": [], "accuracy": []}
        for s in steps:
            snap = hist.snapshot(s)
            out["loss"].append(snap.metrics["loss"])
            out["accuracy"].append(snap.metrics["accuracy"])
            out.update({f"s{s}/{k}": v.cpu() for k, v in snap.load_state().items()})
        return out

    return run.step(f"train_N{n}", fit)


def _measure(run: RunDir, name: str, ops: _Ops, C: int, seed: int, rtol: float) -> dict:
    """Top-(C−1) eigenpairs of H and G, overlaps with the class-mean spans, spectra of the low-rank terms."""

    def compute():
        cs = ops.cs
        eh = eigsh(ops.H, k=C - 1, seed=seed)
        eg = eigsh(ops.G, k=C - 1, seed=seed)
        V = eh.eigenvectors.double()
        D = V.shape[0]
        gb, cross, cls = (_eigenvalues(cs.papyan_between), _eigenvalues(cs.cross_term), _eigenvalues(cs.class_term))
        rank = {
            k: int((v.sqrt() > rtol * v[0].sqrt()).sum()) for k, v in (("G_B", gb), ("cross", cross), ("class", cls))
        }
        return {
            "eig_H": eh.eigenvalues.double().cpu(),
            "eig_G": eg.eigenvalues.double().cpu(),
            "res_H": eh.residuals.double().cpu(),
            "eig_G_B": gb,
            "eig_cross": cross,
            "eig_class": cls,
            "rank_G_B": rank["G_B"],
            "rank_cross": rank["cross"],
            "rank_class": rank["class"],
            "overlap_cross_means": float(subspace_overlap(V, cs.cross_class_means.reshape(D, -1).double())),
            "overlap_class_means": float(subspace_overlap(V, cs.class_means.double())),
            "overlap_papyan_means": float(subspace_overlap(V, cs.papyan_means.reshape(D, -1).double())),
            "overlap_top_G": float(subspace_overlap(V, eg.eigenvectors.double())),
            "rel_diff_HG": ((eh.eigenvalues - eg.eigenvalues).abs() / eh.eigenvalues.abs()).max().item(),
            "converged": bool(eh.converged.all() and eg.converged.all()),
            "status_H": str(eh.status),
            "status_G": str(eg.status),
        }

    return run.step(name, compute)


def _identities(run: RunDir, model: nn.Module, data, cfg: Settings, ctx: Context, device) -> dict:
    """Dense class-structure terms from per-sample vectors vs the matrix-free operators (float64)."""

    def compute():
        sub = balanced_subset(data, cfg.identity_samples, seed=ctx.seed)
        parts, lf = batches(sub), nn.CrossEntropyLoss()
        kw = {"params": list(cfg.identity_params) if cfg.identity_params else None, "dtype": torch.float64,
              "device": device}  # fmt: skip
        dense = dense_class_structure(model, lf, parts, **kw)
        cs = ClassStructure(model, lf, parts, **kw)
        D = dense["ggn"].shape[0]
        V = torch.randn(D, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(ctx.seed)).to(device)

        def rel(a, b):
            return ((a - b).norm() / b.norm()).item()

        GV = dense["ggn"] @ V
        errors = {
            "dense class + cross + within = G": rel((dense["class"] + dense["cross"] + dense["within"]) @ V, GV),
            "operator G = dense G": rel(cs.ggn @ V, GV),
            "operator class term": rel(cs.class_term @ V, dense["class"] @ V),
            "operator cross term": rel(cs.cross_term @ V, dense["cross"] @ V),
            "operator within term": rel(cs.within_term @ V, dense["within"] @ V),
            "operator G_B": rel(cs.papyan_between @ V, dense["papyan_between"] @ V),
            "operator G_B + G_W = G": rel(cs.papyan_between @ V + cs.papyan_within @ V, GV),
        }
        lam_max = torch.linalg.eigvalsh(dense["ggn"])[-1].item()
        lam_min = {t: torch.linalg.eigvalsh(dense[t])[0].item() / lam_max for t in ("within", "papyan_within")}
        return {"errors": errors, "max_error": max(errors.values()), "min_eig_rel": lam_min, "dim": D,
                "samples": len(sub)}  # fmt: skip

    return run.step("identities", compute)


def run_papyan(run: RunDir, ctx: Context) -> None:
    """Train at two sample sizes, then measure G's class structure at each snapshot (see the module doc)."""
    cfg, device = _settings(ctx), ctx.device
    full = load_dataset(cfg.dataset, dtype=cfg.dtype, **({"seed": ctx.seed} if cfg.dataset == "gmm" else {}),
                        **cfg.data_kwargs)  # fmt: skip
    C = full.num_classes
    spe = steps_per_epoch(cfg.sizes[0], TrainConfig(epochs=1, batch_size=cfg.batch_size))
    steps = [e * spe for e in cfg.snapshot_epochs]
    curv = f"a class-balanced subset of {cfg.curvature_samples} images of each training set" if (
        cfg.curvature_samples) else "the whole training set"  # fmt: skip
    run.metric("setup", f"{full.name}, sizes {list(cfg.sizes)}, {cfg.model} {cfg.model_kwargs}, SGD lr {cfg.lr} "
               f"momentum 0.9 batch {cfg.batch_size}, snapshots at steps {steps} (epochs {list(cfg.snapshot_epochs)} "
               f"of N={cfg.sizes[0]}); curvature (H, G, H_res, class terms) on {curv}; SLQ {cfg.num_probes} probes "
               f"x {cfg.num_steps} Lanczos steps; eigsh top-{C - 1} of H and G, top-{2 * C} of H at the last "
               f"snapshot; {cfg.dtype}")  # fmt: skip
    results: dict[int, list[dict]] = {}
    density_steps: dict[tuple[int, int], dict[str, str]] = {}
    tops: dict[int, dict] = {}  # per size, at the last snapshot: top-2C eigenvalues of H, λ_max of G_within (SLQ)
    for si, n in enumerate(cfg.sizes):
        data = full if n == len(full) else balanced_subset(full, n, seed=ctx.seed)
        small = cfg.curvature_samples and cfg.curvature_samples < len(data)
        cdata = balanced_subset(data, cfg.curvature_samples, seed=ctx.seed) if small else data
        fitted = _train(run, cfg, data, n, steps, ctx, device)
        run.metric(f"train_loss_N{n}", [round(x, 4) for x in fitted["loss"]])
        model = build_model(cfg.model, seed=ctx.seed, dtype=cfg.dtype, **cfg.model_kwargs).to(device)
        results[n] = []
        for s in steps:
            model.load_state_dict({k: fitted[f"s{s}/{k}"].to(device) for k in model.state_dict()})
            ops = _Ops(model, cdata, cfg, device)
            results[n].append(_measure(run, f"measure_N{n}_s{s}", ops, C, ctx.seed, cfg.rank_rtol))
            final = s == steps[-1]
            if final:
                tops[n] = dict(_outliers(run, f"outliers_N{n}_s{s}", ops.H, C, ctx.seed))
            if si in cfg.all_densities_for or final:
                names = ["H", "G", "Hres", "class", "cross", "within"] + (["G_B", "G_W"] if final else [])
                density_steps[(n, s)] = {}
                for name in names:
                    step = f"density_N{n}_s{s}_{name}"
                    dens = ins.density(run, step, ops.get(name), num_probes=cfg.num_probes, num_steps=cfg.num_steps,
                                       seed=ctx.seed, progress=ctx.progress)  # fmt: skip
                    density_steps[(n, s)][name] = step
                    if final and name == "within":
                        tops[n]["within_top"] = dens["top_ritz"]
            if si == 0 and final:
                ident = _identities(run, model, data, cfg, ctx, device)
    _claims(run, cfg, results, ident, steps, spe, C, sum(p.numel() for p in model.parameters()))
    _count_claims(run, cfg, results, tops, steps, C)
    figures(run, cfg, results, density_steps, steps, spe, C)


def _claims(run: RunDir, cfg: Settings, results, ident, steps, spe, C, D) -> None:
    """Identity checks of the split, then the outlier claims, then per-snapshot overlap metrics."""
    _identity_claims(run, cfg, results, ident, steps, C)
    _outlier_claims(run, cfg, results, steps, spe, C, D)
    _overlap_metrics(run, cfg, results, ident)


def _identity_claims(run: RunDir, cfg: Settings, results, ident, steps, C) -> None:
    """Sanity: the class-structure split adds up, its within terms are PSD, rank G_B = C(C−1)."""
    sizes = ", ".join(f"N={n}" for n in cfg.sizes)
    run.claim(Claim(
        "decomposition_identities",
        "G = G_class + G_cross + G_within and G = G_B + G_W to round-off: terms built from per-sample vectors "
        f"(dense, {ident['samples']} samples, D={ident['dim']}) vs the matrix-free operators, on 4 random vectors",
        f"max relative error {ident['max_error']:.1e}",
        "≤ 1e-10 (float64)",
        ident["max_error"] <= 1e-10,
        SANITY, kind="sanity",
    ))  # fmt: skip
    worst = min(ident["min_eig_rel"].values())
    run.claim(Claim(
        "within_terms_psd",
        "G_within and Papyan's G_W are positive semidefinite (smallest eigenvalue / λ_max(G))",
        {k: f"{v:.1e}" for k, v in ident["min_eig_rel"].items()},
        "≥ −1e-10 (round-off)",
        worst >= -1e-10,
        SANITY, kind="sanity", inputs={"dense eigvalsh": "exact"},
    ))  # fmt: skip
    ranks = {f"N={n}, step {s}": r["rank_G_B"] for n in cfg.sizes for s, r in zip(steps, results[n])}
    run.claim(Claim(
        "rank_G_B",
        f"rank G_B = C(C−1) = {C * (C - 1)} at every snapshot ({sizes}); singular values of its factor",
        sorted(set(ranks.values())),
        f"== {C * (C - 1)} (σ > {cfg.rank_rtol:g}·σ_max; ≤ C(C−1) by construction, equality generic)",
        all(r == C * (C - 1) for r in ranks.values()),
        SANITY, kind="sanity", inputs={"SVD of the factor": "exact"}, paper_value=PAPYAN2019["rank"],
    ))  # fmt: skip


def _eigsh_statuses(rows) -> dict:
    """Statuses of the H and G eigensolves at the ``(N, step, result)`` snapshots a claim rests on."""
    return {f"eigsh {m} (N={n}, step {s})": r.get(f"status_{m}", "unverified") for n, s, r in rows for m in "HG"}


def _outlier_claims(run: RunDir, cfg: Settings, results, steps, spe, C, D) -> None:
    """The top eigenspace lies in the cross-class span, H's outliers are G's, the C(C−1) mini-outliers."""
    finals = [(n, steps[-1], results[n][-1]) for n in cfg.sizes]
    ov_final = {f"N={n}, step {s}": round(r["overlap_cross_means"], 4) for n, s, r in finals}
    chance = min(1.0, C * C / D)
    run.claim(Claim(
        "top_space_in_cross_class_span",
        f"after training the top-{C - 1} eigenspace of H lies in the span of the C² cross-class gradient means",
        ov_final,
        f"overlap > {MAJORITY} (more of the eigenspace inside the span than outside; chance C²/D = {chance:.3f}) "
        "at the last snapshot of each training-set size",
        min(ov_final.values()) > MAJORITY,
        SOURCE, kind="paper", inputs=_eigsh_statuses(finals), paper_value=PAPYAN2019["outliers"],
    ))  # fmt: skip
    late = [(n, s, r) for n in cfg.sizes for s, r in zip(steps, results[n]) if s >= 2 * spe]
    ov = {f"N={n}, step {s}": round(r["overlap_cross_means"], 4) for n, s, r in late}
    run.claim(Claim(
        "cross_class_span_overlap_level",
        f"the top-{C - 1} eigenspace of H vs the span of the C² cross-class means, every snapshot after ≥ 2 epochs",
        ov or "no snapshot after 2 epochs",
        "overlap ≥ 0.9 at every snapshot with step ≥ 2 epochs of N=" + str(cfg.sizes[0]) + " (0.9: measured here)",
        min(ov.values()) >= 0.9 if ov else None,
        GUARD, kind="regression", inputs=_eigsh_statuses(late),
    ))  # fmt: skip
    after = [(n, s, r) for n in cfg.sizes for s, r in zip(steps, results[n]) if s >= spe]
    hg = {f"N={n}, step {s}": round(r["rel_diff_HG"], 4) for n, s, r in after}
    run.claim(Claim(
        "top_eigenvalues_H_equal_G",
        f"after the first epoch the top-{C - 1} eigenvalues of H and G agree (the outliers come from G)",
        hg or "no snapshot after 1 epoch",
        f"max_i |λ_i(H) − λ_i(G)| / λ_i(H) ≤ 0.10 over the top {C - 1}, at every snapshot with step ≥ 1 epoch "
        "(10%: measured here)",
        max(hg.values()) <= 0.10 if hg else None,
        GUARD, kind="regression", inputs=_eigsh_statuses(after),
    ))  # fmt: skip
    n0, last = cfg.sizes[0], results[cfg.sizes[0]][-1]
    mini = last["eig_cross"][: C * (C - 1)]
    run.claim(Claim(
        "mini_outliers",
        "C(C−1) mini-outliers from the cross-class term: a plot (figure 'hierarchy'), not a test",
        f"N={n0}, final: cross-term eigenvalues {mini[0]:.3g} … {mini[-1]:.3g}; top-{C - 1} of G "
        f"{last['eig_G'][0]:.3g} … {last['eig_G'][-1]:.3g}",
        "reported, not asserted (visible only sometimes)",
        None,
        SOURCE, kind="paper", paper_value=PAPYAN2019["mini"],
    ))  # fmt: skip


def _count_claims(run: RunDir, cfg: Settings, results, tops, steps, C) -> None:
    """How many outliers H has at the end of training (vs C), and whether they are G's (top eigenspaces)."""
    counts, statuses = {}, {}
    for n in cfg.sizes:
        lam = tops[n]["eigenvalues"]
        sp = split_spectrum(lam, max_outliers=2 * C - 1, min_gap=1.0)  # the largest gap among the top 2C
        counts[f"N={n}, step {steps[-1]}"] = {
            "gap_at": int(sp.num_outliers_gap), "gap_ratio": round(float(sp.gap_ratio), 3),
            "ratio_at_C-1": round(float(lam[C - 2] / lam[C - 1]), 3),
            "ratio_at_C": round(float(lam[C - 1] / lam[C]), 3),
            f"above_lambda_max(G_within) (of the top {2 * C})": int((lam > tops[n]["within_top"]).sum()),
        }  # fmt: skip
        statuses[f"eigsh top-{2 * C} H (N={n})"] = tops[n]["status"]
    run.claim(Claim(
        "outlier_count",
        f"at the end of training H has C = {C} outliers (C − 1 allowed: the softmax Hessian has rank C − 1 per "
        f"sample): position of the largest ratio λ_k/λ_(k+1) among the top {2 * C} eigenvalues of H (eigsh); also "
        "the number of them above the largest eigenvalue of the within-class term (its SLQ top Ritz value: the bulk's "
        "edge)",
        counts,
        f"gap_at ∈ {{{C - 1}, {C}}} at the last snapshot of each training-set size",
        all(v["gap_at"] in (C - 1, C) for v in counts.values()),
        SOURCE, kind="paper", inputs=statuses, paper_value=PAPYAN2019["count"],
    ))  # fmt: skip
    finals = [(n, steps[-1], results[n][-1]) for n in cfg.sizes]
    ov = {f"N={n}, step {s}": round(r["overlap_top_G"], 4) for n, s, r in finals}
    run.claim(Claim(
        "outliers_of_H_are_those_of_G",
        f"at the end of training the top-{C - 1} eigenspaces of H and G coincide (the outliers of H are G's)",
        {"overlap": ov, "max relative eigenvalue difference": {f"N={n}, step {s}": round(r["rel_diff_HG"], 4)
                                                               for n, s, r in finals}},
        f"overlap > {MAJORITY} at the last snapshot of each training-set size (the majority rule above)",
        min(ov.values()) > MAJORITY,
        SOURCE, kind="paper", inputs=_eigsh_statuses(finals), paper_value=PAPYAN2019["H_equals_G"],
    ))  # fmt: skip


def _overlap_metrics(run: RunDir, cfg: Settings, results, ident) -> None:
    """Per-snapshot overlaps and λ_max for every size, and the identity errors (reported as metrics)."""
    for n in cfg.sizes:
        run.metric(f"overlap_class_means_N{n}", [round(r["overlap_class_means"], 3) for r in results[n]])
        run.metric(f"overlap_papyan_means_N{n}", [round(r["overlap_papyan_means"], 3) for r in results[n]])
        run.metric(f"lambda_max_H_N{n}", [round(r["eig_H"][0].item(), 4) for r in results[n]])
    run.metric("identity_errors", {k: f"{v:.1e}" for k, v in ident["errors"].items()})


RECIPE = Recipe(
    name="papyan2019",
    title="Papyan 2019/2020: class / cross-class structure of the Gauss–Newton term",
    summary="SLQ densities of H, G, H_res and of G's class, cross-class and within-class terms over training "
    "and for two training-set sizes; the decomposition identities, rank G_B = C(C−1), the top eigenspace of H "
    "vs the span of the cross-class gradient means, and the top eigenvalues of H vs G.",
    run=run_papyan,
    settings=lambda scale: by_scale(scale, QUICK, FULL, PAPER),
    papers="Papyan 2019 (ICML); Papyan 2019 arXiv:1811.07062; Papyan 2020 (JMLR)",
)
