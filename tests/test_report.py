"""Run directories and reports: resumable steps, atomic files, figures, HTML rendered in Chromium."""

import json
import re
import shutil
import subprocess

import pytest
import torch

from curvscope.experiments import Claim, Figure, RunDir
from curvscope.experiments.run import array_ref
from curvscope.report import render


def make_run(path):
    run = RunDir(path, {"experiment": "unit", "scale": "quick", "seed": 0})
    calls = []

    def compute():
        calls.append(1)
        grid = torch.linspace(-1, 1, 50, dtype=torch.float64)
        return {"grid": grid, "pdf": torch.exp(-(grid**2)), "lo": 0.5 * torch.exp(-(grid**2)), "note": "x"}

    out = run.step("density", compute)
    run.claim(Claim("gap", "the gap is after C-1", 9, "== 9", True, "Sagun 2016", kind="paper",
                    paper_value="C − 1 = 9 outliers (MNIST, Fig. 4)"))  # fmt: skip
    run.claim(Claim("barrier", "no barrier", 0.3, "<= 0", False, kind="paper"))
    run.claim(Claim("trainability", "reported only", 0.5, "n/a", None, kind="paper"))
    run.claim(Claim("level", "a measured level", 0.8, ">= 0.7", True, kind="regression"))
    run.claim(Claim("psd", "G is PSD", -1e-12, ">= -1e-10", True, kind="sanity"))
    run.claim(Claim("top", "needs eigsh", 2.0, "> 1", True, kind="paper", inputs={"eigsh H": "max_matvecs"}))
    run.figure(
        Figure(
            "density",
            "a density",
            "λ",
            "φ",
            series=[
                {
                    "label": "H",
                    "x": array_ref("density", "grid"),
                    "y": array_ref("density", "pdf"),
                    "band": [array_ref("density", "lo"), array_ref("density", "pdf")],
                }
            ],
            logy=True,
            vlines=[{"x": 0.5, "label": "λmax"}],
        )
    )
    run.figure(Figure("cos", "cosines", kind="heatmap", z=[[1, 0.2], [0.2, 1]], xticklabels=["a", "b"]))
    run.metric("lambda_max", 1.25)
    run.finish()
    return run, out, calls


def test_steps_resume_without_recomputing(tmp_path):
    _, out, calls = make_run(tmp_path / "r")
    assert calls == [1] and out["note"] == "x"
    again = RunDir(tmp_path / "r", {"experiment": "unit", "scale": "quick", "seed": 0})
    more = []
    got = again.step("density", lambda: more.append(1) or {})
    assert more == [] and torch.equal(got["pdf"], out["pdf"]) and got["note"] == "x"
    assert [c["name"] for c in again.results["claims"]] == ["gap", "barrier", "trainability", "level", "psd", "top"]


def test_a_different_config_is_refused(tmp_path):
    make_run(tmp_path / "r")
    with pytest.raises(ValueError, match=r"different config.*\['seed'\]"):
        RunDir(tmp_path / "r", {"experiment": "unit", "scale": "quick", "seed": 1})


def test_claim_kinds_and_verdicts():
    assert (
        Claim("a", "s", 1, "c", True, kind="paper").verdict == "pass"
        and Claim("a", "s", 1, "c", False, kind="paper").verdict == "fail"
    )
    assert Claim("a", "s", 1, "c", None, kind="paper", inputs={"eigsh": "unverified"}).verdict == "reported"
    for status in ("unverified", "max_matvecs", "interrupted", "rank_deficient", "no-such-word"):
        assert Claim("a", "s", 1, "c", True, kind="paper", inputs={"x": status}).verdict == "inconclusive", status
        assert Claim("a", "s", 1, "c", False, kind="paper", inputs={"x": status}).verdict == "inconclusive", status
    for status in ("converged", "completed", "exact", "ok"):  # "ok": the sketch's word before the common one
        assert Claim("a", "s", 1, "c", True, kind="paper", inputs={"x": status}).verdict == "pass", status
    d = Claim("a", "s", 1, "c", False, kind="regression").as_dict()
    assert d["kind"] == "regression" and d["verdict"] == "fail"
    with pytest.raises(ValueError, match="kind must be one of"):
        Claim("a", "s", 1, "c", True, kind="guess")
    with pytest.raises(TypeError, match="kind"):  # no default: every claim states its kind
        Claim("a", "s", 1, "c", True)


