"""Pre-select codes equal a literal Eq. (2) (sign convention as printed), numba equals portable."""

import numpy as np
import pytest
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


def literal_preselect(p, y):
    """Eq. (2) as printed: sort by y (stable), count pairs k < l with p_(k) > p_(l)."""
    q = p.astype(np.float64)[np.argsort(y, kind="stable")]
    m = len(q)
    return sum(1 for k in range(m) for j in range(k + 1, m) if q[k] > q[j])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@given(data=pool())
def test_equals_literal_eq2(backend, data):
    P, Y = data
    codes = K.preselect_codes(P, Y, backend=backend)
    assert codes.dtype == np.int32
    expected = np.array([[literal_preselect(P[:, t], y) for t in range(P.shape[1])] for y in Y])
    np.testing.assert_array_equal(codes, expected)


@given(data=pool(m_max=70, n_max=300, b_max=9))
def test_numba_equals_portable(data):
    # m up to 70 uses up to three 32-bit words per bitmask
    P, Y = data
    np.testing.assert_array_equal(K.preselect_codes(P, Y, backend="numba"), K.preselect_codes(P, Y, backend="numpy"))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("m", [3, 32, 33, 64, 65])
def test_perfect_predictor_scores_one(backend, m):
    # Better models (higher y) have lower NLL: every pair counts, η = 1 (the formula as printed).
    y = np.arange(m, dtype=float)
    P = np.stack([-y, y, np.zeros(m)], axis=1).astype(np.float32)
    codes = K.preselect_codes(P, y[None, :], backend=backend)
    np.testing.assert_array_equal(codes, [[K.pair_count(m), 0, 0]])
    np.testing.assert_array_equal(K.code_to_score(codes, "preselect", m), [[1.0, 0.0, 0.0]])


def test_many_rows_label_permutations():
    rng = np.random.default_rng(2)
    m, n = 32, 500
    P = rng.gamma(2, 1, (m, n)).astype(np.float32)
    y = rng.random(m)
    Y = np.stack([y] + [rng.permutation(y) for _ in range(300)])
    codes = K.preselect_codes(P, Y)
    for r in (0, 7, 299):
        np.testing.assert_array_equal(codes[r], K.preselect_codes(P, Y[r : r + 1], backend="numpy")[0])


def test_positions_are_stable():
    Y = np.array([[0.5, 0.1, 0.5, 0.1]])
    np.testing.assert_array_equal(K.preselect_positions(Y), [[2, 0, 3, 1]])


@pytest.mark.parametrize("vnni", [True, False], ids=["vnni", "float32"])
@given(data=pool(m_max=140, n_max=300, b_max=9))
def test_screen_codes_equal_separate_kernels(vnni, data):
    # the fused numba pass (ranks + bitmasks from one set of comparisons) equals the portable kernels
    from bsig_array.kernels import backend_numba

    if vnni and not backend_numba._USE_VNNI:
        pytest.skip("CPU without AVX-512 VNNI")
    P, Y = data
    saved, backend_numba._USE_VNNI = backend_numba._USE_VNNI, vnni
    try:
        for ties in ("average", "first"):
            both = K.screen_codes(P, Y, ties, backend="numba")
            np.testing.assert_array_equal(both["thrush"], K.thrush_codes(P, Y, ties, backend="numpy"))
            np.testing.assert_array_equal(both["preselect"], K.preselect_codes(P, Y, backend="numpy"))
    finally:
        backend_numba._USE_VNNI = saved
