"""Selection stage: AIC and Lasso signatures, LOO-CV, memory plan, output store, CLI (issue 4)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import xarray as xr
from sklearn.linear_model import Lasso
from sklearn.preprocessing import StandardScaler

from bsig_array.errors import BsigError
from bsig_array.io.screen_output import benchmark_candidates, open_screen
from bsig_array.io.signatures import attach_contexts, write_signatures
from bsig_array.kernels.forward import forward_select
from bsig_array.options import parse_memory
from bsig_array.runtime.memory import PROCESS_OVERHEAD
from bsig_array.runtime.run import RunSpec
from bsig_array.stages.select import (
    _GatheredColumns,
    select_benchmark,
    select_signatures,
)
from bsig_array.stages.select_cost import (
    RUNTIME_OVERHEAD,
    SelectPlan,
    plan_selection,
    select_task_bytes,
)

# --------------------------------------------------------------------------- fixtures


def make_screen(nll: np.ndarray, tails: dict[str, dict[str, tuple[list[int], list[int]]]], token_ids: np.ndarray,
                models: list[str]) -> xr.Dataset:
    """A screen output (README format) for ``nll`` (m, N) with the given per-method, per-benchmark tails.

    ``tails[method][benchmark] = (low positions, high positions)`` index the columns of ``nll``.
    """
    methods = list(tails)
    benchmarks = list(tails[methods[0]])
    k = max(len(t) for meth in methods for lo_hi in tails[meth].values() for t in lo_hi)
    token = np.full((len(methods), len(benchmarks), 2, k), -1, dtype=np.int64)
    for a, meth in enumerate(methods):
        for b, bench in enumerate(benchmarks):
            for t, pos in enumerate(tails[meth][bench]):
                ids = np.sort(token_ids[list(pos)])
                token[a, b, t, : ids.size] = ids
    union = np.unique(token[token >= 0])
    where = np.searchsorted(token_ids, union)
    return xr.Dataset(
        {
            "candidate_token": (("coefficient", "benchmark", "tail", "rank"), token),
            "candidate_score": (("coefficient", "benchmark", "tail", "rank"), np.zeros(token.shape)),
            "threshold": (("coefficient", "benchmark", "tail"), np.zeros(token.shape[:3])),
            "candidate_nll": (("model", "candidate"), nll[:, where].astype(np.float32)),
        },
        coords={"coefficient": methods, "benchmark": benchmarks, "tail": ["low", "high"], "model": models,
                "candidate": union},
        attrs={"alpha": 0.01, "ties": "average", "n_tokens": nll.shape[1], "k": k},
    )


def make_problem(m: int = 14, n_tokens: int = 120, n_bench: int = 3, per_tail: int = 15, seed: int = 0):
    """Random NLLs (m, n_tokens) and scores planted on a few tokens per benchmark."""
    rng = np.random.default_rng(seed)
    nll = rng.uniform(1.0, 3.0, size=(m, n_tokens)).astype(np.float32)
    token_ids = np.arange(n_tokens, dtype=np.int64) * 7 + 3  # ids are not positions
    models = [f"model-{i:02d}" for i in range(m)]
    benchmarks = [f"bench{b}" for b in range(n_bench)]
    tails: dict[str, dict] = {"thrush": {}, "preselect": {}}
    scores = np.empty((m, n_bench))
    for b, bench in enumerate(benchmarks):
        pos = rng.permutation(n_tokens)
        tails["thrush"][bench] = (list(pos[:per_tail]), list(pos[per_tail : 2 * per_tail - 3]))  # uneven tails
        tails["preselect"][bench] = (list(pos[5 : 5 + per_tail]), list(pos[40 : 40 + per_tail]))
        ppl = np.exp(nll[:, pos[:3]].astype(np.float64))
        scores[:, b] = ppl @ np.array([0.05, -0.03, 0.02]) + 0.02 * rng.normal(size=m)
    score = xr.DataArray(scores, dims=("model", "benchmark"), coords={"model": models, "benchmark": benchmarks},
                         name="score")
    return make_screen(nll, tails, token_ids, models), score


def sm_fit(X: np.ndarray, y: np.ndarray):
    return sm.OLS(y, sm.add_constant(X, has_constant="add") if X.shape[1] else np.ones((y.size, 1))).fit()


def literal_forward(X: np.ndarray, y: np.ndarray, cap: int, delta: float = 0.0) -> list[int]:
    """Algorithm 4 with statsmodels refits of every remaining candidate at every step."""
    chosen: list[int] = []
    current = sm_fit(X[:, []], y).aic
    while len(chosen) < cap:
        aic = {j: sm_fit(X[:, chosen + [j]], y).aic for j in range(X.shape[1]) if j not in chosen}
        j = min(aic, key=aic.get)
        if not aic[j] < current - delta:
            break
        chosen.append(j)
        current = aic[j]
    return chosen


def candidate_matrix(screen: xr.Dataset, bench: str, method: str = "thrush") -> tuple[np.ndarray, np.ndarray]:
    tokens, cols = benchmark_candidates(screen, bench, method)
    return tokens, np.asarray(screen["candidate_nll"].values[:, cols], dtype=np.float64)


# --------------------------------------------------------------------------- AIC


def test_aic_path_coefficients_and_fit_match_statsmodels():
    screen, score = make_problem()
    sig = select_signatures(screen, score, loocv=False)
    assert sig.attrs["method"] == "aic" and sig.attrs["covariate"] == "perplexity"
    for bench in sig["benchmark"].values:
        tokens, nll = candidate_matrix(screen, str(bench))
        assert sig["n_candidates"].sel(benchmark=bench) == tokens.size == 27
        row = sig.sel(benchmark=bench)
        k = int(row["n_selected"])
        chosen = row["signature_token"].values
        assert (chosen[k:] == -1).all() and np.isin(chosen[:k], tokens).all()
        X = np.exp(nll[:, np.searchsorted(tokens, chosen[:k])])
        y = score.sel(benchmark=bench).values
        for step in range(k):
            assert row["aic"].values[step] == pytest.approx(sm_fit(X[:, : step + 1], y).aic, rel=1e-7, abs=1e-6)
        ref = sm_fit(X, y)
        np.testing.assert_allclose(np.r_[row["intercept"].values, row["coefficient"].values[:k]], ref.params,
                                   rtol=1e-5, atol=1e-8)
        assert float(row["r2_adj"]) == pytest.approx(ref.rsquared_adj, rel=1e-8)
        assert float(row["r2"]) == pytest.approx(ref.rsquared, rel=1e-8)
        assert float(row["aic_null"]) == pytest.approx(sm_fit(X[:, :0], y).aic, rel=1e-10)


@pytest.mark.parametrize("covariate", ["perplexity", "nll"])
def test_picks_equal_literal_statsmodels_loop(covariate):
    screen, score = make_problem(m=10, per_tail=8, n_bench=2, seed=3)
    sig = select_signatures(screen, score, loocv=False, covariate=covariate, delta=0.5)
    for bench in sig["benchmark"].values:
        tokens, nll = candidate_matrix(screen, str(bench))
        X = np.exp(nll) if covariate == "perplexity" else nll
        expected = tokens[literal_forward(X, score.sel(benchmark=bench).values, cap=8, delta=0.5)]
        row = sig.sel(benchmark=bench)
        np.testing.assert_array_equal(row["signature_token"].values[: int(row["n_selected"])], expected)


def test_screen_method_and_max_features():
    screen, score = make_problem()
    sig = select_signatures(screen, score, screen_method="preselect", max_features=2, loocv=False)
    assert (sig["n_selected"] <= 2).all() and sig.sizes["step"] == 2
    for bench in sig["benchmark"].values:
        tokens, _ = benchmark_candidates(screen, str(bench), "preselect")
        chosen = sig["signature_token"].sel(benchmark=bench).values
        assert np.isin(chosen[chosen >= 0], tokens).all()


def test_results_identical_across_seeds_without_ties():
    screen, score = make_problem(seed=5)
    runs = [select_signatures(screen, score, loocv=False, run=RunSpec.build(seed=s)) for s in (0, 1, 2)]
    for other in runs[1:]:
        xr.testing.assert_identical(runs[0].drop_attrs(), other.drop_attrs())


def _attrs_without_record(ds: xr.Dataset) -> dict:
    from bsig_array.io.provenance import PROVENANCE_ATTR

    return {k: v for k, v in ds.attrs.items() if k != PROVENANCE_ATTR}


def test_exact_ties_are_decided_by_the_seed():
    # Two tokens with identical NLL columns are the best single predictor: only the shuffle decides.
    screen, score = make_problem(m=12, n_bench=1, seed=2)
    nll = screen["candidate_nll"].values.copy()
    tokens, cols = benchmark_candidates(screen, "bench0", "thrush")
    nll[:, cols[1]] = nll[:, cols[0]]
    screen["candidate_nll"] = (("model", "candidate"), nll)
    y = np.exp(nll[:, cols[0]].astype(np.float64))
    score = score.copy(data=y[:, None])
    firsts = set()
    for seed in range(8):
        sig = select_signatures(screen, score, loocv=False, max_features=3, run=RunSpec.build(seed=seed))
        again = select_signatures(screen, score, loocv=False, max_features=3, run=RunSpec.build(seed=seed))
        # identical except the provenance record, whose creation time may tick between the runs
        xr.testing.assert_identical(sig.drop_attrs(deep=False).assign_attrs(_attrs_without_record(sig)),
                                    again.drop_attrs(deep=False).assign_attrs(_attrs_without_record(again)))
        chosen = sig["signature_token"].values[0]
        assert not {tokens[0], tokens[1]} <= set(chosen.tolist())
        firsts.add(int(chosen[0]))
    assert firsts == {int(tokens[0]), int(tokens[1])}


def test_duplicate_candidates_across_tails_and_collinear_columns_do_not_crash():
    screen, score = make_problem(m=10, n_bench=2, seed=4)
    nll = screen["candidate_nll"].values.copy()
    nll[:, 1::3] = nll[:, 0::3][:, : nll[:, 1::3].shape[1]]  # many duplicate columns
    nll[:, 2] = 2.5  # a constant column
    screen["candidate_nll"] = (("model", "candidate"), nll)
    sig = select_signatures(screen, score, covariate="nll")
    for bench in sig["benchmark"].values:
        row = sig.sel(benchmark=bench)
        k = int(row["n_selected"])
        tokens, X = candidate_matrix(screen, str(bench))
        Xs = X[:, np.searchsorted(tokens, row["signature_token"].values[:k])]
        assert np.linalg.matrix_rank(np.column_stack([np.ones(10), Xs])) == k + 1
    assert np.isfinite(sig["loocv_r2"]).all()


# --------------------------------------------------------------------------- LOO-CV


def test_loocv_equals_literal_loop():
    screen, score = make_problem(m=9, per_tail=6, n_bench=2, seed=8)
    sig = select_signatures(screen, score, loocv=True, delta=1.0)
    for bench in sig["benchmark"].values:
        _, nll = candidate_matrix(screen, str(bench))
        X = np.exp(nll)
        y = score.sel(benchmark=bench).values
        pred = np.empty(y.size)
        for i in range(y.size):
            keep = np.arange(y.size) != i
            chosen = literal_forward(X[keep], y[keep], cap=y.size - 3, delta=1.0)
            fit = sm_fit(X[keep][:, chosen], y[keep])
            pred[i] = fit.params @ np.r_[1.0, X[i, chosen]]
        expected = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
        assert float(sig["loocv_r2"].sel(benchmark=bench)) == pytest.approx(expected, rel=1e-6, abs=1e-9)


# --------------------------------------------------------------------------- Lasso


def sklearn_lasso(X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The paper repo's recipe, written out: standardize, centre y, Lasso without intercept."""
    scaler = StandardScaler().fit(X)
    coef = Lasso(alpha=alpha, fit_intercept=False).fit(scaler.transform(X), y - y.mean()).coef_
    support = np.flatnonzero(coef)
    raw = coef[support] / scaler.scale_[support]
    return support, raw, y.mean() - raw @ scaler.mean_[support]


