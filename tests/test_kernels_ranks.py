"""Per-token ranks over the model axis: equal scipy/pandas, numba equals portable, float16 safe."""

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st

from bsig_array import kernels as K

DTYPES = (np.float16, np.float32, np.float64)


@st.composite
def nll_with_ties(draw, m_min=2, m_max=40, n_max=40):
    """(m, n) NLLs drawn from few distinct values (heavy ties), in a random float dtype."""
    m = draw(st.integers(m_min, m_max))
    n = draw(st.integers(1, n_max))
    levels = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(seed)
    values = rng.gamma(2.0, 2.0, levels)
    return values[rng.integers(0, levels, (m, n))].astype(dtype)


def scipy_ranks(P, ties):
    method = "average" if ties == "average" else "ordinal"
    return scipy.stats.rankdata(P.astype(np.float64), method=method, axis=0)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@given(P=nll_with_ties())
def test_midranks_equal_scipy(backend, P):
    np.testing.assert_array_equal(K.ranks(P, "average", backend=backend), scipy_ranks(P, "average"))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@given(P=nll_with_ties())
def test_first_equals_pandas(backend, P):
    expected = pd.DataFrame(P.astype(np.float64)).rank(method="first", axis=0).to_numpy()
    np.testing.assert_array_equal(K.ranks(P, "first", backend=backend), expected)


@given(P=nll_with_ties(m_max=70, n_max=300))
def test_numba_equals_portable(P):
    # n up to 300 crosses numba's 128-token blocks (padding of the last block)
    for ties in ("average", "first"):
        np.testing.assert_array_equal(K.ranks(P, ties, backend="numba"), K.ranks(P, ties, backend="numpy"))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_float16_signed_zero_and_negatives(backend):
    # -0.0 ties with +0.0; negative values order below zero (the uint16 key path in numba)
    P = np.array([[-0.0, 1.0, -2.0], [0.0, -1.0, -2.5], [0.5, 1.0, -2.0], [-0.5, 65504.0, np.inf]], np.float16)
    np.testing.assert_array_equal(K.ranks(P, backend=backend), scipy_ranks(P, "average"))
    np.testing.assert_array_equal(K.ranks(P, "first", backend=backend), scipy_ranks(P, "first"))


def test_bad_arguments():
    P = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="ties"):
        K.ranks(P, "dense")
    with pytest.raises(ValueError, match="2-D"):
        K.ranks(np.zeros(3))
    with pytest.raises(ValueError, match="models"):
        K.ranks(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="backend"):
        K.ranks(P, backend="fortran")
