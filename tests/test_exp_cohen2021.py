"""cohen2021: the claim rules on synthetic trajectories, and a miniature run end to end (artefacts, resume)."""

from __future__ import annotations

import json

import pytest
import torch

from curvscope.experiments import cohen2021
from curvscope.experiments.registry import get
from curvscope.experiments.run import RunDir
from exp_harness import check_resume, run_quick


def _record(lam, loss, lr=0.5, every=10, certified=None):
    lam = torch.tensor(lam, dtype=torch.float64)
    return {
        "lambda_max": lam,
        "steps": torch.arange(len(lam), dtype=torch.float64) * every,
        "loss": torch.tensor(loss, dtype=torch.float64),
        "certified": len(lam) if certified is None else certified,
        "measurements": len(lam),
    }


def _verdicts(tmp_path, r, lr=0.5):
    run = RunDir(tmp_path)
    cohen2021._claims(run, "mse", lr, r)
    return {c["name"]: c["verdict"] for c in run.results["claims"]}


LOSS = [1.0 - 0.01 * t + (0.02 if t % 7 == 0 else 0.0) for t in range(60)]  # decreasing, with bumps


@pytest.mark.parametrize(
    ("lam", "loss", "certified", "expected"),
    [
        ([1.0, 2.0, 3.0, 3.9, 4.1, 4.0, 4.2, 3.95], LOSS, None, ("pass", "pass", "pass")),  # 2/η = 4: the edge
        ([1.0, 2.0, 3.0, 3.9, 5.5, 6.0, 7.0, 8.0], LOSS, None, ("pass", "fail", "pass")),  # blows past 2/η
        ([1.0, 1.2, 1.3, 1.4, 1.5, 1.5, 1.6, 1.6], LOSS, None, ("fail", "fail", "fail")),  # never reaches it
        ([4.5, 4.0, 4.1, 3.9, 4.0, 4.1, 4.0, 4.0], LOSS, None, ("fail", "pass", "pass")),  # starts above: no sharpening
        ([1.0, 2.0, 3.0, 3.9, 4.1, 4.0, 4.2, 3.95], [1.0 - 0.01 * t for t in range(60)], None,
         ("pass", "pass", "fail")),  # monotone loss
        ([1.0, 2.0, 3.0, 3.9, 4.1, 4.0, 4.2, 3.95], LOSS, 7, ("inconclusive",) * 3),  # one uncertified solve
    ],
)  # fmt: skip
def test_claim_rules(tmp_path, lam, loss, certified, expected):
    v = _verdicts(tmp_path, _record(lam, loss, certified=certified))
    assert (v["mse_sharpening"], v["mse_edge"], v["mse_loss"]) == expected


def test_late_drop_is_asserted_only_when_the_loss_approached_zero(tmp_path):
    lam = [1.0, 2.0, 3.0, 3.9, 4.1, 4.0, 2.0, 1.0]  # 2/η = 4: the edge, then a drop to 0.25·2/η
    verdicts = []
    for i, final_loss in enumerate((0.01, 0.3)):
        loss = [1.0 - 0.0099 * t + (0.001 if t % 7 == 0 else 0.0) for t in range(59)] + [final_loss]
        run = RunDir(tmp_path / str(i))
        cohen2021._claims(run, "ce", 0.5, _record(lam, loss))
        verdicts.append({c["name"]: c["verdict"] for c in run.results["claims"]}["ce_late_drop"])
    assert verdicts == ["pass", "reported"]


# Both losses on the built-in mixture, so the miniature needs no dataset on disk.
TINY = cohen2021.Settings(datasets={"mse": ("gmm", 100), "ce": ("gmm", 100)}, steps={"mse": 60, "ce": 40},
                          lrs={"mse": (0.7,), "ce": (2.0,)}, every=10)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("cohen2021")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cohen2021, "settings", lambda scale: TINY)
        run_quick(cohen2021.RECIPE, path)
        from curvscope.report import render

        yield path, json.loads((path / "results.json").read_text()), render(path), mp


def test_miniature_run_has_every_claim_figure_and_is_resumable(tiny_run):
    path, results, report, _ = tiny_run
    assert get("cohen2021") is cohen2021.RECIPE
    claims = {c["name"]: c for c in results["claims"]}
    names = {f"{k}_{c}" for k in ("mse_lr0.7", "ce_lr2") for c in ("sharpening", "edge", "loss", "certified")}
    assert set(claims) - {"ce_lr2_late_drop"} == names | {"warm_start_products"}
    assert {c["kind"] for c in claims.values()} == {"paper", "sanity", "regression"}
    assert all("Cohen" in c["source"] or c["kind"] != "paper" for c in claims.values())
    assert claims["mse_lr0.7_certified"]["verdict"] == "pass" and claims["ce_lr2_certified"]["verdict"] == "pass"
    assert claims["warm_start_products"]["verdict"] == "pass"
    lam = RunDir(path).arrays("mse_lr0.7")
    assert lam["steps"].tolist() == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0] and lam["loss"].numel() == 61
    html = report.read_text()
    for fig in ("mse_sharpness", "mse_loss", "ce_sharpness", "ce_loss"):
        assert f'id="fig-{fig}"' in html
    check_resume(cohen2021.RECIPE, tiny_run[:3])
