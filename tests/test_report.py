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
    run.claim(Claim("gap", "the gap is after C-1", 9, "== 9", True, "Sagun 2016"))
    run.claim(Claim("barrier", "no barrier", 0.3, "<= 0", False))
    run.claim(Claim("trainability", "reported only", 0.5, "n/a", None))
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
    assert [c["name"] for c in again.results["claims"]] == ["gap", "barrier", "trainability"]


def test_a_different_config_is_refused(tmp_path):
    make_run(tmp_path / "r")
    with pytest.raises(ValueError, match=r"different config.*\['seed'\]"):
        RunDir(tmp_path / "r", {"experiment": "unit", "scale": "quick", "seed": 1})


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
    assert "1 passed, 1 failed, 1 reported only" in text
    assert 'class="fail"' in text and "Sagun 2016" in text
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
