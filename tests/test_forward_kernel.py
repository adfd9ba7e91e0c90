"""Forward-selection kernel against statsmodels refits and literal brute force (docs/DESIGN.md §4)."""

from __future__ import annotations

import array_api_strict as xps
import numpy as np
import pytest
import statsmodels.api as sm
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from bsig_array.kernels.forward import forward_select, ols_aic, ols_fit

BACKENDS = ["numpy", "numba"]


def sm_fit(X: np.ndarray, y: np.ndarray, cols):
    """statsmodels OLS with intercept on columns ``cols`` of ``X``."""
    design = sm.add_constant(X[:, list(cols)], has_constant="add") if len(cols) else np.ones((y.size, 1))
    return sm.OLS(y, design).fit()


def sm_aic(X: np.ndarray, y: np.ndarray, cols) -> float:
    return float(sm_fit(X, y, cols).aic)


def literal_forward(X: np.ndarray, y: np.ndarray, delta: float, cap: int) -> tuple[list[int], list[float]]:
    """Algorithm 4 as printed: refit every remaining candidate with statsmodels at every step."""
    chosen: list[int] = []
    path: list[float] = []
    current = sm_aic(X, y, [])
    while len(chosen) < cap:
        scores = {j: sm_aic(X, y, chosen + [j]) for j in range(X.shape[1]) if j not in chosen}
        if not scores:
            break
        j = min(scores, key=lambda c: (scores[c], c))
        if not scores[j] < current - delta:
            break
        chosen.append(j)
        path.append(scores[j])
        current = scores[j]
    return chosen, path


@st.composite
def problems(draw, max_m: int = 14, max_n: int = 12):
    """Random (X, y) with tied values (integer-valued draws) and a planted signal."""
    m = draw(st.integers(6, max_m))
    n = draw(st.integers(1, max_n))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):
        X = rng.integers(0, 4, size=(m, n)).astype(np.float64)  # many ties between models
    else:
        X = rng.normal(size=(m, n))
    w = rng.normal(size=n) * (rng.random(n) < 0.3)
    y = X @ w + rng.normal(size=m)
    if np.ptp(y) == 0:
        y[0] += 1.0
    return X, y


def _selected(path, p: int = 0) -> list[int]:
    return [int(j) for j in path.selected[p] if j >= 0]


@pytest.mark.parametrize("backend", BACKENDS)
@given(problem=problems(), delta=st.sampled_from([0.0, 0.5, 2.0]))
@settings(max_examples=25)
def test_each_step_aic_matches_statsmodels(backend, problem, delta):
    X, y = problem
    path = forward_select(X, y, delta=delta, backend=backend)
    sel = _selected(path)
    assert path.aic0[0] == pytest.approx(sm_aic(X, y, []), rel=1e-10, abs=1e-8)
    for k in range(len(sel)):
        assert path.aic[0, k] == pytest.approx(sm_aic(X, y, sel[: k + 1]), rel=1e-7, abs=1e-6)
    assert np.isnan(path.aic[0, len(sel):]).all()
    assert len(set(sel)) == len(sel)


@pytest.mark.parametrize("backend", BACKENDS)
@given(problem=problems(max_m=12, max_n=10), delta=st.sampled_from([0.0, 1.0]))
@settings(max_examples=20)
def test_picks_are_brute_force_argmin_and_stop_rule_holds(backend, problem, delta):
    X, y = problem
    m = y.size
    if np.linalg.matrix_rank(np.column_stack([np.ones(m), X])) < X.shape[1] + 1:
        return  # collinear designs: statsmodels' pinv fits are not a reference; covered below
    path = forward_select(X, y, delta=delta, backend=backend)
    sel = _selected(path)
    chosen, ref_path = literal_forward(X, y, delta, cap=m - 2)
    # The paths agree unless two candidates tie to rounding (then either pick is an argmin).
    for k, j in enumerate(sel):
        if k >= len(chosen) or chosen[k] != j:
            ssr = {c: sm_fit(X, y, sel[:k] + [c]).ssr for c in range(X.shape[1]) if c not in sel[:k]}
            assert ssr[j] <= min(ssr.values()) * (1 + 1e-8) + 1e-12
            return
        assert path.aic[0, k] == pytest.approx(ref_path[k], rel=1e-7, abs=1e-6)
    assert len(sel) == len(chosen)
    # Stop rule: at the cap, or no remaining candidate beats the current AIC by more than delta.
    if len(sel) < m - 2:
        current = path.aic[0, len(sel) - 1] if sel else path.aic0[0]
        rest = [sm_aic(X, y, sel + [c]) for c in range(X.shape[1]) if c not in sel]
        assert all(not a < current - delta - 1e-7 for a in rest)


