"""papyan2019 at the quick scale: artefacts, the robust claims, resumption without recomputation."""

from curvscope.experiments.papyan2019 import QUICK, RECIPE
from curvscope.experiments.run import RunDir
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