def test_lasso_equals_sklearn_directly_with_loocv():
    screen, score = make_problem(m=12, n_bench=2, seed=6)
    alpha = 2e-3
    sig = select_signatures(screen, score, method="lasso", lasso_alpha=alpha)
    assert sig.attrs["method"] == "lasso" and sig.attrs["lasso_alpha"] == alpha
    for bench in sig["benchmark"].values:
        tokens, nll = candidate_matrix(screen, str(bench))
        X = np.exp(nll)
        y = score.sel(benchmark=bench).values
        support, raw, intercept = sklearn_lasso(X, y, alpha)
        row = sig.sel(benchmark=bench)
        k = int(row["n_selected"])
        assert k == support.size > 0
        got = dict(zip(row["signature_token"].values[:k].tolist(), row["coefficient"].values[:k]))
        want = dict(zip(tokens[support].tolist(), raw))
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[t] for t in want], list(want.values()), rtol=1e-10)
        assert float(row["intercept"]) == pytest.approx(intercept, rel=1e-10)
        chosen = X[:, np.searchsorted(tokens, row["signature_token"].values[:k])]
        assert np.all(np.diff(np.abs(row["coefficient"].values[:k] * chosen.std(axis=0))) <= 1e-12)  # |coef| order
        pred = np.empty(y.size)
        for i in range(y.size):
            keep = np.arange(y.size) != i
            s, c, b0 = sklearn_lasso(X[keep], y[keep], alpha)
            pred[i] = b0 + X[i, s] @ c
        expected = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
        assert float(row["loocv_r2"]) == pytest.approx(expected, rel=1e-10)


