"""sagun2017 at the quick scale: artefacts, the robust claims, resumption without recomputation."""

import dataclasses

import pytest
import torch

from curvscope.data import FASHION_MNIST_DIR
from curvscope.experiments import sagun2017
from curvscope.experiments.registry import Context
from curvscope.experiments.run import RunDir
from curvscope.experiments.sagun2017 import FULL, QUICK, RECIPE
from exp_harness import PASS, REPORTED, check_claims, check_figures_and_report, check_resume, quick_run_fixture

# (kind, verdict) of every claim at the quick scale on seed 0, the seed these tests run; every one is
# asserted, failures included. Seeds 0-2: docs/claims-seeds.md.
EXPECTED = {
    "gauss_newton_psd": ("sanity", PASS),
    "hessian_has_negative_eigenvalues": ("paper", PASS),
    "residual_carries_negative": ("sanity", PASS),
    "outliers_from_gauss_newton": ("paper", PASS),
    "top_eigenvalues_H_G_agree": ("regression", PASS),
    "residual_shrinks_with_loss": ("paper", REPORTED),
    "no_barrier": ("paper", PASS),
    "monotone_path": ("paper", PASS),
    "small_batch_flatter": ("paper", PASS),
}
FIGURES = ("densities_early", "densities_lb", "top_eigenvalues_H_G", "interpolation", "training")


quick_run = quick_run_fixture(RECIPE)


def test_claims_kinds_and_verdicts(quick_run):
    check_claims(quick_run[1], EXPECTED)


def test_measurements_are_sane(quick_run):
    path, results, _ = quick_run
    run = RunDir(path)
    line = run.arrays("interpolation")
    assert line["alpha"].shape == (QUICK.line_points,)
    assert float(line["alpha"][0]) == -0.5 and float(line["alpha"][-1]) == 1.5
    assert {0.0, 1.0} <= set(line["lambda_alpha"].tolist())
    # λ_max along the line is certified: residual ≤ tol · ‖H‖ (eigsh's default tol) with ‖H‖ ≈ λ_max here.
    assert bool((line["lambda_residual"] <= 10 * line["lambda_tol"] * line["lambda_max"]).all())
    assert set(results["steps"]["interpolation"]["values"]["lambda_status"]) == {"converged"}
    # λ_max at θ_LB from the line agrees with the top-10 eigsh run there.
    top = run.arrays("top_H_lb")
    lam_lb = line["lambda_max"][line["lambda_alpha"].tolist().index(0.0)]
    assert torch.isclose(lam_lb, top["eigenvalues"][0], rtol=1e-4)
    assert results["metrics"]["train_accuracy"]["lb"] == 1.0  # GD reached a solution


def test_figures_and_report(quick_run):
    check_figures_and_report(quick_run, FIGURES, ("no_barrier", "gauss_newton_psd"))


def test_resume_does_not_recompute(quick_run):
    check_resume(RECIPE, quick_run)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_full_scale_path_on_a_small_fashion_mnist_subset(tmp_path, monkeypatch):
    """The full scale's code path (image data, float32 training, float64 curvature on a class-balanced
    subset, line loss on the whole training set in eval batches) with tiny sizes; then a resume."""
    tiny = dataclasses.replace(
        FULL, gd_steps=12, early_step=4, sb_epochs=0.05, line_points=5, lambda_every=2, slq_probes=2,
        slq_steps=12, widths=(8, 8), train_samples=400, curvature_samples=100, eval_batch=150,
    )  # fmt: skip
    monkeypatch.setattr(sagun2017, "FULL", tiny)
    ctx = Context(scale="full", seed=0, device=torch.device("cpu"), progress=False)
    run = RunDir(tmp_path, {"experiment": "sagun2017", "scale": "full", "seed": 0, "device": "cpu"})
    RECIPE.run(run, ctx)
    run.finish()
    setup = run.results["metrics"]["setup"]
    assert setup["dataset"] == "fashion-mnist" and setup["in_features"] == 784
    assert setup["train_samples"] == 400 and setup["curvature_class_counts"] == [10] * 10
    assert setup["num_params"] == 784 * 8 + 8 + 8 * 8 + 8 + 8 * 10 + 10
    assert {c["name"] for c in run.results["claims"]} == set(EXPECTED)
    line = run.arrays("interpolation")
    assert line["alpha"].shape == (5,) and torch.isfinite(line["loss"]).all()
    assert line["lambda_max"].dtype == torch.float64 and {0.0, 1.0} <= set(line["lambda_alpha"].tolist())
    before = {k: v["seconds"] for k, v in run.results["steps"].items()}
    again = RunDir(tmp_path, {"experiment": "sagun2017", "scale": "full", "seed": 0, "device": "cpu"})
    RECIPE.run(again, ctx)  # resumed: every step comes from the directory
    assert {k: v["seconds"] for k, v in again.results["steps"].items()} == before
