"""Overlap of subspaces and masks, masks, gradient confinement and persistence."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from curvscope.metrics import (
    best_mask,
    chance_overlap,
    confinement_chance,
    gradient_confinement,
    layer_matched_random_mask,
    magnitude_mask,
    mask_iou,
    mask_overlap,
    principal_angles,
    random_mask,
    random_mask_overlap,
    subspace_overlap,
    subspace_persistence,
)

DT = torch.float64


def _rand(D, k, seed):
    return torch.randn(D, k, generator=torch.Generator().manual_seed(seed), dtype=DT)


def _mix(Q, seed):
    """Another basis of the same subspace: Q R with a random well-conditioned R."""
    k = Q.shape[1]
    G = _rand(k, k, seed + 100)
    R = torch.triu(0.5 * G, 1) + torch.diag(1 + G.diagonal().abs())  # invertible, well conditioned
    return Q @ R


# ----------------------------------------------------------------------------- subspaces
SUBSPACE_CASES = [  # (name, Q1, Q2, expected overlap)
    ("identical", torch.eye(6, 3, dtype=DT), torch.eye(6, 3, dtype=DT), 1.0),
    ("same span, other basis", torch.eye(6, 3, dtype=DT), _mix(torch.eye(6, 3, dtype=DT), 1), 1.0),
    ("orthogonal", torch.eye(6, dtype=DT)[:, :3], torch.eye(6, dtype=DT)[:, 3:], 0.0),
    ("nested", torch.eye(6, dtype=DT)[:, :2], torch.eye(6, dtype=DT)[:, :4], 1.0),
    ("half", torch.eye(6, dtype=DT)[:, :2], torch.eye(6, dtype=DT)[:, 1:3], 0.5),
    ("45 degrees", torch.tensor([[1.0], [0.0]], dtype=DT), torch.tensor([[1.0], [1.0]], dtype=DT), 0.5),
]


@pytest.mark.parametrize("name,Q1,Q2,expected", SUBSPACE_CASES, ids=[c[0] for c in SUBSPACE_CASES])
def test_subspace_overlap_known(name, Q1, Q2, expected):
    assert subspace_overlap(Q1, Q2) == pytest.approx(expected, abs=1e-12)
    assert subspace_overlap(Q2, Q1) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(D=st.integers(4, 30), k1=st.integers(1, 4), k2=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_overlap_properties(D, k1, k2, seed):
    Q1, Q2 = _rand(D, k1, seed), _rand(D, k2, seed + 1)
    ov = subspace_overlap(Q1, Q2)
    assert 0.0 <= ov <= 1.0 + 1e-12
    assert ov == pytest.approx(subspace_overlap(_mix(Q1, seed), _mix(Q2, seed + 2)), abs=1e-9)  # basis-invariant
    assert ov == pytest.approx(subspace_overlap(Q2, Q1), abs=1e-12)
    pa = principal_angles(Q1, Q2)
    cos2 = torch.cos(pa.angles) ** 2  # = mean cos² of the principal angles
    assert ov == pytest.approx(cos2.mean().item(), abs=1e-9) and ov == pytest.approx(pa.overlap, abs=1e-12)
    assert ov.k1 == k1 and ov.k2 == k2 and ov.chance == max(k1, k2) / D  # a typed result, also a float


@pytest.mark.parametrize("D,k1,k2", [(100, 5, 5), (60, 3, 10), (200, 20, 20)])
def test_random_overlap_is_chance_within_spread(D, k1, k2):
    expected, mean, std = chance_overlap(D, k1, k2, num_samples=300, seed=1)
    assert expected == max(k1, k2) / D
    assert abs(mean - expected) <= 4 * std / math.sqrt(300)
    sample = subspace_overlap(_rand(D, k1, 7), _rand(D, k2, 8))
    assert abs(sample - expected) <= 5 * std


def test_principal_angles_and_errors():
    e = torch.eye(3, dtype=DT)
    pa = principal_angles(e[:, :2], e[:, 1:])
    assert torch.allclose(pa.angles, torch.tensor([0.0, math.pi / 2], dtype=DT))
    assert torch.allclose(pa.cosines, torch.tensor([1.0, 0.0], dtype=DT), atol=1e-12)
    with pytest.raises(ValueError, match="different spaces"):
        subspace_overlap(torch.eye(3, 1, dtype=DT), torch.eye(4, 1, dtype=DT))
    with pytest.raises(ValueError, match="zero"):
        subspace_overlap(torch.zeros(3, 1, dtype=DT), torch.eye(3, 1, dtype=DT))


# ---------------------------------------------------------------------------------- masks
@settings(max_examples=40, deadline=None)
@given(D=st.integers(5, 40), k=st.integers(1, 5), m=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_mask_overlap_is_subspace_overlap_of_unit_vectors(D, k, m, seed):
    Q = _rand(D, k, seed)
    mask = random_mask(D, m, seed)
    units = torch.eye(D, dtype=DT)[:, mask]
    assert mask_overlap(mask, Q) == pytest.approx(subspace_overlap(units, Q), abs=1e-10)
    assert mask_overlap(torch.nonzero(mask).flatten(), Q) == pytest.approx(mask_overlap(mask, Q), abs=1e-14)
    assert mask_overlap(best_mask(Q, m), Q) >= mask_overlap(mask, Q) - 1e-12  # best is best


def test_random_masks_score_chance():
    D, k = 400, 10
    Q = torch.linalg.qr(_rand(D, k, 3))[0]
    mean, std = random_mask_overlap(Q, k, num_samples=300, seed=2)
    assert abs(mean - k / D) <= 4 * std / math.sqrt(300)


MAGNITUDE_CASES = [  # (params, k, per_layer, layer_sizes, expected mask)
    (torch.tensor([0.1, -3.0, 2.0, 0.5, -0.2, 0.05]), 2, False, None, [0, 1, 1, 0, 0, 0]),
    (torch.tensor([0.1, -3.0, 2.0, 0.5, -0.2, 0.05]), 2, True, [3, 3], [0, 1, 0, 1, 0, 0]),
    (torch.tensor([0.1, -3.0, 2.0, 0.5, -0.2, 0.05]), 3, True, [4, 2], [0, 1, 1, 0, 1, 0]),
    (torch.tensor([1.0, 1.0, 1.0]), 2, False, None, [1, 1, 0]),  # ties: lower index first
]


@pytest.mark.parametrize("params,k,per_layer,sizes,expected", MAGNITUDE_CASES)
def test_magnitude_mask(params, k, per_layer, sizes, expected):
    mask = magnitude_mask(params, k, per_layer=per_layer, layer_sizes=sizes)
    assert mask.tolist() == [bool(x) for x in expected]


def test_magnitude_mask_from_named_parameters():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    params = dict(model.named_parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params.values()])
    assert torch.equal(magnitude_mask(params, 7), magnitude_mask(flat, 7))
    per = magnitude_mask(params, 13, per_layer=True)
    counts = [int(s.sum()) for s in per.split([p.numel() for p in params.values()])]
    assert counts == [6, 2, 4, 1] and sum(counts) == 13  # 13 · [12, 4, 8, 2] / 26, largest remainders
    with pytest.raises(ValueError, match="layer_sizes"):
        magnitude_mask(flat, 3, per_layer=True)


def test_layer_matched_and_random_masks():
    mask = magnitude_mask(torch.arange(10.0), 4)
    r = layer_matched_random_mask(mask, [5, 5], seed=3)
    assert int(r[:5].sum()) == int(mask[:5].sum()) and int(r[5:].sum()) == int(mask[5:].sum())
    assert torch.equal(random_mask(50, 7, seed=1), random_mask(50, 7, seed=1))
    assert not torch.equal(random_mask(50, 7, seed=1), random_mask(50, 7, seed=2))


@pytest.mark.parametrize("a,b", [(range(0, 6), range(3, 9)), (range(0, 6), range(0, 6)), (range(0, 4), range(10, 14))])
def test_iou_matches_overlap_formula(a, b):
    ma, mb = torch.zeros(30, dtype=torch.bool), torch.zeros(30, dtype=torch.bool)
    ma[list(a)], mb[list(b)] = True, True
    ov = subspace_overlap(torch.eye(30, dtype=DT)[:, ma], torch.eye(30, dtype=DT)[:, mb])
    assert mask_iou(ma, mb) == pytest.approx(ov / (2 - ov))


# ------------------------------------------------------------------------ gradient metrics
def test_gradient_confinement_cases():
    V = torch.eye(5, 2, dtype=DT)
    assert gradient_confinement(torch.tensor([1.0, 2.0, 0, 0, 0], dtype=DT), V) == pytest.approx(1.0)
    assert gradient_confinement(torch.tensor([0, 0, 1.0, 0, 0], dtype=DT), V) == 0.0
    assert gradient_confinement(torch.tensor([1.0, 0, 1.0, 0, 0], dtype=DT), 2 * V) == pytest.approx(0.5)
    G = _rand(5, 4, 1)
    res = gradient_confinement(G, V)
    per = res.fractions
    assert per.shape == (4,) and all(per[i].item() == pytest.approx(gradient_confinement(G[:, i], V)) for i in range(4))
    assert float(res) == pytest.approx(per.mean().item()) and res.chance == 2 / 5 and (res.k, res.dim) == (2, 5)
    with pytest.raises(ValueError, match="zero"):
        gradient_confinement(torch.zeros(5, dtype=DT), V)
    with pytest.raises(ValueError, match="gradients must be"):
        gradient_confinement(torch.ones(4, dtype=DT), V)


def test_random_gradient_confinement_is_chance():
    D, k = 300, 6
    V = _rand(D, k, 1)
    fr = gradient_confinement(_rand(D, 500, 2), V).fractions
    assert confinement_chance(k, D) == k / D
    assert abs(fr.mean().item() - k / D) <= 4 * fr.std().item() / math.sqrt(500)


def test_subspace_persistence():
    Q = _rand(20, 3, 1)
    P = subspace_persistence([Q, _mix(Q, 2), _rand(20, 3, 3)])
    assert torch.allclose(P, P.T) and torch.allclose(P.diagonal(), torch.ones(3, dtype=DT))
    assert P[0, 1].item() == pytest.approx(1.0) and P[0, 2] < 0.9