# --------------------------------------------------------------------------- errors


def test_constant_benchmark_is_a_clear_error():
    screen, score = make_problem()
    score = score.copy()
    score[:, 1] = 0.5
    with pytest.raises(BsigError, match="same score"):
        select_signatures(screen, score)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda s, y: (s, y.isel(model=slice(1, None))), "not in the performance"),
        (lambda s, y: (s, y.isel(benchmark=[0, 1])), "no scores"),
        (lambda s, y: (s.sel(coefficient=["thrush"]), y), "no 'preselect' tails"),
        (lambda s, y: (s.drop_vars("candidate_nll"), y), "candidate_nll"),
        (lambda s, y: (s.isel(candidate=slice(1, None)), y), "inconsistent"),
    ],
)
def test_bad_inputs_raise_one_line_errors(change, match):
    screen, score = make_problem()
    screen, score = change(screen, score)
    with pytest.raises(BsigError, match=match) as info:
        select_signatures(screen, score, screen_method="preselect")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kw", [dict(delta=-1.0), dict(max_features=0), dict(method="ridge"), dict(covariate="x")])
def test_bad_options(kw):
    screen, score = make_problem()
    with pytest.raises(BsigError):
        select_signatures(screen, score, **kw)


def test_a_bad_run_setting_is_refused_where_it_enters():
    with pytest.raises(BsigError, match=r"^unknown device \(--device\) 'tpu'; use auto, cpu or gpu$"):
        RunSpec.build(device="tpu")


