"""fernandez2025 at the quick scale: artefacts, the robust claims, resumption without recomputation."""

from curvscope.experiments.fernandez2025 import QUICK, RECIPE
from curvscope.experiments.run import RunDir
from exp_harness import PASS, REPORTED, check_claims, check_figures_and_report, check_resume, quick_run_fixture

STEPS = [0, 32, 320]  # epochs 0, 1, 10 of N = 2000 at batch 64
DIMS = (2378, 6794)

# (kind, verdict) of every claim at the quick scale on seed 0, the seed these tests run; every one is
# asserted, failures included. Seeds 0-2: docs/claims-seeds.md.
EXPECTED = {
    "random_masks_at_chance": ("sanity", PASS),
    "magnitude_mask_above_chance": ("paper", PASS),
    "magnitude_mask_ratio_range": ("regression", PASS),
    "larger_net_higher_overlap": ("paper", PASS),
    "sketch_matches_lanczos": ("regression", PASS),
    "magnitude_mask_k10": ("paper", REPORTED),
    "layer_matched_control": ("paper", REPORTED),
    "magnitude_mask_at_init": ("paper", REPORTED),
}
FIGURES = ("masks_net0", "masks_net1", "training_net0", "training_net1", "model_sizes", "top_eigenvalues")


def test_recipe_is_named():
    assert RECIPE.name == "fernandez2025" and RECIPE.run is not None


quick_run = quick_run_fixture(RECIPE)


def test_claims_kinds_and_verdicts(quick_run):
    check_claims(quick_run[1], EXPECTED)


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
    check_figures_and_report(quick_run, FIGURES, ("layer_matched_control", "magnitude_mask_above_chance"))


def test_resume_does_not_recompute(quick_run):
    check_resume(RECIPE, quick_run)
