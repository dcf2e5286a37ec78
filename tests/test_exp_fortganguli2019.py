"""fortganguli2019 at the quick scale: artefacts, the robust claims, resumption without recomputation."""

import dataclasses

import pytest
import torch

from curvscope.data import FASHION_MNIST_DIR
from curvscope.experiments import fortganguli2019 as fg
from curvscope.experiments.fortganguli2019 import QUICK, RECIPE, C
from curvscope.experiments.registry import Context
from curvscope.experiments.run import RunDir, default_fingerprint
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
# The full scale without the GMM runs (the tiny test settings): the image run's claims and the Goldilocks paper
# claims; the GMM regression guards and the digits-measured Goldilocks guards are absent.
FULL_CLAIMS = {
    "logit_gradient_clustering", "logit_gradient_class_dependence", "gradient_confinement",
    "gradient_confinement_early", "gradient_confinement_minibatch", "subspace_persistence_image",
    "lambda_max_rise_fall_image", "goldilocks_peak", "goldilocks_positive_fraction", "hyperplane_training_sgd",
}  # fmt: skip
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


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_full_scale_code_path_on_fashion_mnist(tmp_path, monkeypatch):
    """The full scale's image run and Goldilocks scan on Fashion-MNIST, with tiny sizes (seconds, not minutes)."""
    tiny = dataclasses.replace(
        fg.FULL, gmm_runs=(), image_epochs=2, image_snapshot_epochs=(0, 0.33, 1, 2), image_logit_epochs=(0.33, 2),
        image_train_size=640, image_curv_size=100, image_minibatches=2, image_logit_per_class=2,
        alphas=(0.3, 1, 3), gold_dim=8, gold_subspaces=1, gold_samples=100, plane_dims=(4,), plane_alphas=(1,),
        plane_epochs=0.2, plane_optimizers=("sgd",), plane_train_size=200, plane_test_size=100,
    )  # fmt: skip
    monkeypatch.setattr(fg, "FULL", tiny)
    config = {"experiment": RECIPE.name, "scale": "full", "seed": 0, "device": "cpu"}
    run = RunDir(tmp_path, config, fingerprint=default_fingerprint(config, params=dataclasses.asdict(tiny)))
    RECIPE.run(run, Context(scale="full", seed=0, device=torch.device("cpu"), progress=False))
    run.finish()
    claims = {c["name"]: c for c in run.results["claims"]}
    assert set(claims) == FULL_CLAIMS, set(claims) ^ FULL_CLAIMS
    assert all(claims[n]["paper_value"] for n in ("gradient_confinement", "subspace_persistence_image"))
    assert run.results["metrics"]["num_parameters_image"] == 784 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10
    dyn = RunDir(tmp_path).arrays("dynamics_image")
    # 10 steps an epoch: the snapshot asked at epoch 0.33 is step 3; its logit gradients are measured there
    assert dyn["epoch"].tolist() == [0.0, 0.3, 1.0, 2.0] and dyn["persistence"].shape == (4, 4)
    assert torch.allclose(dyn["logit_epoch"], torch.tensor([0.3, 2.0], dtype=torch.float64))
    assert ((dyn["ftop"] >= 0) & (dyn["ftop"] <= dyn["ftop_C"] + 1e-12) & (dyn["ftop_C"] <= 1 + 1e-12)).all()
    gold = RunDir(tmp_path).arrays("goldilocks")
    assert gold["alpha"].tolist() == [0.3, 1.0, 3.0]
    # figure specs only: rendering (matplotlib, ~2/3 of this test's time) is exercised by the quick-scale tests
    assert {f["name"] for f in run.results["figures"]} == {*FIGURES, "persistence_image"} - {
        "persistence_overlap",
        "persistence_separable",
        "hyperplane_training_adam",
    }