def test_device_gpu_without_a_gpu_is_one_line_and_auto_runs_on_the_cpu():
    from bsig_array.errors import PlanError
    from bsig_array.runtime.device import cupy_available

    if cupy_available():
        pytest.skip("a GPU is visible")
    screen, score = make_problem(n_bench=1)
    with pytest.raises(PlanError, match="--device gpu needs CuPy") as info:
        select_signatures(screen, score, loocv=False, run=RunSpec.build(device="gpu"))
    assert "\n" not in str(info.value)
    auto = select_signatures(screen, score, loocv=False, run=RunSpec.build(device="auto"))
    xr.testing.assert_identical(auto.drop_attrs(), select_signatures(screen, score, loocv=False).drop_attrs())


# --------------------------------------------------------------------------- memory plan and streaming


def test_plan_prefers_memory_then_batches_then_streams_then_spills_then_refuses():
    m, n = 32, 340_000
    roomy = plan_selection(parse_memory("64GiB"), m, n, n_tasks=88)
    assert roomy.cache and roomy.fold_batch == m + 1 and roomy.workers >= 1 and not roomy.spill
    tight = plan_selection(parse_memory("700MiB"), m, n, n_tasks=88)
    assert tight.workers == 1 and tight.cache and tight.fold_batch < m + 1
    # streamed: the 33 fits' state does not fit in memory, so it is spilled and a pass still serves 16 fits
    spilled = plan_selection(parse_memory("520MiB"), m, n, n_tasks=88)
    assert not spilled.cache and spilled.spill and spilled.fold_batch == 16 and spilled.workers == 1
    assert "state spilled to disk" in spilled.describe()
    alone = plan_selection(parse_memory("520MiB"), m, n, loocv=False)  # one fit's state fits beside the block
    assert not alone.cache and not alone.spill and alone.fold_batch == 1
    for plan in (roomy, tight, spilled, alone):
        assert plan.projected_bytes <= plan.memory_limit
        assert plan.task_bytes + PROCESS_OVERHEAD + RUNTIME_OVERHEAD <= plan.memory_limit
    with pytest.raises(BsigError, match="raise --memory-limit"):
        plan_selection(parse_memory("500MiB"), m, n)


