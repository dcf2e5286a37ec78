"""Trainer (determinism, snapshots, resume), random-subspace training, interpolation."""

from __future__ import annotations

import math

import pytest
import scipy.linalg
import torch
from torch import nn

from curvscope.data import gaussian_mixture, load_digits
from curvscope.models import build_model
from curvscope.train import (
    RandomProjection,
    SubspaceModel,
    TrainConfig,
    evaluate,
    fwht,
    interpolate,
    list_snapshots,
    load_snapshot,
    lr_at,
    train,
    train_subspace,
)
from curvscope.train.evaluate import policy

F64 = torch.float64


def _gmm(n=300, C=3, d=6, spread=1.5, seed=0):
    return gaussian_mixture(C, d, n, spread, seed=seed, dtype=F64)


def _mlp(d=6, C=3, seed=0, widths=(12,)):
    return build_model("mlp", in_features=d, widths=widths, num_classes=C, seed=seed, dtype=F64)


def _assert_same_params(a: nn.Module, b: nn.Module) -> None:
    for (n, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), n


# ---------------------------------------------------------------- training works


def test_science_gmm_setup_reduces_the_loss():
    # the small-scale "GMM" setup: C = 10, d = 30, N = 2000, MLP 30-32-32-10, SGD lr 0.05, momentum 0.9,
    # batch 64. Measured after 3 epochs (seeds 0-3): loss 2.30-2.34 -> 0.002-0.03, accuracy >= 0.99.
    data = gaussian_mixture(10, 30, 2000, 1.0, seed=0)
    model = build_model("mlp", in_features=30, widths=(32, 32), num_classes=10, seed=0)
    h = train(model, data, TrainConfig(lr=0.05, momentum=0.9, batch_size=64, epochs=3, snapshot_steps=(0,)))
    assert h.num_steps == 96 and len(h.batch_loss) == 96
    assert h.snapshots[0].metrics["loss"] > 2.2
    assert h.final.metrics["loss"] < 0.1 and h.final.metrics["accuracy"] > 0.97