@given(problem=problems())
@settings(max_examples=15)
def test_backends_and_array_api_strict_agree(problem):
    X, y = problem
    ref = forward_select(X, y, backend="numpy")
    fast = forward_select(X, y, backend="numba")
    strict = forward_select(xps.asarray(X), xps.asarray(y))
    np.testing.assert_array_equal(ref.selected, fast.selected)
    np.testing.assert_array_equal(ref.selected, strict.selected)
    np.testing.assert_allclose(ref.aic, strict.aic, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicate_and_collinear_candidates_never_both_selected(backend):
    rng = np.random.default_rng(3)
    m = 15
    base = rng.normal(size=(m, 4))
    X = np.column_stack([
        base,
        base[:, 0],                          # exact duplicate of 0
        2.0 * base[:, 1] + 1.0,              # affine copy of 1 (collinear with the intercept)
        base[:, 2] - base[:, 3],             # linear combination
        np.full(m, 3.0),                     # constant column
        rng.normal(size=(m, 6)),
    ])
    y = base @ np.array([1.0, -2.0, 0.5, 0.5]) + 0.01 * rng.normal(size=m)
    for seed in range(5):
        priority = np.random.default_rng(seed).permutation(X.shape[1])
        path = forward_select(X, y, priority=priority, backend=backend)
        sel = _selected(path)
        assert not {0, 4} <= set(sel)
        assert not {1, 5} <= set(sel)
        assert not {2, 3, 6} <= set(sel)
        assert 7 not in sel
        design = np.column_stack([np.ones(m), X[:, sel]])
        assert np.linalg.matrix_rank(design) == len(sel) + 1
        for k in range(len(sel)):
            assert path.aic[0, k] == pytest.approx(sm_aic(X, y, sel[: k + 1]), rel=1e-7, abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_ties_go_to_the_smaller_priority(backend):
    # x and -x have bit-identical gains (IEEE rounding is sign-symmetric), so only priority decides.
    rng = np.random.default_rng(0)
    m = 12
    x = rng.normal(size=m)
    X = np.column_stack([rng.normal(size=(m, 3)), x, -x])
    y = 3 * x + 0.1 * rng.normal(size=m)
    first = forward_select(X, y, max_features=1, priority=np.array([2, 3, 4, 0, 1]), backend=backend)
    second = forward_select(X, y, max_features=1, priority=np.array([2, 3, 4, 1, 0]), backend=backend)
    assert first.selected[0, 0] == 3
    assert second.selected[0, 0] == 4
    both = forward_select(X, y, backend=backend)
    assert not {3, 4} <= set(_selected(both))


def test_identical_results_across_priorities_without_ties():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(20, 200))
    y = X[:, :3] @ np.array([1.0, 1.0, -1.0]) + 0.3 * rng.normal(size=20)
    ref = forward_select(X, y)
    for seed in range(3):
        other = forward_select(X, y, priority=np.random.default_rng(seed).permutation(200))
        np.testing.assert_array_equal(ref.selected, other.selected)
        np.testing.assert_array_equal(ref.aic, other.aic)


@pytest.mark.parametrize("backend", BACKENDS)
def test_row_masks_equal_fits_on_the_kept_rows(backend):
    rng = np.random.default_rng(11)
    m = 14
    X = rng.normal(size=(m, 60))
    y = X[:, :2] @ np.array([1.0, -1.0]) + 0.5 * rng.normal(size=m)
    masks = np.vstack([np.ones(m, bool), ~np.eye(m, dtype=bool)])
    batch = forward_select(X, y, row_masks=masks, backend=backend)
    for p in range(masks.shape[0]):
        keep = masks[p]
        alone = forward_select(X[keep], y[keep], backend=backend)
        k = int(alone.n_selected[0])
        assert batch.n_selected[p] == k
        np.testing.assert_array_equal(batch.selected[p, :k], alone.selected[0, :k])
        np.testing.assert_allclose(batch.aic[p, :k], alone.aic[0, :k], rtol=1e-8)
        assert batch.aic0[p] == pytest.approx(alone.aic0[0], rel=1e-12)
    assert (batch.n_selected <= np.where(masks.all(axis=1), m - 2, m - 3)).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_streamed_blocks_equal_in_memory(backend):
    rng = np.random.default_rng(5)
    m, n = 16, 300
    X = (rng.normal(size=(m, n)) + 2.0).astype(np.float32)
    y = np.exp(X[:, 7].astype(np.float64)) + 0.2 * rng.normal(size=m)
    ref = forward_select(X, y, exponentiate=True, backend=backend)
    onds = zarr.create_array(store=zarr.storage.MemoryStore(), shape=X.shape, chunks=(m, 64), dtype="float32")
    onds[:] = X
    streamed = forward_select(onds, y, exponentiate=True, cache=False, block_columns=37, backend=backend)
    np.testing.assert_array_equal(ref.selected, streamed.selected)
    np.testing.assert_allclose(ref.aic, streamed.aic, rtol=1e-10)
    expd = forward_select(np.exp(X.astype(np.float64)), y, backend=backend)
    np.testing.assert_array_equal(ref.selected, expd.selected)
    assert ref.selected[0, 0] == 7


def test_caps_and_degenerate_responses():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(10, 40))
    y = rng.normal(size=10)
    assert forward_select(X, y, max_features=3).n_selected[0] <= 3
    assert forward_select(X, y).n_selected[0] <= 8
    flat = forward_select(X, np.full(10, 0.5))
    assert flat.n_selected[0] == 0 and flat.aic0[0] == -np.inf
    empty = forward_select(np.zeros((10, 0)), y)
    assert empty.n_selected[0] == 0
    with pytest.raises(ValueError):
        forward_select(X, y[:5])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_columns_are_never_picked(backend):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(10, 20))
    y = X[:, 0] + X[:, 5] + 0.1 * rng.normal(size=10)
    X[3, 0] = np.nan
    X[2, 5] = np.inf
    sel = _selected(forward_select(X, y, backend=backend))
    assert sel and 0 not in sel and 5 not in sel


