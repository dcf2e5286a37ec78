"""Issue 11 acceptance: low-precision models give float64-accurate, certified curvature.

1. A bfloat16 copy of a small MLP and of a tiny transformer: the operator computes in float32
   (one warning per process) and its top-5 eigenvalues are within 1e-2 (relative) of the dense
   float64 truth of the same bf16 weights.
2. A float32 ~53k-parameter CNN on 2000 Fashion-MNIST samples, at initialisation and after one
   epoch: ``curvscope analyze --top-k 10 --density --trace`` with its defaults certifies all 10
   pairs, its eigenvalues agree with a float64 evaluation of the same weights within the
   reported tolerance, and the negative mass it reports (outside the resolution band) agrees with
   the float64 value to 0.02. Slow (~1800 products per state: analyze's SLQ 10 x 80 in float32 and
   the same in float64).
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import curvscope.operators.problem as problem_mod
from curvscope import Hessian, eigsh
from curvscope.operators.dense import dense_hessian
from tiny_models import make_case

F64, BF16 = torch.float64, torch.bfloat16
CE = nn.CrossEntropyLoss()
WARNING = "run in float32 on upcast copies"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a loaded 2-core machine a second thread only spins (10x slower here)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ------------------------------------------------------------------ bf16 models
def small_mlp_case():
    """64-16-10 tanh MLP on 200 digits (1210 parameters), uneven batches."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = torch.tensor(d.data[:200], dtype=F64) / 16, torch.tensor(d.target[:200])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)).to(F64)
    return model, [(x[a:b], y[a:b]) for a, b in ((0, 90), (90, 180), (180, 200))]


def tiny_transformer_case():
    case = make_case("transformer")
    return case.model, case.batches


def to_dtype(batches, dtype):
    return [(x.to(dtype) if x.is_floating_point() else x, y) for x, y in batches]


@pytest.mark.parametrize("make", [small_mlp_case, tiny_transformer_case], ids=["mlp", "transformer"])
def test_bf16_model_top5_matches_float64_truth_with_one_warning(make):
    model, batches = make()
    model_bf, data_bf = copy.deepcopy(model).to(BF16), to_dtype(batches, BF16)
    problem_mod._WARNED_LOW_PRECISION.discard(BF16)  # "once" is per process: start from a clean slate
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        H = Hessian(model_bf, CE, data_bf)
        res = eigsh(H, k=5, which="LA")
        again = Hessian(model_bf, CE, data_bf)  # a second operator on the same model: no second warning
        again @ torch.ones(again.shape[0], dtype=again.dtype)
    shown = [w for w in caught if WARNING in str(w.message)]
    assert len(shown) == 1, [str(w.message) for w in caught]
    assert H.dtype == torch.float32 and next(model_bf.parameters()).dtype == BF16  # the model is untouched

    truth_model = copy.deepcopy(model_bf).to(F64)  # the same bf16 weights, exactly, in float64
    exact = torch.linalg.eigvalsh(dense_hessian(truth_model, CE, to_dtype(data_bf, F64))).flip(0)[:5]
    got = res.eigenvalues.double()
    rel = ((got - exact).abs() / exact.abs()).max().item()
    assert str(res.status) == "converged", res.message
    assert rel <= 1e-2, (rel, got.tolist(), exact.tolist())


# ------------------------------------------------------------ Fashion-MNIST CNN
FASHION = Path("/usr/share/datasets/fashion-mnist")
NUM_SAMPLES, BATCH = 2000, 256


def fashion_cnn() -> nn.Module:
    """The user's module: 4x4 average pool, 3x3 conv (8 channels), 392-132-10 head; D = 53,286."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.AvgPool2d(4),
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 7 * 7, 132),
        nn.ReLU(),
        nn.Linear(132, 10),
    )


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """The 2000 samples analyze uses and float32 checkpoints at init and after one epoch of SGD."""
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST not installed at {FASHION} (apt-get install dataset-fashion-mnist)")
    from safetensors.torch import save_file

    from curvscope.experiments.analyze import load_data

    data = load_data(str(FASHION), NUM_SAMPLES, seed=0)  # what analyze draws with --seed 0
    folder = tmp_path_factory.mktemp("fashion")
    model = fashion_cnn()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "init.safetensors")
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    perm = torch.randperm(len(data.x), generator=g)
    for i in range(0, len(perm), 64):  # one epoch
        idx = perm[i : i + 64]
        opt.zero_grad()
        CE(model(data.x[idx].float()), data.y[idx]).backward()
        opt.step()
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, folder / "epoch1.safetensors")
    return data, folder


@pytest.fixture(scope="module", params=["init", "epoch1"])
def fashion_run(request, fashion, tmp_path_factory):
    """``curvscope analyze --top-k 10 --density --trace`` (defaults, float32) and the float64 evaluation."""
    from curvscope.cli.main import main
    from curvscope.data import batches
    from curvscope.experiments.checkpoint import build_model
    from curvscope.io import load_tensors
    from curvscope.linalg import spectral_density

    data, folder = fashion
    ckpt, out = folder / f"{request.param}.safetensors", tmp_path_factory.mktemp(request.param) / "run"
    argv = ["analyze", "--model", f"{__name__}:fashion_cnn", "--checkpoint", str(ckpt), "--data", str(FASHION)]
    argv += ["--num-samples", str(NUM_SAMPLES), "--top-k", "10", "--density", "--trace", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    arrays = load_tensors(out / "arrays" / "top.safetensors")[0]
    # the same weights and samples, in float64; SLQ with analyze's defaults and seed (the same probes)
    model64 = build_model(f"{__name__}:fashion_cnn", str(ckpt)).to(F64)
    H64 = Hessian(model64, CE, batches(data.to(dtype=F64), BATCH))
    return {
        "top": results["steps"]["top"]["values"],
        "density": results["steps"]["density_H"]["values"],
        "eigenvalues": arrays["eigenvalues"],
        "converged": arrays["converged"].bool(),
        "ref": eigsh(H64, k=10, which="LA", seed=0),
        "density64": spectral_density(H64, "slq", 10, 80, seed=0, progress=False),
    }


@pytest.mark.slow
def test_fashion_cnn_analyze_defaults_certify_and_match_float64(fashion_run):
    top, ref, d64 = fashion_run["top"], fashion_run["ref"], fashion_run["density64"]
    assert top["status"] == "converged" and bool(fashion_run["converged"].all()), top
    assert str(ref.status) == "converged", ref.message
    err = (fashion_run["eigenvalues"] - ref.eigenvalues.double()).abs().max().item()
    assert err <= top["tol"] * top["anorm"], (err, top["tol"] * top["anorm"])
    # what float32 changes in the density (same probes): even the unresolved mass below 0 agrees with float64
    assert abs(fashion_run["density"]["negative_mass_unresolved"] - d64.mass_below(0.0)) <= 0.02


@pytest.mark.slow
def test_fashion_cnn_analyze_reports_negative_mass_outside_the_resolution_band(fashion_run):
    dens, neg64 = fashion_run["density"], fashion_run["density64"].negative_mass()
    assert "resolution" in dens or "negative_mass_band" in dens, sorted(dens)  # the band it used is recorded
    assert abs(dens["negative_mass"] - neg64.value) <= 0.02, (dens["negative_mass"], neg64.value, neg64.band)
