"""Exact histograms and tails: equal a full sort with the lowest-token-id tie-break, chunk-independent."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bsig_array import kernels as K


@st.composite
def codes_in_chunks(draw):
    """Codes (B, d) with heavy ties on a method's lattice, unique shuffled token ids, chunk cuts."""
    method = draw(st.sampled_from(K.METHODS))
    m = draw(st.integers(3, 12))
    d = draw(st.integers(1, 200))
    B = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    offset, n_bins = K.lattice(method, m)
    used = rng.integers(0, n_bins, draw(st.integers(1, 5))) - offset  # few distinct codes: ties
    codes = used[rng.integers(0, used.size, (B, d))].astype(np.int32)
    ids = rng.choice(10 * d + 10, size=d, replace=False).astype(np.int64)
    n_cuts = min(draw(st.integers(0, 4)), d - 1)
    cuts = np.sort(rng.choice(np.arange(1, d), size=n_cuts, replace=False)) if n_cuts else []
    k = draw(st.integers(1, d))
    return method, m, codes, ids, list(cuts), k


def full_sort_tails(codes, ids, k):
    """Reference: per row, the k smallest (code, id) and the k largest code with smallest id."""
    low = np.stack([np.sort(ids[np.lexsort((ids, row))[:k]]) for row in codes])
    high = np.stack([np.sort(ids[np.lexsort((ids, -row.astype(np.int64)))[:k]]) for row in codes])
    return low, high


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@given(case=codes_in_chunks())
def test_tails_equal_full_sort_for_any_chunking(backend, case):
    method, m, codes, ids, cuts, k = case
    chunks = np.split(np.arange(codes.shape[1]), cuts)
    hist = None
    for c in chunks:  # pass 1: streamed histogram
        hist = K.histogram_codes(codes[:, c], method, m, out=hist, backend=backend)
    bounds = K.tail_bounds(hist, k, method, m)
    parts = [K.tail_members(codes[:, c], ids[c], bounds, backend=backend) for c in chunks]
    sel = K.merge_tails(parts[::-1], bounds)  # merge order must not matter
    low, high = full_sort_tails(codes, ids, k)
    np.testing.assert_array_equal(sel.token[:, 0], low)
    np.testing.assert_array_equal(sel.token[:, 1], high)
    # codes travel with their tokens
    lookup = {int(i): j for j, i in enumerate(ids)}
    for r in range(codes.shape[0]):
        for t in range(2):
            cols = [lookup[int(i)] for i in sel.token[r, t]]
            np.testing.assert_array_equal(sel.code[r, t], codes[r, cols])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@given(case=codes_in_chunks())
def test_histogram_equals_bincount(backend, case):
    method, m, codes, _, _, _ = case
    offset, n_bins = K.lattice(method, m)
    hist = K.histogram_codes(codes, method, m, backend=backend)
    assert hist.dtype == np.int64 and hist.shape == (codes.shape[0], n_bins)
    for r in range(codes.shape[0]):
        np.testing.assert_array_equal(hist[r], np.bincount(codes[r] + offset, minlength=n_bins))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_histogram_rejects_codes_off_the_lattice(backend):
    with pytest.raises(ValueError, match="lattice"):
        K.histogram_codes(np.array([[0, 4]], np.int32), "preselect", 3, backend=backend)  # Z = 3
    with pytest.raises(ValueError, match="lattice"):
        K.histogram_codes(np.array([[-1]], np.int32), "preselect", 3, backend=backend)
    with pytest.raises(ValueError, match="lattice"):  # long rows take numba's 4-way path
        K.histogram_codes(np.array([[0, 1, 7, 3, 0, 1, 2, 3, 0]], np.int32), "preselect", 3, backend=backend)


@given(case=codes_in_chunks())
def test_bounds_from_a_histogram_in_another_namespace_are_the_same(case):
    """A device-resident histogram (array_api_strict stands for CuPy) is reduced where it lives;
    the boundaries are host arrays equal to those of the numpy histogram, and cut exactly at the
    k-th code of a full sort."""
    import array_api_strict as xps

    method, m, codes, _, _, k = case
    hist = K.histogram_codes(codes, method, m)
    want = K.tail_bounds(hist, k, method, m)
    got = K.tail_bounds(xps.asarray(hist), k, method, m)
    for f in ("low_code", "low_take", "high_code", "high_take"):
        assert isinstance(getattr(got, f), np.ndarray)
        np.testing.assert_array_equal(getattr(got, f), getattr(want, f))
    ordered = np.sort(codes, axis=1)
    np.testing.assert_array_equal(want.low_code, ordered[:, k - 1])
    np.testing.assert_array_equal(want.high_code, ordered[:, -k])
    np.testing.assert_array_equal(want.low_take, (ordered[:, :k] == ordered[:, k - 1:k]).sum(axis=1))
    np.testing.assert_array_equal(want.high_take, (ordered[:, -k:] == ordered[:, -k:][:, :1]).sum(axis=1))


def test_bounds_on_a_known_histogram():
    # preselect, m = 3: codes 0..3 with counts 2, 5, 0, 3
    hist = np.array([[2, 5, 0, 3]])
    b = K.tail_bounds(hist, 4, "preselect", 3)
    assert (b.low_code[0], b.low_take[0], b.high_code[0], b.high_take[0]) == (1, 2, 1, 1)
    b = K.tail_bounds(hist, 2, "preselect", 3)
    assert (b.low_code[0], b.low_take[0], b.high_code[0], b.high_take[0]) == (0, 2, 3, 2)


def test_bounds_errors():
    hist = np.array([[2, 5, 0, 3]])
    with pytest.raises(ValueError, match="k=11"):
        K.tail_bounds(hist, 11, "preselect", 3)
    with pytest.raises(ValueError, match="shape"):
        K.tail_bounds(hist, 1, "thrush", 3)


def test_merge_detects_inconsistent_members():
    codes = np.array([[0, 1, 2, 3]], np.int32)
    bounds = K.tail_bounds(K.histogram_codes(codes, "preselect", 3), 2, "preselect", 3)
    part = K.tail_members(codes[:, :3], np.arange(3), bounds)  # last token missing
    with pytest.raises(ValueError, match="different data"):
        K.merge_tails([part], bounds)


def test_lattices_and_tail_size():
    assert K.lattice("thrush", 32) == (10912, 21825)
    assert K.lattice("preselect", 32) == (0, 497)
    assert K.tail_size(0.01, 1_000) == 10
    assert K.tail_size(0.29, 100) == 29  # not 28: alpha is taken as the decimal written
    assert K.tail_size(0.01, 50) == 1
    for alpha in (0.0, -0.1, 0.5, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            K.tail_size(alpha, 100)
    with pytest.raises(ValueError, match="method"):
        K.lattice("spearman", 5)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@given(case=codes_in_chunks())
def test_tail_counts_equal_direct_counts(backend, case):
    method, m, codes, _, _, _ = case
    rng = np.random.default_rng(int(codes.sum()) & 0xFFFF)
    offset, n_bins = K.lattice(method, m)
    low = rng.integers(0, n_bins, codes.shape[0]) - offset
    high = rng.integers(0, n_bins, codes.shape[0]) - offset
    got = K.tail_counts(codes, low, high, backend=backend)
    c, lo, hi = codes.astype(np.int64), low[:, None], high[:, None]
    expected = np.stack([(c < lo).sum(1), (c == lo).sum(1), (c > hi).sum(1), (c == hi).sum(1)], axis=1)
    np.testing.assert_array_equal(got, expected)
