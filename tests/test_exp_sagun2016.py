"""sagun2016 at the quick scale: artefacts, the robust claims, resumption without recomputation."""

import torch

from curvscope.experiments.run import RunDir
from curvscope.experiments.sagun2016 import QUICK, RECIPE
from exp_harness import PASS, REPORTED, check_claims, check_figures_and_report, check_resume, quick_run_fixture

# (kind, verdict) of every claim at the quick scale on seed 0, the seed these tests run; every one is
# asserted, failures included. Seeds 0-2: docs/claims-seeds.md.
EXPECTED = {
    "outliers_after_training": ("paper", PASS),
    "outliers_at_init": ("paper", REPORTED),
    "negative_mass_shrinks": ("regression", PASS),
    "gap_tracks_classes_ce": ("paper", PASS),
    "gap_tracks_classes_mse": ("regression", PASS),
    "bulk_grows_with_width": ("paper", PASS),
    "top_eigenvalues_stay_with_width": ("regression", PASS),
    "bulk_fraction_slq_vs_exact": ("sanity", REPORTED),
}
FIGURES = (
    "spectrum_density",
    "sorted_eigenvalues",
    "top_eigenvalues",
    "gap_vs_classes",
    "bulk_fraction_vs_width",
    "top_eigenvalues_vs_width",
    "width_densities",
)


quick_run = quick_run_fixture(RECIPE)


def test_claims_kinds_and_verdicts(quick_run):
    check_claims(quick_run[1], EXPECTED)


def test_measurements_are_sane(quick_run):
    path, results, _ = quick_run
    run = RunDir(path)
    init, final = (run.arrays(f"spectrum_{w}")["eigenvalues"] for w in ("init", "final"))
    assert init.shape == final.shape == (2378,)  # MLP 30-32-32-10 (the GMM setup of the module docstring)
    assert bool((final[:-1] >= final[1:]).all())  # stored in decreasing order
    # The class sweep's eigsh values agree with the dense spectrum for the shared run (CE, C = 10).
    top = run.arrays("top_ce_C10_w32")
    assert bool(top["converged"].bool().all())
    assert torch.allclose(top["eigenvalues"], final[:31], rtol=1e-5, atol=1e-8)
    rows = {r["width"]: r for r in results["metrics"]["width_sweep"]}
    assert sorted(rows) == list(QUICK.widths) and rows[64]["D"] == 6794
    # SLQ bulk fraction within 0.05 of the exact one where the exact spectrum was computed.
    assert abs(rows[16]["bulk_slq"] - rows[16]["bulk_exact"]) <= 0.05


def test_figures_and_report(quick_run):
    check_figures_and_report(quick_run, FIGURES, ("gap_tracks_classes_ce", "bulk_grows_with_width"))


def test_resume_does_not_recompute(quick_run):
    check_resume(RECIPE, quick_run)