def test_old_results_stay_readable(tmp_path):
    """results.json written before kinds and verdicts: read as paper claims, verdicts from 'passed'."""
    from curvscope.experiments.run import claim_kind, claim_verdict

    old = [{"name": n, "statement": "", "measured": 1, "criterion": "c", "passed": p, "source": ""}
           for n, p in (("a", True), ("b", False), ("c", None))]  # fmt: skip
    assert [(claim_kind(c), claim_verdict(c)) for c in old] == [("paper", "pass"), ("paper", "fail"),
                                                                ("paper", "reported")]  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps({"claims": old, "figures": [], "metrics": {}}))
    assert "paper: 1 pass, 1 fail, 1 reported" in render(tmp_path).read_text()


def test_a_changed_fingerprint_is_refused_naming_the_change(tmp_path):
    from curvscope.operators.fingerprint import StaleStateError

    cfg = {"experiment": "unit", "scale": "quick", "seed": 0}
    RunDir(tmp_path / "r", cfg, fingerprint={"config": cfg, "params": {"epochs": 10}})
    RunDir(tmp_path / "r", cfg, fingerprint={"config": cfg, "params": {"epochs": 10}})  # same: resumes
    with pytest.raises(StaleStateError, match=r"params\.epochs: 10 -> 20"):
        RunDir(tmp_path / "r", cfg, fingerprint={"config": cfg, "params": {"epochs": 20}})
    # a directory with results but no fingerprint (an older curvscope) cannot be checked: refused
    run, _, _ = make_run(tmp_path / "old")
    (run.path / "fingerprint.json").unlink()
    with pytest.raises(StaleStateError, match="carries no fingerprint"):
        RunDir(run.path, {"experiment": "unit", "scale": "quick", "seed": 0})


def test_unwritable_directory_is_refused_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match="cannot write to the run directory"):
        RunDir(blocker / "run", {})


def test_render_writes_figures_and_a_self_contained_page(tmp_path):
    run, _, _ = make_run(tmp_path / "r")
    page = render(run.path)
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 2
    assert "paper: 1 pass, 1 fail, 1 inconclusive, 1 reported; regression: 1 pass; sanity: 1 pass" in text
    assert 'class="fail"' in text and "Sagun 2016" in text
    # sanity checks in their own section, after the paper claims and the regression guards
    assert text.index('id="claims-paper"') < text.index('id="claims-regression"') < text.index('id="claims-sanity"')
    assert "INCONCLUSIVE" in text and "untrusted inputs: eigsh H: max_matvecs" in text
    for name in ("density", "cos"):
        for ext in ("png", "svg"):
            assert (run.path / "figures" / f"{name}.{ext}").stat().st_size > 1000
    assert not list(run.path.rglob("*.tmp"))
    assert json.loads((run.path / "results.json").read_text())["metrics"]["lambda_max"] == 1.25


def test_render_refuses_a_non_run_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a curvscope run directory"):
        render(tmp_path)


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium(tmp_path):
    run, _, _ = make_run(tmp_path / "r")
    page = render(run.path)
    dom = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    total = re.search(r'data-images-total="(\d+)"', dom)
    assert loaded and total, dom[-500:]
    assert int(total.group(1)) == 2 and loaded.group(1) == total.group(1)


def test_reproduce_refuses_a_run_dir_made_with_other_settings(tmp_path):
    """run_experiment fingerprints the recipe's settings: changing one refuses to resume, naming it."""
    from curvscope.experiments.instruments import statuses
    from curvscope.experiments.registry import EXPERIMENTS, Recipe, register, run_experiment
    from curvscope.operators.fingerprint import StaleStateError

    settings = {"epochs": 4}

    def run(rd, ctx):
        rd.claim(Claim("x", "a statement", 1, "= 1", True, kind="paper", inputs=statuses(step={"status": "converged"})))

    try:
        register(Recipe("zz_fp", "t", "s", run, settings=lambda scale: dict(settings)), overwrite=True)
        done = run_experiment("zz_fp", out=tmp_path / "r", progress=False)
        assert done.results["claims"][0]["verdict"] == "pass"
        assert json.loads((tmp_path / "r" / "fingerprint.json").read_text())["params"] == {"epochs": 4}
        run_experiment("zz_fp", out=tmp_path / "r", progress=False)  # same settings: resumes
        settings["epochs"] = 8
        with pytest.raises(StaleStateError, match=r"params\.epochs: 4 -> 8"):
            run_experiment("zz_fp", out=tmp_path / "r", progress=False)
    finally:
        EXPERIMENTS.pop("zz_fp", None)
    assert statuses(done={"status": "converged"}, legacy={}) == {"done": "converged", "legacy": "unverified"}