def test_full_batch_gd_step_is_exactly_theta_minus_lr_grad():
    data = _gmm(60)
    model = _mlp()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    loss = nn.functional.cross_entropy(model(data.x), data.y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    loss = float(loss.detach())
    h = train(model, data, TrainConfig(lr=0.3, momentum=0.0, batch_size=None, steps=1, snapshot_steps=(0,)))
    assert h.steps_per_epoch == 1
    for (n, p), g in zip(model.named_parameters(), grads):
        torch.testing.assert_close(p, start[n] - 0.3 * g, rtol=0, atol=1e-15)
    # The step-0 metrics are the full-batch loss and gradient norm at initialisation.
    assert h.snapshots[0].metrics["loss"] == pytest.approx(loss, rel=1e-12)
    gnorm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
    assert h.snapshots[0].metrics["grad_norm"] == pytest.approx(gnorm, rel=1e-10)


def test_mse_loss_and_adam_train_on_digits():
    data = load_digits(dtype=F64)
    model = build_model("mlp", in_features=64, widths=(16,), num_classes=10, seed=0, dtype=F64)
    h = train(model, data, TrainConfig(optimizer="adam", lr=0.01, batch_size=128, epochs=3, loss="mse"))
    m = evaluate(model, [(data.x, data.y)], "mse")
    assert m.loss == pytest.approx(h.final.metrics["loss"], rel=1e-12)
    assert m.loss < 0.25 and m.accuracy > 0.85  # measured 0.15 / 0.93; initial MSE loss ≈ 0.6


def test_training_leaves_global_rng_and_module_flags_alone():
    data, model = _gmm(), _mlp()
    model.eval()
    state = torch.get_rng_state()
    train(model, data, TrainConfig(batch_size=32, steps=5))
    assert torch.equal(torch.get_rng_state(), state)
    assert not model.training


# ---------------------------------------------------------------- schedules and config


def test_lr_schedules():
    c = TrainConfig(lr=1.0, steps=11, schedule="cosine", min_lr_ratio=0.1)
    assert lr_at(0, c, 11) == pytest.approx(1.0) and lr_at(10, c, 11) == pytest.approx(0.1)
    assert lr_at(5, c, 11) == pytest.approx(0.55)
    s = TrainConfig(lr=1.0, steps=10, schedule="step", milestones=(3, 6), gamma=0.5)
    assert [lr_at(k, s, 10) for k in (0, 2, 3, 5, 6, 9)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    w = TrainConfig(lr=1.0, steps=10, warmup_steps=4)
    assert [lr_at(k, w, 10) for k in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of steps= or epochs="),
        ({"steps": 3, "epochs": 1}, "exactly one"),
        ({"steps": 3, "optimizer": "lbfgs"}, "optimizer must be one of"),
        ({"steps": 3, "schedule": "step"}, "needs milestones"),
        ({"steps": 3, "batch_size": 0}, "batch_size must be"),
    ],
)
def test_bad_config_is_refused_early(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_divergence_names_the_fix():
    data, model = _gmm(), _mlp()
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        train(model, data, TrainConfig(lr=1e200, momentum=0.0, batch_size=None, steps=3))


# ---------------------------------------------------------------- determinism, snapshots, resume

CFG = TrainConfig(lr=0.05, momentum=0.9, batch_size=32, epochs=4, schedule="cosine", snapshot_every=15)


def test_same_seed_gives_identical_snapshots(tmp_path):
    runs = []
    for run in ("a", "b"):
        train(_mlp(), _gmm(), CFG, out_dir=tmp_path / run)
        runs.append(tmp_path / run)
    steps = list_snapshots(runs[0])
    assert steps == [0, 15, 30, 40] and list_snapshots(runs[1]) == steps
    for step in steps:
        sa, ma = load_snapshot(runs[0], step)
        sb, mb = load_snapshot(runs[1], step)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert ma["loss"] == mb["loss"] and ma["grad_norm"] == mb["grad_norm"]
    other = _mlp()
    train(other, _gmm(), TrainConfig(**{**CFG.to_dict(), "seed": 1}))
    assert not torch.equal(other.state_dict()["layers.0.weight"], load_snapshot(runs[0])[0]["layers.0.weight"])


class _Crash(RuntimeError):
    pass


@pytest.mark.parametrize(
    "config",
    [
        CFG,
        TrainConfig(optimizer="adam", lr=0.01, batch_size=50, steps=40, snapshot_steps=(10, 25), max_grad_norm=1.0),
    ],
    ids=["sgd-momentum-cosine", "adam-clipped"],
)
def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, config):
    data = _gmm()
    full = _mlp()
    h_full = train(full, data, config, out_dir=tmp_path / "full")

    def crash_at_second_snapshot(snap, _model):
        if snap.step == list_snapshots(tmp_path / "full")[1]:
            raise _Crash

    with pytest.raises(_Crash):
        train(_mlp(), data, config, out_dir=tmp_path / "cut", on_snapshot=crash_at_second_snapshot)
    fresh = _mlp(seed=99)  # a different init: everything must come from the snapshot
    h = train(fresh, data, config, out_dir=tmp_path / "cut")
    assert h.resumed_from == list_snapshots(tmp_path / "full")[1]
    _assert_same_params(fresh, full)
    assert h.batch_loss == h_full.batch_loss and h.lr == h_full.lr
    assert [s.step for s in h.snapshots] == [s.step for s in h_full.snapshots]
    assert h.final.metrics["loss"] == h_full.final.metrics["loss"]
    # Resuming a finished run trains nothing and restores the final state.
    again = _mlp(seed=5)
    assert train(again, data, config, out_dir=tmp_path / "full").resumed_from == h_full.num_steps
    _assert_same_params(again, full)


def test_resume_refuses_a_different_config_or_resume_false(tmp_path):
    train(_mlp(), _gmm(), TrainConfig(batch_size=32, steps=4), out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"different config .*'lr'"):
        train(_mlp(), _gmm(), TrainConfig(lr=0.1, batch_size=32, steps=4), out_dir=tmp_path)
    with pytest.raises(FileExistsError, match="resume=True"):
        train(_mlp(), _gmm(), TrainConfig(batch_size=32, steps=4), out_dir=tmp_path, resume=False)


def test_in_memory_snapshots_and_eval_metrics():
    data = _gmm(400)
    train_set, test_set = data.subset(range(300)), data.subset(range(300, 400))
    model = _mlp()
    h = train(model, train_set, TrainConfig(batch_size=30, epochs=2, snapshot_steps=(0, 10)), eval_data=test_set)
    assert [s.step for s in h.snapshots] == [0, 10, 20] and h.snapshots[1].epoch == 1.0
    assert all(s.path is None and s.state is not None for s in h.snapshots)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in h.final.load_state().items())
    m = evaluate(model, [(test_set.x, test_set.y)], grad=False)
    assert h.final.metrics["test_loss"] == pytest.approx(m.loss, rel=1e-12)
    assert {"loss", "accuracy", "grad_norm", "test_loss", "test_accuracy", "lr"} <= set(h.final.metrics)