@given(problem=problems())
@settings(max_examples=20)
def test_ols_fit_matches_statsmodels(problem):
    X, y = problem
    k = min(X.shape[1], y.size - 2)
    Xk = X[:, :k]
    if np.linalg.matrix_rank(np.column_stack([np.ones(y.size), Xk])) < k + 1:
        return
    ref = sm.OLS(y, sm.add_constant(Xk, has_constant="add")).fit()
    fit = ols_fit(Xk, y)
    np.testing.assert_allclose(np.r_[fit.intercept, fit.coefficient], ref.params, rtol=1e-6, atol=1e-8)
    assert fit.r2 == pytest.approx(ref.rsquared, rel=1e-8, abs=1e-10)
    assert fit.r2_adj == pytest.approx(ref.rsquared_adj, rel=1e-8, abs=1e-10)
    assert fit.aic == pytest.approx(ref.aic, rel=1e-8, abs=1e-8)
    strict = ols_fit(xps.asarray(Xk), xps.asarray(y))
    assert strict.aic == pytest.approx(fit.aic, rel=1e-12, abs=1e-12)


def test_ols_aic_formula():
    assert ols_aic(2.0, 10, 3) == pytest.approx(10 * np.log(0.2) + 10 * (1 + np.log(2 * np.pi)) + 6)
    assert ols_aic(0.0, 10, 3) == -np.inf
