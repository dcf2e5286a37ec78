"""sagun2016 at the quick scale: artefacts, the robust claims, resumption without recomputation."""

import dataclasses

import pytest
import torch

from curvscope.data import FASHION_MNIST_DIR
from curvscope.experiments import sagun2016
from curvscope.experiments.registry import Context
from curvscope.experiments.run import RunDir, default_fingerprint
from curvscope.experiments.sagun2016 import QUICK, RECIPE
from curvscope.report import render
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


# ---------------------------------------------------------------- the full scale's code path, tiny sizes
FULL_EXPECTED_KINDS = {
    "outliers_after_training": "paper",
    "outliers_at_init": "paper",
    "negative_mass_shrinks": "regression",
    "gap_tracks_classes_images": "paper",
    "bulk_grows_with_width": "paper",
    "outliers_set_by_data_not_width": "paper",
    "top_eigenvalues_vs_width": "paper",
    "gap_tracks_classes_ce": "paper",
    "gap_tracks_classes_mse": "regression",
}
FULL_FIGURES = (
    "spectrum_density",
    "sorted_eigenvalues",
    "top_eigenvalues",
    "gap_vs_classes_images",
    "top_eigenvalues_vs_classes_images",
    "bulk_fraction_vs_width",
    "top_eigenvalues_vs_width",
    "width_densities",
    "gap_vs_classes",
)
TINY_FULL = dataclasses.replace(
    sagun2016.FULL,
    train_subset=600,
    epochs=1,
    hessian_per_class=10,
    main_width=8,
    classes=(3, 10),
    widths=(4, 8),
    gmm=dataclasses.replace(sagun2016.FULL.gmm, num_samples=150, epochs=1, ce_classes=(3,), mse_classes=(8,)),
)


def _run_full_tiny(path) -> RunDir:
    config = {"experiment": "sagun2016", "scale": "full", "seed": 0, "device": "cpu"}
    run = RunDir(path, config, fingerprint=default_fingerprint(config, params=dataclasses.asdict(TINY_FULL)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sagun2016, "FULL", TINY_FULL)
        RECIPE.run(run, Context(scale="full", seed=0, device=torch.device("cpu"), progress=False))
    run.finish()
    return run


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason=f"Fashion-MNIST not installed in {FASHION_MNIST_DIR}")
def test_full_scale_code_path_on_tiny_sizes(tmp_path):
    """The full recipe (Fashion-MNIST images, dense spectra, GMM sweep) end to end, then resumed."""
    run = _run_full_tiny(tmp_path)
    claims = {c["name"]: c for c in run.results["claims"]}
    assert {n: c["kind"] for n, c in claims.items()} == FULL_EXPECTED_KINDS
    for name in ("outliers_after_training", "gap_tracks_classes_images", "bulk_grows_with_width"):
        assert claims[name]["verdict"] in (PASS, "fail") and claims[name]["paper_value"], claims[name]
    # 7×7 pooled images → 49 inputs; the main net 49-8-8-10, the C = 3 net 49-8-8-3.
    final = run.arrays("spectrum_final")["eigenvalues"]
    assert final.shape == (49 * 8 + 8 + 8 * 8 + 8 + 8 * 10 + 10,) and bool((final[:-1] >= final[1:]).all())
    assert run.arrays("exact_img_ce_C3_w8")["eigenvalues"].shape == (49 * 8 + 8 + 72 + 8 * 3 + 3,)
    rows = {r["C"]: r for r in run.results["metrics"]["class_sweep_images"]}
    assert rows[3]["num_train"] == 180 and rows[3]["num_curv"] == 30  # first 3 classes of a balanced 600
    assert rows[10]["num_train"] == 600 and rows[10]["num_curv"] == 100
    html = render(tmp_path).read_text()
    assert html.count("data:image/png;base64,") == len(FULL_FIGURES)
    assert {f["name"] for f in run.results["figures"]} == set(FULL_FIGURES)
    before = {k: v["seconds"] for k, v in run.results["steps"].items()}
    again = _run_full_tiny(tmp_path)
    assert {k: v["seconds"] for k, v in again.results["steps"].items()} == before
