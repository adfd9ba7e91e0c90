"""The portable kernels run under array_api_strict and equal numpy; the backend registry."""

import array_api_strict as xps
import numpy as np
import pytest

from bsig_array import kernels as K
from bsig_array.kernels import backends


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(5)
    m, n, B = 9, 300, 3
    P = rng.integers(0, 4, (m, n)).astype(np.float32)  # heavy ties
    Y = rng.integers(0, 3, (B, m)).astype(np.float64)
    return P, Y


def host(x):
    return np.asarray(x)


@pytest.mark.parametrize("ties", ["average", "first"])
def test_ranks_and_thrush_strict(pool, ties):
    P, Y = pool
    Ps, Ys = xps.asarray(P), xps.asarray(Y)
    r = K.ranks(Ps, ties)
    assert isinstance(r, type(Ps))
    np.testing.assert_array_equal(host(r), K.ranks(P, ties, backend="numba"))
    c = K.thrush_codes(Ps, Ys, ties)
    assert isinstance(c, type(Ps)) and c.dtype == xps.int32
    np.testing.assert_array_equal(host(c), K.thrush_codes(P, Y, ties, backend="numba"))


def test_preselect_histogram_tails_strict(pool):
    P, Y = pool
    m = P.shape[0]
    Ps, Ys = xps.asarray(P), xps.asarray(Y)
    s = K.preselect_codes(Ps, Ys)
    assert isinstance(s, type(Ps)) and s.dtype == xps.int32
    s_np = K.preselect_codes(P, Y, backend="numba")
    np.testing.assert_array_equal(host(s), s_np)
    h = K.histogram_codes(s, "preselect", m)
    np.testing.assert_array_equal(host(h), K.histogram_codes(s_np, "preselect", m, backend="numba"))
    bounds = K.tail_bounds(h, 7, "preselect", m)
    ids = np.arange(P.shape[1], dtype=np.int64)[::-1].copy()
    sel = K.merge_tails([K.tail_members(s, xps.asarray(ids), bounds)], bounds)
    ref = K.merge_tails([K.tail_members(s_np, ids, bounds, backend="numba")], bounds)
    np.testing.assert_array_equal(sel.token, ref.token)
    np.testing.assert_array_equal(sel.code, ref.code)


def test_screen_codes_strict(pool):
    P, Y = pool
    both = K.screen_codes(xps.asarray(P), xps.asarray(Y), "first")
    np.testing.assert_array_equal(host(both["thrush"]), K.thrush_codes(P, Y, "first", backend="numba"))
    np.testing.assert_array_equal(host(both["preselect"]), K.preselect_codes(P, Y, backend="numba"))


def test_weights_and_positions_strict(pool):
    _, Y = pool
    Ys = xps.asarray(Y)
    np.testing.assert_array_equal(host(K.thrush_weights(Ys)), K.thrush_weights(Y))
    np.testing.assert_array_equal(host(K.preselect_positions(Ys)), K.preselect_positions(Y))
    np.testing.assert_array_equal(host(K.code_to_score(xps.asarray([[4, -2]]), "thrush", 3)), [[2.0, -1.0]])


def test_auto_backend_follows_the_array_type(pool):
    P, _ = pool
    assert backends.get_backend("auto", P).name == "numba"
    assert backends.get_backend("auto", xps.asarray(P)).name == "numpy"
    with pytest.raises(ValueError, match="unknown kernel backend"):
        backends.get_backend("tpu")


def test_cupy_backend_imports_without_cupy():
    mod = backends.get_backend("cupy")
    assert mod.name == "cupy"
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="CuPy"):
            mod.thrush_codes(np.zeros((3, 2)), np.zeros((1, 3)))


def test_register_backend_is_picked_by_name(pool):
    P, Y = pool
    backends.register_backend("portable-again", "bsig_array.kernels.backend_portable")
    try:
        np.testing.assert_array_equal(K.thrush_codes(P, Y, backend="portable-again"), K.thrush_codes(P, Y))
    finally:
        del backends.BACKENDS["portable-again"]