def test_spilled_task_grows_only_by_the_candidate_lists():
    # Streamed and spilled, a task's projection grows with n only by the candidate lists (ids, positions,
    # priority and their reading), never by the fits' state or the columns: any n the lists allow runs.
    m, n, chunk = 32, 10**6, 32 * 65536 * 4
    spilled = [select_task_bytes(m, k * n, 16, False, "aic", spill=True, chunk_bytes=chunk) for k in (1, 2, 4)]
    assert spilled[1] - spilled[0] == n * 96 and spilled[2] - spilled[1] == 2 * n * 96
    in_memory = [select_task_bytes(m, k * n, 16, False, "aic", chunk_bytes=chunk) for k in (1, 2)]
    assert in_memory[1] - in_memory[0] == n * (96 + 8 * (2 + 2 * 16))
    plan = plan_selection(parse_memory("2GiB"), m, 10**7, chunk_bytes=chunk)  # the scale: 1e7 candidates
    assert plan.spill and plan.fold_batch == 16 and plan.projected_bytes <= plan.memory_limit


def test_refusal_names_the_storage_chunk():
    with pytest.raises(BsigError, match=r"storage chunks of 3.00 GiB.* raise --memory-limit"):
        plan_selection(parse_memory("2GiB"), 32, 1000, chunk_bytes=3 * 2**30)


@pytest.mark.parametrize("spill", [False, True])
def test_streamed_selection_from_zarr_equals_in_memory(tmp_path, spill):
    screen, score = make_problem(m=11, n_bench=1, seed=9)
    screen.to_zarr(tmp_path / "s.zarr", zarr_format=3, encoding={"candidate_nll": {"chunks": (11, 4)}})
    disk = open_screen(tmp_path / "s.zarr")
    tokens, cols = benchmark_candidates(disk, "bench0", "thrush")
    y = score.sel(benchmark="bench0").values
    X = _GatheredColumns(disk["candidate_nll"], cols, span_columns=1)  # one 4-column chunk per read
    stream = select_benchmark(X, y, plan=SelectPlan(1, False, 3, 0, 0, spill=spill))
    memory = select_benchmark(np.asarray(screen["candidate_nll"].values[:, cols]), y)
    np.testing.assert_array_equal(stream.columns, memory.columns)
    np.testing.assert_allclose(stream.aic, memory.aic, rtol=1e-10)
    assert stream.loocv_r2 == pytest.approx(memory.loocv_r2, rel=1e-9)


def test_spilled_state_gives_bit_identical_paths():
    # The spill moves the per-candidate state to a file; the arithmetic is the same, so every pick and
    # every AIC equals the in-memory run exactly, for the full fit and all folds, on both backends.
    rng = np.random.default_rng(12)
    m, n = 15, 700
    X = rng.uniform(1.0, 4.0, size=(m, n)).astype(np.float32)
    X[:, 5::7] = X[:, 4::7][:, : X[:, 5::7].shape[1]]  # duplicate columns: collinear drops read the spill too
    y = np.exp(X[:, [3, 50]].astype(np.float64)) @ [1.0, -0.7] + 0.05 * rng.normal(size=m)
    masks = np.vstack([np.ones((1, m), dtype=bool), ~np.eye(m, dtype=bool)])
    prio = rng.permutation(n)
    for backend in ("numba", "numpy"):
        kw = dict(row_masks=masks, priority=prio, exponentiate=True, cache=False, block_columns=64, backend=backend)
        memory, spilled = forward_select(X, y, **kw), forward_select(X, y, spill=True, **kw)
        assert (memory.n_selected > 1).all()
        np.testing.assert_array_equal(spilled.selected, memory.selected)
        np.testing.assert_array_equal(spilled.aic, memory.aic)
        np.testing.assert_array_equal(spilled.aic0, memory.aic0)


