"""fortganguli2019 at the quick scale: artefacts, the robust claims, resumption without recomputation."""

import torch

from curvscope.experiments.fortganguli2019 import QUICK, RECIPE, C
from curvscope.experiments.run import RunDir
from exp_harness import PASS, REPORTED, check_claims, check_figures_and_report, check_resume, quick_run_fixture

# (kind, verdict) of every claim at the quick scale on seed 0, the seed these tests run; every one is
# asserted, failures included. Seeds 0-2: docs/claims-seeds.md.
EXPECTED = {
    "logit_gradient_clustering": ("paper", PASS),
    "logit_gradient_clustering_levels": ("regression", PASS),
    "logit_gradient_class_dependence": ("paper", REPORTED),
    "gradient_confinement": ("paper", PASS),
    "gradient_confinement_level": ("regression", PASS),
    "gradient_confinement_early": ("paper", REPORTED),
    "gradient_confinement_minibatch": ("paper", REPORTED),
    "gradient_confinement_collapse": ("regression", PASS),
    "subspace_persistence": ("regression", PASS),
    "subspace_persistence_from_init": ("regression", PASS),
    "lambda_max_rise_fall_overlap": ("paper", REPORTED),
    "lambda_max_rise_fall_separable": ("paper", PASS),
    "lambda_max_rise_fall_factors_separable": ("regression", PASS),
    "goldilocks_peak": ("paper", PASS),
    "goldilocks_positive_fraction": ("paper", PASS),
    "goldilocks_small_init": ("regression", PASS),
    "goldilocks_peak_location": ("regression", PASS),
    "goldilocks_large_init": ("regression", PASS),
    "hyperplane_training_sgd": ("paper", REPORTED),
    "hyperplane_training_adam": ("paper", REPORTED),
}
FIGURES = (
    "logit_gradient_cosines",
    "logit_cosines_training",
    "gradient_confinement",
    "lambda_max",
    "training_loss",
    "persistence_overlap",
    "persistence_separable",
    "goldilocks_ratio",
    "goldilocks_positive",
    "hyperplane_training_sgd",
    "hyperplane_training_adam",
)


def test_recipe_is_named():
    assert RECIPE.name == "fortganguli2019" and RECIPE.run is not None


quick_run = quick_run_fixture(RECIPE)


def test_claims_kinds_and_verdicts(quick_run):
    check_claims(quick_run[1], EXPECTED)


def test_measurements_are_sane(quick_run):
    path, results, _ = quick_run
    D = results["metrics"]["num_parameters_gmm"]
    assert D == 2378  # MLP 30-32-32-10 with biases (the GMM setup of the module docstring)
    gold = RunDir(path).arrays("goldilocks")
    assert gold["alpha"].tolist() == list(QUICK.alphas) and bool(
        ((gold["positive"] >= 0) & (gold["positive"] <= 1)).all()
    )
    dyn = RunDir(path).arrays("dynamics_overlap")
    T = len(dyn["epoch"])
    assert dyn["persistence"].shape == (T, T)
    assert torch.allclose(dyn["persistence"].diagonal(), torch.ones(T, dtype=torch.float64))
    assert ((dyn["ftop"] >= 0) & (dyn["ftop"] <= dyn["ftop_C"] + 1e-12) & (dyn["ftop_C"] <= 1 + 1e-12)).all()
    top = RunDir(path).arrays("eig_overlap_0")
    assert bool(top["converged"].bool().all())
    logit_step = results["steps"]["dynamics_overlap"]["values"]["logit_step"]
    assert RunDir(path).arrays(logit_step)["blocks"].shape == (C * C, C * C)


def test_figures_and_report(quick_run):
    check_figures_and_report(quick_run, FIGURES, ("hyperplane_training_sgd", "goldilocks_peak"))


def test_resume_does_not_recompute(quick_run):
    check_resume(RECIPE, quick_run)
