"""The command line end to end: analyze on a user model (alone and under torchrun), report, list, errors."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent


def cli(*args, cwd, env_extra=None, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "curvscope", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    sys.path.insert(0, str(HERE))
    from cli_models import small_mlp

    path = tmp_path_factory.mktemp("ckpt") / "w.safetensors"
    save_file({k: v.contiguous() for k, v in small_mlp().state_dict().items()}, path)
    return path


ANALYZE = [
    "analyze",
    "--model",
    "cli_models:small_mlp",
    "--data",
    "digits",
    "--num-samples",
    "200",
    "--batch-size",
    "64",
    "--top-k",
    "4",
    "--trace",
    "--dtype",
    "float64",
    "--quiet",
]


def test_analyze_on_a_user_model(tmp_path, checkpoint):
    out = tmp_path / "run"
    res = cli(*ANALYZE, "--checkpoint", str(checkpoint), "--density", "--out", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "report:" in res.stdout and (out / "report.html").exists()
    results = json.loads((out / "results.json").read_text())
    claims = {c["name"]: c for c in results["claims"]}
    assert claims["eigenpairs_certified"]["passed"] is True
    assert results["metrics"]["num_parameters"] == 64 * 12 + 12 + 12 * 10 + 10
    assert (out / "figures" / "density.png").exists()


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)
def test_analyze_under_torchrun_equals_one_process(tmp_path, checkpoint):
    one, two = tmp_path / "one", tmp_path / "two"
    res = cli(*ANALYZE, "--checkpoint", str(checkpoint), "--out", str(one), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [
            torchrun,
            "--nproc-per-node=2",
            "--standalone",
            "-m",
            "curvscope",
            *ANALYZE,
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(two),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    a = json.loads((one / "results.json").read_text())
    b = json.loads((two / "results.json").read_text())
    assert b["metrics"]["num_samples"] == a["metrics"]["num_samples"] == 200
    from curvscope.io import load_tensors

    ta, tb = load_tensors(one / "arrays" / "top.safetensors")[0], load_tensors(two / "arrays" / "top.safetensors")[0]
    torch.testing.assert_close(tb["eigenvalues"], ta["eigenvalues"], rtol=1e-9, atol=1e-12)
    assert abs(a["metrics"]["trace_H"] - b["metrics"]["trace_H"]) <= 1e-9 * abs(a["metrics"]["trace_H"])


def test_report_and_list_and_errors(tmp_path, checkpoint):
    out = tmp_path / "run"
    assert cli(*ANALYZE, "--checkpoint", str(checkpoint), "--out", str(out), cwd=tmp_path).returncode == 0
    (out / "report.html").unlink()
    res = cli("report", str(out), cwd=tmp_path)
    assert res.returncode == 0 and (out / "report.html").exists()
    res = cli("report", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 2 and "not a curvscope run directory" in res.stderr
    res = cli("analyze", "--model", "cli_models:small_mlp", "--data", "nonsense", cwd=tmp_path)
    assert res.returncode == 2 and "valid names: digits" in res.stderr
    res = cli("reproduce", "no-such-paper", cwd=tmp_path)
    assert res.returncode == 2 and "valid names" in res.stderr
    res = cli("list", cwd=tmp_path)
    assert res.returncode == 0
    for name in ("demo", "sagun2016", "sagun2017", "papyan2019", "fernandez2025", "fortganguli2019", "digits", "mlp"):
        assert name in res.stdout, name
    for verb in ("demo", "reproduce", "analyze", "report", "list"):
        res = cli(verb, "--help", cwd=tmp_path)
        assert res.returncode == 0 and "example" in res.stdout, verb


def test_reproduce_all_ends_with_a_summary(tmp_path, monkeypatch, capsys):
    """`reproduce all` prints one line per experiment, names every failed claim, writes summary.json;
    --strict turns a failed claim into exit status 1. Two tiny recipes stand in for the papers."""
    import curvscope.experiments as experiments
    from curvscope.cli.main import main
    from curvscope.experiments.registry import EXPERIMENTS, Recipe, register
    from curvscope.experiments.run import Claim

    def recipe(name, ok):
        def run(rd, ctx):
            rd.claim(Claim("holds", "a true statement", 1.0, "= 1", True))
            rd.claim(Claim("shaky", "a statement that may fail", 0.5, "≥ 1", ok))
            rd.claim(Claim("info", "a reported quantity", 3.0, "reported, not asserted", None))

        return register(Recipe(name, f"test {name}", "a stand-in", run), overwrite=True)

    try:
        recipe("zz_good", True), recipe("zz_bad", False)
        monkeypatch.setattr(experiments, "names", lambda: ["zz_bad", "zz_good"])
        assert main(["reproduce", "all", "--out", str(tmp_path), "--quiet"]) == 0
        out = capsys.readouterr().out
        assert "FAILED: shaky" in out and "total: 3 passed, 1 failed, 2 reported only" in out
        summary = json.loads((tmp_path / "summary.json").read_text())
        rows = {r["experiment"]: r for r in summary["experiments"]}
        assert rows["zz_bad"]["failed"] == ["shaky"] and rows["zz_good"]["failed"] == []
        assert Path(rows["zz_good"]["report"]).is_file() and summary["totals"]["passed"] == 3
        assert main(["reproduce", "all", "--out", str(tmp_path / "strict"), "--quiet", "--strict"]) == 1
    finally:
        EXPERIMENTS.pop("zz_good", None), EXPERIMENTS.pop("zz_bad", None)
