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
    assert results["metrics"]["checkpoint_sha256"] and "initialisation" not in (out / "report.html").read_text()


def test_analyze_refuses_to_resume_with_a_changed_checkpoint(tmp_path, checkpoint):
    """Same path, same arguments, other weights: the run directory's fingerprint names the change."""
    ckpt, out = tmp_path / "w.safetensors", tmp_path / "run"
    ckpt.write_bytes(checkpoint.read_bytes())
    args = (
        *ANALYZE[:-6],
        "--top-k",
        "2",
        "--dtype",
        "float64",
        "--quiet",
        "--checkpoint",
        str(ckpt),
        "--out",
        str(out),
    )
    assert cli(*args, cwd=tmp_path).returncode == 0
    from cli_models import small_mlp

    state = {k: v.contiguous() + 0.01 for k, v in small_mlp().state_dict().items()}
    save_file(state, ckpt)
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "checkpoint_sha256" in res.stderr and "what changed" in res.stderr, res.stderr


def test_analyze_without_checkpoint_says_it_measures_the_initialisation(tmp_path):
    out = tmp_path / "run"
    res = cli(*ANALYZE[:-6], "--top-k", "2", "--dtype", "float64", "--quiet", "--out", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "warning" in res.stderr and "INITIALISATION" in res.stderr
    results = json.loads((out / "results.json").read_text())
    assert any("INITIALISATION" in n for n in results["notes"])
    assert results["metrics"]["checkpoint"] == "none: initialisation"
    assert "INITIALISATION" in (out / "report.html").read_text()


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
    """`reproduce all` prints claims per kind and verdict, names failed and inconclusive paper claims and
    writes summary.json; it exits 1 when a paper claim fails or is inconclusive, 0 with --keep-going,
    and regression or sanity failures alone do not change the exit status. Tiny recipes stand in."""
    import curvscope.experiments as experiments
    from curvscope.cli.main import main
    from curvscope.experiments.registry import EXPERIMENTS, Recipe, register
    from curvscope.experiments.run import Claim

    def recipe(name, ok, status="converged"):
        def run(rd, ctx):
            rd.claim(Claim("holds", "a true statement", 1.0, "= 1", True, kind="paper"))
            rd.claim(Claim("shaky", "a statement that may fail", 0.5, "≥ 1", ok, kind="paper"))
            rd.claim(
                Claim("unsure", "rests on an eigensolve", 2.0, "> 1", True, kind="paper", inputs={"eigsh": status})
            )
            rd.claim(Claim("info", "a reported quantity", 3.0, "reported, not asserted", None, kind="paper"))
            rd.claim(Claim("guard", "a measured level", 0.5, "≥ 1", False, kind="regression"))
            rd.claim(Claim("identity", "H = G + H_res", 1e-15, "≤ 1e-10", True, kind="sanity"))

        return register(Recipe(name, f"test {name}", "a stand-in", run), overwrite=True)

    try:
        recipe("zz_good", True), recipe("zz_bad", False), recipe("zz_unsure", True, "max_matvecs")
        monkeypatch.setattr(experiments, "names", lambda: ["zz_bad", "zz_good", "zz_unsure"])
        assert main(["reproduce", "all", "--out", str(tmp_path / "a"), "--quiet"]) == 1
        out = capsys.readouterr().out
        assert "FAILED paper claim: shaky" in out and "INCONCLUSIVE paper claim: unsure" in out
        assert "paper: 7 pass, 1 fail, 1 inconclusive, 3 reported" in out
        assert "regression: 0 pass, 3 fail" in out and "sanity: 3 pass" in out
        summary = json.loads((tmp_path / "a" / "summary.json").read_text())
        rows = {r["experiment"]: r for r in summary["experiments"]}
        assert rows["zz_bad"]["paper_failed"] == ["shaky"] and rows["zz_good"]["paper_failed"] == []
        assert rows["zz_unsure"]["paper_inconclusive"] == ["unsure"]
        assert rows["zz_good"]["claims"]["regression"]["fail"] == ["guard"]
        assert Path(rows["zz_good"]["report"]).is_file() and summary["by_kind"]["paper"]["pass"] == 7
        assert main(["reproduce", "all", "--out", str(tmp_path / "b"), "--quiet", "--keep-going"]) == 0
        # one experiment: only regression guards fail -> status 0; the summary table is printed too
        assert main(["reproduce", "zz_good", "--out", str(tmp_path / "c"), "--quiet"]) == 0
        assert "regression: 0 pass, 1 fail" in capsys.readouterr().out
        assert main(["reproduce", "zz_unsure", "--out", str(tmp_path / "d"), "--quiet"]) == 1
    finally:
        for name in ("zz_good", "zz_bad", "zz_unsure"):
            EXPERIMENTS.pop(name, None)
