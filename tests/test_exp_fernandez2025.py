"""fernandez2025 at the quick scale: artefacts, the robust claims, resumption without recomputation."""

import json

import pytest
import torch

from curvscope.experiments.fernandez2025 import QUICK, RECIPE
from curvscope.experiments.registry import Context
from curvscope.experiments.run import RunDir
from curvscope.report import render

CONFIG = {"experiment": "fernandez2025", "scale": "quick", "seed": 0, "device": "cpu"}
STEPS = [0, 32, 320]  # epochs 0, 1, 10 of N = 2000 at batch 64
DIMS = (2378, 6794)

# Held on every seed tried (0, 1, 2).
ROBUST = (
    "random_masks_at_chance",
    "magnitude_mask_above_chance",
    "larger_net_higher_overlap",
    "sketch_matches_lanczos",
)
CHECKED = ("magnitude_mask_ratio_range",)  # k = 200 sits at the 1.5 edge: fails on some seeds, not asserted here
REPORTED = ("magnitude_mask_k10", "layer_matched_control", "magnitude_mask_at_init")
FIGURES = ("masks_net0", "masks_net1", "training_net0", "training_net1", "model_sizes", "top_eigenvalues")


def test_recipe_is_named():
    assert RECIPE.name == "fernandez2025" and RECIPE.run is not None


def _run(path):
    run = RunDir(path, CONFIG)
    RECIPE.run(run, Context(scale="quick", seed=0, device=torch.device("cpu"), progress=False))
    run.finish()
    return run


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("fernandez2025")
    run = _run(path)
    return path, run.results, render(path)


def test_claims_present_and_robust_ones_hold(quick_run):
    _, results, _ = quick_run
    claims = {c["name"]: c for c in results["claims"]}
    assert set(claims) == set(ROBUST) | set(CHECKED) | set(REPORTED)
    failed = {n: (claims[n]["measured"], claims[n]["criterion"]) for n in ROBUST if claims[n]["passed"] is not True}
    assert not failed, failed
    for name in CHECKED:
        assert claims[name]["passed"] in (True, False), name
    for name in REPORTED:
        assert claims[name]["passed"] is None, name
    for c in claims.values():
        assert c["measured"] not in ("", None) and c["criterion"], c


def test_measurements_are_sane(quick_run):
    path, results, _ = quick_run
    run = RunDir(path)
    for i, D in enumerate(DIMS):
        for s in STEPS:
            a = run.arrays(f"masks_net{i}_s{s}")
            values = results["steps"][f"masks_net{i}_s{s}"]["values"]
            assert values["D"] == D and a["k"].tolist() == list(QUICK.ks)
            assert values["method"] == ("lanczos" if i == 0 else "sketch")
            # no k-mask beats the best one; bands bracket their means; |λ| sorted descending
            for key in ("magnitude", "magnitude_layer", "random_mean", "layer_matched_mean"):
                assert bool((a[key] <= a["best"] + 1e-9).all()), key
            assert bool((a["random_lo"] <= a["random_mean"]).all() and (a["random_mean"] <= a["random_hi"]).all())
            assert bool((a["abs_eigenvalues"][:-1] >= a["abs_eigenvalues"][1:]).all())
        assert results["steps"][f"masks_net{i}_s0"]["values"]["info"]["num_matvecs"] > 0
    assert results["steps"]["masks_net0_s320"]["values"]["info"]["converged"] == max(QUICK.ks)


def test_figures_and_report(quick_run):
    path, results, report = quick_run
    assert {f["name"] for f in results["figures"]} == set(FIGURES)
    for name in FIGURES:
        for ext in ("png", "svg"):
            assert (path / "figures" / f"{name}.{ext}").stat().st_size > 1000, (name, ext)
    html = report.read_text()
    for name in FIGURES:
        assert f'id="fig-{name}"' in html
    assert "layer_matched_control" in html and "magnitude_mask_above_chance" in html


def test_resume_does_not_recompute(quick_run):
    path, results, _ = quick_run
    before = {k: v["seconds"] for k, v in results["steps"].items()}
    again = _run(path)
    assert {k: v["seconds"] for k, v in again.results["steps"].items()} == before
    assert json.loads((path / "results.json").read_text())["claims"] == results["claims"]
