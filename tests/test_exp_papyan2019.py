"""papyan2019 at the quick scale: artefacts, the robust claims, resumption without recomputation."""

import json

import pytest
import torch

from curvscope.experiments.papyan2019 import QUICK, RECIPE
from curvscope.experiments.registry import Context
from curvscope.experiments.run import RunDir
from curvscope.report import render

CONFIG = {"experiment": "papyan2019", "scale": "quick", "seed": 0, "device": "cpu"}
C = QUICK.model_kwargs["num_classes"]
STEPS = [0, 32, 64, 160]  # epochs 0, 1, 2, 5 of N = 2000 at batch 64

# Held on every seed tried (0, 1, 2).
ROBUST = ("decomposition_identities", "within_terms_psd", "rank_G_B", "top_space_in_cross_class_span")
CHECKED = ("top_eigenvalues_H_equal_G",)  # checked, but fails on some seeds at epoch 1: not asserted here
REPORTED = ("mini_outliers",)
FIGURES = (
    *(f"terms_N2000_step{s}" for s in STEPS),
    "terms_N500_step160",
    "H_over_training",
    "sample_size",
    "papyan_split",
    "hierarchy",
    "rank_G_B",
    "overlap_over_training",
    "H_vs_G",
)


def test_recipe_is_named():
    assert RECIPE.name == "papyan2019" and RECIPE.run is not None


def _run(path):
    run = RunDir(path, CONFIG)
    RECIPE.run(run, Context(scale="quick", seed=0, device=torch.device("cpu"), progress=False))
    run.finish()
    return run


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("papyan2019")
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
    for n in QUICK.sizes:
        for s in STEPS:
            m = run.arrays(f"measure_N{n}_s{s}")
            values = results["steps"][f"measure_N{n}_s{s}"]["values"]
            assert m["eig_H"].shape == (C - 1,) and bool((m["eig_H"][:-1] >= m["eig_H"][1:]).all())
            assert m["eig_G_B"].shape == (C * C,) and values["rank_class"] <= C
            assert values["rank_cross"] == C * (C - 1) and values["converged"]
            assert 0 <= values["overlap_class_means"] <= values["overlap_cross_means"] + 1e-9 <= 1 + 1e-9
    # G is PSD; the class terms' SLQ densities put (almost) all their mass at zero
    final = results["steps"]["density_N2000_s160_G"]["values"]
    assert final["range_lo"] > -1e-8 * final["range_hi"]
    ident = results["steps"]["identities"]["values"]
    assert ident["dim"] == 1386 and len(ident["errors"]) == 7


def test_figures_and_report(quick_run):
    path, results, report = quick_run
    assert {f["name"] for f in results["figures"]} == set(FIGURES)
    for name in FIGURES:
        for ext in ("png", "svg"):
            assert (path / "figures" / f"{name}.{ext}").stat().st_size > 1000, (name, ext)
    html = report.read_text()
    for name in FIGURES:
        assert f'id="fig-{name}"' in html
    assert "rank_G_B" in html and "top_space_in_cross_class_span" in html


def test_resume_does_not_recompute(quick_run):
    path, results, _ = quick_run
    before = {k: v["seconds"] for k, v in results["steps"].items()}
    again = _run(path)
    assert {k: v["seconds"] for k, v in again.results["steps"].items()} == before
    assert json.loads((path / "results.json").read_text())["claims"] == results["claims"]