def test_paper_vs_ours_table_lists_paper_claims_with_a_paper_value(tmp_path):
    make_run(tmp_path / "r")
    page = render(tmp_path / "r").read_text()
    table = page.split('id="paper-vs-ours"')[1].split("</table>")[0]
    assert "C − 1 = 9 outliers (MNIST, Fig. 4)" in table and ">9<" in table and "PASS" in table
    assert "barrier" not in table and "level" not in table  # no paper value / not a paper claim


def test_reproduce_data_is_fingerprinted_and_time_adds_up_over_resumptions(tmp_path):
    """--data reaches the recipe, is part of the fingerprint, and is refused at the quick scale;
    a killed run's wall and CPU seconds are kept and the resumed segment adds to them."""
    from curvscope.experiments.registry import EXPERIMENTS, Recipe, register, run_experiment

    seen, kill = [], [True]

    def run(rd, ctx):
        seen.append(ctx.image_data())
        rd.step("first", lambda: {"x": torch.ones(1)})
        if kill[0]:
            raise KeyboardInterrupt  # the run is killed after its first step

    try:
        register(Recipe("zz_data", "t", "s", run), overwrite=True)
        with pytest.raises(ValueError, match="--scale full"):
            run_experiment("zz_data", "quick", out=tmp_path / "q", data="mnist-idx:/x", progress=False)
        with pytest.raises(KeyboardInterrupt):
            run_experiment("zz_data", "full", out=tmp_path / "r", data="mnist-idx:/x", progress=False)
        killed = json.loads((tmp_path / "r" / "results.json").read_text())["timing"]
        assert killed["segments"] == 1 and killed["wall_seconds"] > 0 and killed["cpu_seconds"] >= 0
        with pytest.raises(ValueError, match=r"different config.*'data'"):
            run_experiment("zz_data", "full", out=tmp_path / "r", progress=False)  # other data: refused
        kill[0] = False
        done = run_experiment("zz_data", "full", out=tmp_path / "r", data="mnist-idx:/x", progress=False)
        assert seen == ["mnist-idx:/x", "mnist-idx:/x"]
        timing = done.results["timing"]
        assert timing["segments"] == 2 and timing["wall_seconds"] >= killed["wall_seconds"]
        assert done.results["wall_seconds"] == timing["wall_seconds"]
        run_experiment("zz_data", "full", out=tmp_path / "d", progress=False)
        assert seen[-1] == "fashion-mnist"
    finally:
        EXPERIMENTS.pop("zz_data", None)


def test_paper_scale_is_what_full_runs_on_cuda_and_differs_from_full_for_the_five_papers(tmp_path, monkeypatch):
    """``--scale full --device cuda`` runs the papers' own sizes (``paper``); on a CPU ``paper`` warns (hours)."""
    from curvscope.experiments import registry
    from curvscope.experiments.registry import EXPERIMENTS, Recipe, effective_scale, get, register, run_experiment

    assert effective_scale("full", torch.device("cuda")) == "paper"
    assert effective_scale("quick", torch.device("cuda")) == "quick"
    for name in ("sagun2016", "sagun2017", "papyan2019", "fernandez2025", "fortganguli2019"):
        full, paper = get(name).params("full"), get(name).params("paper")
        larger = {k: (full[k], paper[k]) for k in full if full[k] != paper[k]}
        assert larger, name  # some size grows; the rest is the full scale's
    seen = []
    try:
        register(Recipe("zz_scale", "t", "s", lambda rd, ctx: seen.append(ctx.scale)), overwrite=True)
        with pytest.warns(UserWarning, match="GPU-sized"):
            run_experiment("zz_scale", "paper", out=tmp_path / "p", progress=False)
        monkeypatch.setattr(registry.torch.cuda, "is_available", lambda: True)  # the scale choice, not a GPU run
        monkeypatch.setattr(registry, "RunDir", lambda out, config, fingerprint: _Recorder(config))
        run_experiment("zz_scale", "full", device="cuda", out=tmp_path / "c", progress=False)
        assert seen == ["paper", "paper"]
    finally:
        EXPERIMENTS.pop("zz_scale", None)


class _Recorder:
    """A stand-in run directory (no files): records the config a run was started with."""

    def __init__(self, config):
        self.config, self.results = config, {}

    def flush(self):
        pass

    def finish(self, wall_seconds):
        assert self.config["scale"] == "paper" and self.config["device"] == "cuda"