def test_spill_file_round_trips_the_state():
    # Every access the kernel makes to the per-candidate state (block records, single entries, the
    # write-back of the norms and the "never again" mark) reads back what an in-memory state holds.
    from bsig_array.kernels.forward import _State

    rng = np.random.default_rng(5)
    P, n, bc = 3, 23, 5
    mu, scale, norm2, floor = rng.random(n), rng.random(n), rng.random((P, n)), rng.random((P, n))
    with _State(np, P, n, bc, spill=False) as memory, _State(np, P, n, bc, spill=True) as spilled:
        for a in range(0, n, bc):
            b = min(a + bc, n)
            for state in (memory, spilled):
                state.put(a, b, mu[a:b], scale[a:b], norm2[:, a:b], floor[:, a:b])
        for state in (memory, spilled):
            rec = state.load(5, 10)
            rec.norm2 -= 0.5
            state.save_norm2(5, 10, rec)
            state.kill(2, 21)
        for a in range(0, n, bc):
            b = min(a + bc, n)
            want, got = memory.load(a, b), spilled.load(a, b)
            for field in ("mu", "scale", "norm2", "floor"):
                np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
        assert spilled.load(20, 23).norm2[2, 1] == 0.0 and spilled.load(5, 10).norm2[0, 0] == norm2[0, 5] - 0.5
        for j in (0, 7, 22):
            assert [float(v[0]) for v in spilled.stats_at(j)] == [mu[j], scale[j]]
            assert spilled.floor_at(1, j) == floor[1, j]


@pytest.mark.parametrize("span", [1, 9, 1 << 16])
def test_gathered_columns_read_chunk_by_chunk(tmp_path, span):
    # Sorted candidate positions with gaps and consecutive runs, read from 4-column chunks one span at a
    # time, must equal plain indexing for blocks, index arrays (unsorted, repeated) and row slices,
    # from dask, from a lazily indexed store, and from memory; at most one span is held.
    rng = np.random.default_rng(4)
    m, size = 5, 103
    values = rng.random((m, size)).astype(np.float32)
    xr.Dataset({"candidate_nll": (("model", "candidate"), values)}, coords={"candidate": np.arange(size)}).to_zarr(
        tmp_path / "c.zarr", zarr_format=3, encoding={"candidate_nll": {"chunks": (m, 4)}})
    cols = np.unique(np.r_[rng.choice(size, 30, replace=False), np.arange(40, 55)])
    sources = {
        "dask": xr.open_zarr(tmp_path / "c.zarr")["candidate_nll"],
        "lazy": xr.open_zarr(tmp_path / "c.zarr", chunks=None)["candidate_nll"],
        "memory": xr.DataArray(values, dims=("model", "candidate")),
    }
    for name, nll in sources.items():
        X = _GatheredColumns(nll, cols, span_columns=span)
        for a, b in [(0, 7), (7, 8), (8, cols.size), (0, cols.size), (3, 3)]:
            np.testing.assert_array_equal(X[:, a:b], values[:, cols[a:b]], err_msg=name)
        run = int(np.searchsorted(cols, 40))  # cols[run:run + 15] are the consecutive positions 40..54
        for idx in (np.array([30, 2, 17, 2]), np.array([run, run, run + 2]), np.arange(cols.size)[::-1]):
            np.testing.assert_array_equal(X[:, idx], values[:, cols[idx]], err_msg=name)
        np.testing.assert_array_equal(X[1:3, 4:9], values[1:3, cols[4:9]], err_msg=name)
        if name != "memory":
            assert X._span is not None and X._span[2].shape[1] <= max(span, 4)


def test_parallel_workers_equal_serial():
    screen, score = make_problem(n_bench=4, seed=10)
    serial = select_signatures(screen, score, run=RunSpec.build(workers=1))
    parallel = select_signatures(screen, score, run=RunSpec.build(workers=2, memory_limit="4GiB"))
    xr.testing.assert_identical(serial.drop_attrs(), parallel.drop_attrs())


# --------------------------------------------------------------------------- output, contexts and CLI


