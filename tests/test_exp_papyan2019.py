"""papyan2019 at the quick scale: artefacts, the robust claims, resumption without recomputation."""

import dataclasses

import pytest
import torch

from curvscope.data import FASHION_MNIST_DIR
from curvscope.experiments import papyan2019
from curvscope.experiments.papyan2019 import QUICK, RECIPE
from curvscope.experiments.registry import Context
from curvscope.experiments.run import RunDir, default_fingerprint
from exp_harness import PASS, REPORTED, check_claims, check_figures_and_report, check_resume, quick_run_fixture

C = QUICK.model_kwargs["num_classes"]
STEPS = [0, 32, 64, 160]  # epochs 0, 1, 2, 5 of N = 2000 at batch 64

# (kind, verdict) of every claim at the quick scale on seed 0, the seed these tests run; every one is
# asserted, failures included. Seeds 0-2: docs/claims-seeds.md.
EXPECTED = {
    "decomposition_identities": ("sanity", PASS),
    "within_terms_psd": ("sanity", PASS),
    "rank_G_B": ("sanity", PASS),
    "top_space_in_cross_class_span": ("paper", PASS),
    "cross_class_span_overlap_level": ("regression", PASS),
    "top_eigenvalues_H_equal_G": ("regression", PASS),
    "mini_outliers": ("paper", REPORTED),
    "outlier_count": ("paper", PASS),
    "outliers_of_H_are_those_of_G": ("paper", PASS),
}
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


quick_run = quick_run_fixture(RECIPE)


def test_claims_kinds_and_verdicts(quick_run):
    check_claims(quick_run[1], EXPECTED)


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
    check_figures_and_report(quick_run, FIGURES, ("rank_G_B", "top_space_in_cross_class_span"))


def test_resume_does_not_recompute(quick_run):
    check_resume(RECIPE, quick_run)


# ---------------------------------------------------------------- the full scale's code path, tiny sizes
FULL_KINDS = {name: kind for name, (kind, _) in EXPECTED.items()}
TINY_FULL = dataclasses.replace(
    papyan2019.FULL,
    sizes=(640, 200),  # 5 steps an epoch at batch 128: snapshots at steps 0 and 5
    snapshot_epochs=(0, 1),
    model_kwargs={**papyan2019.FULL.model_kwargs, "channels": (1, 2), "hidden": (8, 12)},  # D = 1108
    curvature_samples=20,  # the class sums cost 2C² = 200 backward passes per image
    curvature_batch=10,
    num_probes=2,
    num_steps=10,
    identity_samples=20,
    dtype=torch.float64,  # float32 eigsh first measures the products' noise floor (half of this test's time)
)


def _run_full_tiny(path) -> RunDir:
    config = {"experiment": "papyan2019", "scale": "full", "seed": 0, "device": "cpu"}
    run = RunDir(path, config, fingerprint=default_fingerprint(config, params=dataclasses.asdict(TINY_FULL)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(papyan2019, "FULL", TINY_FULL)
        RECIPE.run(run, Context(scale="full", seed=0, device=torch.device("cpu"), progress=False))
    run.finish()
    return run


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_full_scale_code_path_on_tiny_sizes(tmp_path):
    """The full recipe (Fashion-MNIST LeNet, a curvature subset, top-2C of H) end to end on tiny sizes, then resumed."""
    run = _run_full_tiny(tmp_path)
    claims = {c["name"]: c for c in run.results["claims"]}
    assert {n: c["kind"] for n, c in claims.items()} == FULL_KINDS
    for name, c in claims.items():
        assert c["kind"] != "paper" or c["paper_value"], name
    assert "class-balanced subset of 20 images" in run.results["metrics"]["setup"]
    for n in TINY_FULL.sizes:
        top = run.arrays(f"outliers_N{n}_s5")["eigenvalues"]
        assert top.shape == (2 * C,) and bool((top[:-1] >= top[1:]).all())
    assert run.results["steps"]["identities"]["values"]["dim"] == 12 * 10 + 10  # the last layer (classifier.4)
    # figure specs only: rendering is exercised by the quick-scale tests
    figs = {f["name"] for f in run.results["figures"]}
    assert figs == {"terms_N640_step0", "terms_N640_step5", "terms_N200_step5", *FIGURES[5:]}
    before = {k: v["seconds"] for k, v in run.results["steps"].items()}
    again = _run_full_tiny(tmp_path)
    assert {k: v["seconds"] for k, v in again.results["steps"].items()} == before
