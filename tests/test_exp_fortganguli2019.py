"""fortganguli2019 at the quick scale: artefacts, the robust claims, resumption without recomputation."""

import json

import pytest
import torch

from curvscope.experiments.fortganguli2019 import QUICK, RECIPE, C
from curvscope.experiments.registry import Context
from curvscope.experiments.run import RunDir
from curvscope.report import render

CONFIG = {"experiment": "fortganguli2019", "scale": "quick", "seed": 0, "device": "cpu"}

# Held on every seed tried (0, 1, 2); see the module docstring for the settings.
ROBUST = (
    "logit_gradient_clustering",
    "gradient_confinement",
    "gradient_confinement_collapse",
    "subspace_persistence",
    "subspace_persistence_from_init",
    "lambda_max_rise_fall_separable",
    "goldilocks_small_init",
    "goldilocks_peak",
    "goldilocks_large_init",
    "goldilocks_positive_fraction",
)
REPORTED = (
    "logit_gradient_class_dependence",
    "gradient_confinement_early",
    "gradient_confinement_minibatch",
    "lambda_max_rise_fall_overlap",
    "hyperplane_training_sgd",
    "hyperplane_training_adam",
)
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


def _run(path):
    run = RunDir(path, CONFIG)
    RECIPE.run(run, Context(scale="quick", seed=0, device=torch.device("cpu"), progress=False))
    run.finish()
    return run


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("fortganguli2019")
    run = _run(path)
    return path, run.results, render(path)


def test_claims_present_and_robust_ones_hold(quick_run):
    _, results, _ = quick_run
    claims = {c["name"]: c for c in results["claims"]}
    assert set(claims) == set(ROBUST) | set(REPORTED)
    failed = {n: (claims[n]["measured"], claims[n]["criterion"]) for n in ROBUST if claims[n]["passed"] is not True}
    assert not failed, failed
    for name in REPORTED:
        assert claims[name]["passed"] is None, name
    for c in claims.values():
        assert c["measured"] not in ("", None) and c["criterion"], c


def test_measurements_are_sane(quick_run):
    path, results, _ = quick_run
    D = results["metrics"]["num_parameters_gmm"]
    assert D == 2378  # MLP 30-32-32-10 with biases (SCIENCE.md §2, setup "GMM")
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
    path, results, report = quick_run
    assert {f["name"] for f in results["figures"]} == set(FIGURES)
    for name in FIGURES:
        for ext in ("png", "svg"):
            assert (path / "figures" / f"{name}.{ext}").stat().st_size > 1000, (name, ext)
    html = report.read_text()
    for name in FIGURES:
        assert f'id="fig-{name}"' in html
    assert "hyperplane_training_sgd" in html and "goldilocks_peak" in html


def test_resume_does_not_recompute(quick_run):
    path, results, _ = quick_run
    before = {k: v["seconds"] for k, v in results["steps"].items()}
    again = _run(path)
    assert {k: v["seconds"] for k, v in again.results["steps"].items()} == before
    assert json.loads((path / "results.json").read_text())["claims"] == results["claims"]