def test_write_roundtrip_and_contexts(tmp_path):
    from bsig_array.stages.corpus import build_corpus

    docs = [" ".join(f"d{d}w{i}" for i in range(40 + d)) for d in range(5)]
    build_corpus(docs, tmp_path / "c.zarr", sample_rate=1.0, context_pieces=30)
    words = [(d, i) for d in range(5) for i in range(40 + d)]  # feature id -> (doc, piece)
    screen, score = make_problem(n_tokens=30, per_tail=8)  # token ids 3 + 7i < 205 = features
    sig = attach_contexts(select_signatures(screen, score, loocv=False), tmp_path / "c.zarr")
    out = write_signatures(sig, tmp_path / "g.zarr")
    back = xr.open_zarr(out)
    np.testing.assert_array_equal(back["signature_token"].values, sig["signature_token"].values)
    for t, ctx, tgt in zip(back["signature_token"].values.ravel(), back["context"].values.ravel(),
                           back["target"].values.ravel()):
        if t < 0:
            assert ctx == "" and tgt == ""
            continue
        d, i = words[t]
        assert tgt == f"d{d}w{i}"
        assert ctx == " ".join(f"d{d}w{j}" for j in range(max(0, i - 30), i))
    with pytest.raises(BsigError, match="already exists"):
        write_signatures(sig, tmp_path / "g.zarr")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BSIG_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "bsig_array.cli.main", "select", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_cli_writes_signatures_and_reports_errors_in_one_line(tmp_path):
    screen, score = make_problem(m=10, n_bench=2)
    screen.to_zarr(tmp_path / "s.zarr", zarr_format=3)
    table = score.to_pandas()
    table.index.name = "model"
    table.reset_index().to_csv(tmp_path / "y.csv", index=False)
    done = run_cli("--screen", str(tmp_path / "s.zarr"), "--performance", str(tmp_path / "y.csv"),
                   "--out", str(tmp_path / "g.zarr"), "--max-features", "3")
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    sig = xr.open_zarr(tmp_path / "g.zarr")
    assert (sig["n_selected"].values <= 3).all() and np.isfinite(sig["loocv_r2"].values).all()
    assert sig.attrs["max_features"] == 3

    bad = pd.read_csv(tmp_path / "y.csv")
    bad["bench1"] = 0.3
    bad.to_csv(tmp_path / "bad.csv", index=False)
    failed = run_cli("--screen", str(tmp_path / "s.zarr"), "--performance", str(tmp_path / "bad.csv"),
                     "--out", str(tmp_path / "g2.zarr"))
    assert failed.returncode != 0
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bsig: error:") and "bench1" in lines[0]
    assert not (tmp_path / "g2.zarr").exists()


RSS_SCRIPT = """
import sys
from bsig_array.io.scores import load_performance
from bsig_array.io.screen_output import open_screen
from bsig_array.runtime.run import RunSpec
from bsig_array.stages.select import select_signatures
screen = open_screen(sys.argv[1])
score = load_performance(sys.argv[2])
sig = select_signatures(screen, score, run=RunSpec.build(memory_limit=sys.argv[3], workers=2))
assert (sig["n_selected"] > 0).all()
print(sig.attrs["plan"])
from bsig_array.runtime.memory import peak_rss
print(peak_rss())
"""


def test_peak_rss_stays_within_the_memory_limit(tmp_path):
    # 2 benchmarks x 1.6e5 candidates x 32 models with LOO-CV: all 33 fits at once do not fit in
    # 620 MiB, so the plan batches them; the process's peak RSS must stay within the limit.
    m, n, n_bench = 32, 160_000, 2
    rng = np.random.default_rng(0)
    nll = rng.uniform(1.0, 4.0, size=(m, n)).astype(np.float32)
    half = n // 2
    tails = {"thrush": {f"b{b}": (list(range(half)), list(range(half, n))) for b in range(n_bench)}}
    models = [f"m{i:02d}" for i in range(m)]
    screen = make_screen(nll, tails, np.arange(n, dtype=np.int64), models)
    screen.to_zarr(tmp_path / "s.zarr", zarr_format=3, encoding={"candidate_nll": {"chunks": (m, 16384)}})
    y = np.exp(nll[:, :2].astype(np.float64)) + 0.1 * rng.normal(size=(m, 2))
    pd.DataFrame({"model": models, "b0": y[:, 0], "b1": y[:, 1]}).to_csv(tmp_path / "y.csv", index=False)
    limit = 620 * 2**20
    done = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(tmp_path / "s.zarr"), str(tmp_path / "y.csv"),
                           str(limit)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    plan, peak = done.stdout.strip().splitlines()[-2:]
    assert "in memory" in plan and "33 fits" not in plan, plan  # the folds were batched
    assert int(peak) <= limit, f"peak RSS {int(peak) / 2**20:.0f} MiB > limit; plan: {plan}"
