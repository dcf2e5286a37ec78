"""Algebraic identities of the operator compositions (property tests on random symmetric matrices)."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from curvscope.operators import (
    DeflatedOperator,
    DenseOperator,
    IndexRestrictedOperator,
    LowRankOperator,
    ShiftedOperator,
    SubspaceOperator,
)

DT = torch.float64


def sym(n, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, dtype=DT, generator=g)
    return (A + A.T) / 2


dims = st.integers(min_value=2, max_value=12)
seeds = st.integers(min_value=0, max_value=10_000)
scalars = st.floats(min_value=-5, max_value=5, allow_nan=False, allow_subnormal=False)


@settings(max_examples=40, deadline=None)
@given(n=dims, seed=seeds, a=scalars, b=scalars, k=st.integers(1, 4))
def test_linear_combinations(n, seed, a, b, k):
    A, B = sym(n, seed), sym(n, seed + 1)
    X = torch.randn(n, k, dtype=DT)
    opA, opB = DenseOperator(A), DenseOperator(B)
    torch.testing.assert_close((a * opA + opB * b) @ X, (a * A + b * B) @ X, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close((opA - opB) @ X[:, 0], (A - B) @ X[:, 0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close((-opA).to_dense(), -A)


@settings(max_examples=30, deadline=None)
@given(n=dims, seed=seeds, sigma=scalars)
def test_shift_moves_every_eigenvalue(n, seed, sigma):
    A = sym(n, seed)
    shifted = torch.linalg.eigvalsh(ShiftedOperator(DenseOperator(A), sigma).to_dense())
    torch.testing.assert_close(shifted, torch.linalg.eigvalsh(A) - sigma, rtol=1e-10, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 12), seed=seeds, data=st.data())
def test_deflation_zeroes_known_pairs_and_keeps_the_rest(n, seed, data):
    A = sym(n, seed)
    lam, Q = torch.linalg.eigh(A)
    k = data.draw(st.integers(1, n - 1))
    idx = torch.tensor(data.draw(st.permutations(range(n)))[:k])
    defl = DeflatedOperator(DenseOperator(A), Q[:, idx], lam[idx])
    expected = lam.clone()
    expected[idx] = 0
    got = torch.linalg.eigvalsh(defl.to_dense())
    torch.testing.assert_close(got, torch.sort(expected).values, rtol=1e-10, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(n=dims, seed=seeds, data=st.data())
def test_subspace_and_index_restrictions(n, seed, data):
    A = sym(n, seed)
    d = data.draw(st.integers(1, n))
    P = torch.randn(n, d, dtype=DT)
    torch.testing.assert_close(SubspaceOperator(DenseOperator(A), P).to_dense(), P.T @ A @ P, rtol=1e-11, atol=1e-11)
    idx = torch.tensor(sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1))))
    torch.testing.assert_close(IndexRestrictedOperator(DenseOperator(A), idx).to_dense(), A[idx][:, idx])


@settings(max_examples=20, deadline=None)
@given(n=dims, seed=seeds, r=st.integers(1, 4))
def test_low_rank_and_scipy_export(n, seed, r):
    g = torch.Generator().manual_seed(seed)
    U, w = torch.randn(n, r, dtype=DT, generator=g), torch.rand(r, dtype=DT, generator=g)
    L = LowRankOperator(U, w)
    torch.testing.assert_close(L.to_dense(), U @ torch.diag(w) @ U.T)
    S = L.to_scipy()
    x = np.random.default_rng(seed).standard_normal((n, 3))
    np.testing.assert_allclose(S @ x, (U @ torch.diag(w) @ U.T).numpy() @ x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(S.matvec(x[:, 0]), (U @ torch.diag(w) @ U.T).numpy() @ x[:, 0], atol=1e-12)


def test_mismatched_spaces_are_refused():
    import pytest

    with pytest.raises(ValueError, match="different spaces"):
        DenseOperator(torch.eye(2, dtype=DT)) + DenseOperator(torch.eye(3, dtype=DT))
