"""Thrush codes equal a literal Eq. (1), Spearman without ties, and numba equals portable."""

import numpy as np
import pytest
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st

from bsig_array import kernels as K

DTYPES = (np.float16, np.float32, np.float64)


@st.composite
def pool(draw, m_min=3, m_max=40, n_max=25, b_max=4):
    """NLLs (m, n) and scores (B, m), both with heavy ties."""
    m = draw(st.integers(m_min, m_max))
    n = draw(st.integers(1, n_max))
    B = draw(st.integers(1, b_max))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    p_levels = rng.gamma(2.0, 2.0, draw(st.integers(1, 6)))
    y_levels = rng.random(draw(st.integers(1, 5)))
    P = p_levels[rng.integers(0, p_levels.size, (m, n))].astype(draw(st.sampled_from(DTYPES)))
    Y = y_levels[rng.integers(0, y_levels.size, (B, m))]
    return P, Y


def literal_thrush(p, y, ties):
    """Eq. (1) straight from the paper: γ = Σ_{k<l} sign(y_k − y_l)(rank(p_k) − rank(p_l))."""
    r = scipy.stats.rankdata(p.astype(np.float64), method="average" if ties == "average" else "ordinal")
    m = len(y)
    gamma = 0.0
    for k in range(m):
        for j in range(k + 1, m):
            gamma += np.sign(y[k] - y[j]) * (r[k] - r[j])
    return gamma


@pytest.mark.parametrize("ties", ["average", "first"])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
@given(data=pool())
def test_equals_literal_eq1(backend, ties, data):
    P, Y = data
    codes = K.thrush_codes(P, Y, ties, backend=backend)
    assert codes.dtype == np.int32
    expected = np.array([[2 * literal_thrush(P[:, t], y, ties) for t in range(P.shape[1])] for y in Y])
    np.testing.assert_array_equal(codes, expected)
    L = K.thrush_bound(P.shape[0])
    assert np.all(np.abs(codes) <= L)


@pytest.mark.parametrize("vnni", [True, False], ids=["vnni", "float32"])
@given(data=pool(m_max=140, n_max=300, b_max=9))
def test_numba_equals_portable(vnni, data):
    from bsig_array.kernels import backend_numba

    if vnni and not backend_numba._USE_VNNI:
        pytest.skip("CPU without AVX-512 VNNI")
    saved, backend_numba._USE_VNNI = backend_numba._USE_VNNI, vnni  # both product paths
    try:
        check_numba_equals_portable(*data)
    finally:
        backend_numba._USE_VNNI = saved


def check_numba_equals_portable(P, Y):
    # m up to 140 crosses the VNNI limit (m ≤ 127) and n the 128-token blocks
    for ties in ("average", "first"):
        np.testing.assert_array_equal(
            K.thrush_codes(P, Y, ties, backend="numba"), K.thrush_codes(P, Y, ties, backend="numpy")
        )


@pytest.mark.parametrize("m", [3, 4, 17, 32, 40])
def test_no_ties_is_scaled_spearman(m):
    rng = np.random.default_rng(m)
    P = rng.random((m, 50))
    y = rng.random(m)
    gamma = K.thrush_codes(P, y[None, :]) / 2
    rho = np.array([scipy.stats.spearmanr(y, P[:, t]).statistic for t in range(P.shape[1])])
    np.testing.assert_allclose(gamma[0], m * (m * m - 1) / 6 * rho, rtol=0, atol=1e-9 * m**3)


def test_extremes_reach_the_lattice_bounds():
    m = 12
    y = np.arange(m, dtype=float)
    P = np.stack([np.arange(m), -np.arange(m)], axis=1).astype(np.float32)  # same / reversed order
    codes = K.thrush_codes(P, y[None, :])
    np.testing.assert_array_equal(codes, [[K.thrush_bound(m), -K.thrush_bound(m)]])


@given(data=pool(b_max=6))
def test_weights_are_sign_sums(data):
    _, Y = data
    expected = np.sign(Y[:, :, None] - Y[:, None, :]).sum(axis=2)
    np.testing.assert_array_equal(K.thrush_weights(Y), expected)
    mid = scipy.stats.rankdata(Y, axis=1)
    np.testing.assert_array_equal(K.thrush_weights(Y), 2 * mid - (Y.shape[1] + 1))


def test_many_rows_label_permutations():
    # null permutations are just more rows of Y: B ≫ m must work and equal row-by-row results
    rng = np.random.default_rng(1)
    m, n = 32, 700
    P = rng.gamma(2, 1, (m, n)).astype(np.float32)
    y = rng.random(m)
    Y = np.stack([y] + [rng.permutation(y) for _ in range(300)])
    codes = K.thrush_codes(P, Y)
    for r in (0, 1, 150, 300):
        np.testing.assert_array_equal(codes[r], K.thrush_codes(P, Y[r : r + 1], backend="numpy")[0])


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        K.thrush_codes(np.zeros((3, 5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="ties"):
        K.thrush_codes(np.zeros((3, 5)), np.zeros((2, 3)), ties="min")