def test_metrics_in_train_mode_leave_batchnorm_statistics_untouched():
    model = build_model("lenet", image_size=4, channels=(2, 2), hidden=(4,), num_classes=3, batchnorm=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    with policy(model, "train"):
        model(x)
    evaluate(model, [(x, y)], mode="train")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- random subspaces


def test_fwht_matches_sylvester_hadamard():
    x = torch.randn(3, 16, dtype=F64)
    H = torch.from_numpy(scipy.linalg.hadamard(16)).to(F64)
    torch.testing.assert_close(fwht(x), x @ H)


@pytest.mark.parametrize("kind", ["dense", "sparse", "fastfood"])
def test_projection_columns_are_unit_and_nearly_orthogonal(kind):
    P = RandomProjection(1024, 32, kind, seed=0, dtype=F64)
    M = P.dense()
    norms = M.norm(dim=0)
    # Fastfood columns have unit norm exactly when D is a multiple of the block size (here).
    torch.testing.assert_close(norms, torch.ones(32, dtype=F64))
    off = (M.T @ M - torch.eye(32, dtype=F64)).abs().max()
    assert off < (1e-12 if kind == "dense" else 0.25)  # random unit vectors in R^1024: |cos| ≈ 0.03-0.15
    w = torch.randn(32, dtype=F64)
    torch.testing.assert_close(P(w), M @ w)
    assert torch.equal(RandomProjection(1024, 32, kind, seed=0, dtype=F64).dense(), M)


@pytest.mark.parametrize("kind", ["dense", "sparse", "fastfood"])
def test_subspace_training_moves_only_along_the_subspace(kind):
    data = _gmm(300)
    model = _mlp()
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()
    sub, h = train_subspace(
        model, data, 20, TrainConfig(lr=0.1, batch_size=50, epochs=5, snapshot_steps=(0,)), kind=kind
    )
    assert [p.shape for p in sub.parameters() if p.requires_grad] == [torch.Size([20])]
    assert h.final.metrics["loss"] < 0.7 * h.snapshots[0].metrics["loss"]
    # The original model and θ₀ are untouched; the trained network is exactly θ₀ + M w.
    torch.testing.assert_close(torch.cat([p.reshape(-1) for p in model.parameters()]), theta0, rtol=0, atol=0)
    torch.testing.assert_close(sub.theta0(), theta0, rtol=0, atol=0)
    trained = sub.materialize()
    theta = torch.cat([p.detach().reshape(-1) for p in trained.parameters()])
    M = sub.projection.dense()
    torch.testing.assert_close(theta - theta0, M @ sub.w.detach(), rtol=0, atol=1e-13)
    coef = torch.linalg.lstsq(M, theta - theta0).solution
    torch.testing.assert_close(M @ coef, theta - theta0, rtol=0, atol=1e-12)  # inside span(M)
    torch.testing.assert_close(trained(data.x), sub(data.x))


def test_subspace_snapshots_resume_and_refuse_another_projection(tmp_path):
    data, cfg = _gmm(), TrainConfig(batch_size=50, steps=12, snapshot_steps=(6,))
    full, _ = train_subspace(_mlp(), data, 16, cfg, kind="sparse", seed=3, out_dir=tmp_path / "a")
    assert "projection.spec" in full.state_dict() and "projection.values" not in full.state_dict()
    resumed = SubspaceModel(_mlp(), 16, kind="sparse", seed=3)
    resumed.load_state_dict(load_snapshot(tmp_path / "a", 6)[0])
    train(resumed, data, cfg, out_dir=tmp_path / "a")  # finished: restores step 12
    _assert_same_params(resumed, full)
    with pytest.raises(RuntimeError, match=r"\(D, d, kind, seed\) = \(123, 16, 'sparse', 3\).*rebuild it"):
        SubspaceModel(_mlp(), 16, kind="sparse", seed=4).load_state_dict(full.state_dict())


def test_subspace_gradient_is_m_transpose_full_gradient():
    data = _gmm(100)
    sub = SubspaceModel(_mlp(), 8, kind="fastfood", seed=2)
    with torch.no_grad():
        sub.w.copy_(torch.randn(8, dtype=F64, generator=torch.Generator().manual_seed(0)))
    (gw,) = torch.autograd.grad(nn.functional.cross_entropy(sub(data.x), data.y), [sub.w])
    full = sub.materialize()
    g = torch.autograd.grad(nn.functional.cross_entropy(full(data.x), data.y), list(full.parameters()))
    torch.testing.assert_close(gw, sub.projection.dense().T @ torch.cat([t.reshape(-1) for t in g]))


# ---------------------------------------------------------------- interpolation


def test_interpolation_endpoints_equal_the_two_models_losses_and_callback_sees_the_line():
    data = _gmm(200)
    a, b = _mlp(seed=0), _mlp(seed=1)
    train(a, data, TrainConfig(batch_size=None, lr=0.5, momentum=0.0, steps=30))
    seen = []

    def cb(alpha, model):
        seen.append(alpha)
        return float(model.state_dict()["layers.0.bias"][0])

    r = interpolate(a, a, b, data, alphas=[-0.5, 0.25, 0.5, 1.5], callback=cb)
    assert r.alphas == (-0.5, 0.0, 0.25, 0.5, 1.0, 1.5) and seen == list(r.alphas)
    assert r.loss_a == evaluate(a, [(data.x, data.y)], grad=False).loss
    assert r.loss_b == evaluate(b, [(data.x, data.y)], grad=False).loss
    ba, bb = float(a.state_dict()["layers.0.bias"][0]), float(b.state_dict()["layers.0.bias"][0])
    for alpha, v in zip(r.alphas, r.extras):
        assert v == pytest.approx((1 - alpha) * ba + alpha * bb, abs=1e-14)


def test_interpolation_barrier_zero_for_convex_and_positive_for_permuted_networks():
    data = _gmm(200)
    # A linear softmax model: the loss is convex in θ, so it never exceeds the chord.
    lin_a = build_model("mlp", in_features=6, widths=(), num_classes=3, seed=0, dtype=F64)
    lin_b = build_model("mlp", in_features=6, widths=(), num_classes=3, seed=1, dtype=F64)
    train(lin_a, data, TrainConfig(batch_size=None, lr=0.5, momentum=0.0, steps=50))
    r = interpolate(lin_a, lin_a, lin_b, data)
    assert r.barrier == 0.0 and r.is_monotone()
    # Permuting hidden units gives the same function at another point: the midpoint is worse.
    net = _mlp(widths=(8,))
    train(net, data, TrainConfig(batch_size=None, lr=0.5, momentum=0.0, steps=200))
    perm = torch.roll(torch.arange(8), 3)
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    sd["layers.0.weight"], sd["layers.0.bias"] = sd["layers.0.weight"][perm], sd["layers.0.bias"][perm]
    sd["layers.2.weight"] = sd["layers.2.weight"][:, perm]
    r = interpolate(net, net, sd, data, alphas=[0.5])
    assert r.loss_a == pytest.approx(r.loss_b, rel=1e-12)
    assert r.barrier > 0.1 and r.barrier == pytest.approx(r.loss[1] - r.loss_a)
    with pytest.raises(ValueError, match="different keys"):
        interpolate(net, net, lin_a, data)
