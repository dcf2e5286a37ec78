"""What every experiment's quick-scale test checks: claims, figures and report, resumption.

Each ``tests/test_exp_*.py`` builds its fixture with :func:`quick_run_fixture` and calls these
checks with its own lists of claims and figures; its own test of the measurements stays there.
"""

import json

import pytest
import torch

from curvscope.experiments.registry import Context, Recipe
from curvscope.experiments.run import KINDS, RunDir, default_fingerprint
from curvscope.report import render

PASS, FAIL, INCONCLUSIVE, REPORTED = "pass", "fail", "inconclusive", "reported"


def run_quick(recipe: Recipe, path) -> RunDir:
    """Run (or resume) ``recipe`` at the quick scale, seed 0, into ``path`` (fingerprinted as ``reproduce`` does)."""
    config = {"experiment": recipe.name, "scale": "quick", "seed": 0, "device": "cpu"}
    dtype = str(torch.get_default_dtype())
    fingerprint = default_fingerprint(config, params=recipe.params("quick"), default_dtype=dtype)
    run = RunDir(path, config, fingerprint=fingerprint)
    recipe.run(run, Context(scale="quick", seed=0, device=torch.device("cpu"), progress=False))
    run.finish()
    return run


def quick_run_fixture(recipe: Recipe):
    """A module-scoped fixture: ``(run directory, results, report path)`` of one quick run."""

    @pytest.fixture(scope="module")
    def quick_run(tmp_path_factory):
        path = tmp_path_factory.mktemp(recipe.name)
        run = run_quick(recipe, path)
        return path, run.results, render(path)

    return quick_run


def check_claims(results: dict, expected: dict[str, tuple[str, str]]) -> None:
    """Exactly the listed claims exist, each with the listed ``(kind, verdict)``.

    ``expected`` holds what the quick run on seed 0 gives (the test's seed); every claim is asserted,
    failing ones included, so a change of verdict in either direction is noticed. Verdicts on
    seeds 0–2 are tabulated in ``docs/claims-seeds.md``.
    """
    claims = {c["name"]: c for c in results["claims"]}
    assert set(claims) == set(expected), set(claims) ^ set(expected)
    wrong = {
        n: {"got": (claims[n]["kind"], claims[n]["verdict"]), "measured": claims[n]["measured"],
            "criterion": claims[n]["criterion"], "inputs": claims[n].get("inputs")}
        for n, want in expected.items() if (claims[n]["kind"], claims[n]["verdict"]) != want
    }  # fmt: skip
    assert not wrong, wrong
    for c in claims.values():
        assert c["measured"] not in ("", None) and c["criterion"] and c["source"], c
        assert c["kind"] in KINDS and (c["verdict"] == REPORTED) == (c["passed"] is None), c
        assert "SCIENCE" not in json.dumps(c) and "DESIGN.md" not in json.dumps(c), c  # no outside documents


def check_figures_and_report(quick_run, figures, mentions=()) -> None:
    """Every figure exists as PNG and SVG, is placed and inlined in report.html, which names ``mentions``."""
    path, results, report = quick_run
    assert {f["name"] for f in results["figures"]} == set(figures)
    for name in figures:
        for ext in ("png", "svg"):
            assert (path / "figures" / f"{name}.{ext}").stat().st_size > 1000, (name, ext)
    html = report.read_text()
    for name in figures:
        assert f'id="fig-{name}"' in html
    assert html.count("data:image/png;base64,") == len(figures)
    for text in mentions:
        assert text in html, text


def check_resume(recipe: Recipe, quick_run) -> None:
    """Running again in the same directory recomputes no step and gives the same claims."""
    path, results, _ = quick_run
    before = {k: v["seconds"] for k, v in results["steps"].items()}
    again = run_quick(recipe, path)
    assert {k: v["seconds"] for k, v in again.results["steps"].items()} == before
    assert json.loads((path / "results.json").read_text())["claims"] == results["claims"]
