"""Signature and performance overlap against literal implementations (loops + scipy.stats.spearmanr)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import scipy.stats
import xarray as xr
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from bsig_array.errors import BsigError
from bsig_array.io.overlap_file import load_overlap, write_overlap
from bsig_array.io.perplexity_store.reader import open_store
from bsig_array.io.perplexity_store.writer import create_store
from bsig_array.stages.overlap import (
    compute_overlaps,
    gather_columns,
    pool_moments,
    spearman_matrix,
    token_positions,
)


def make_inputs(seed: int, m: int = 6, n: int = 40, B: int = 4, steps: int = 5, ties: bool = True):
    """Random NLLs (with ties), token ids (shuffled, not contiguous), signatures and scores."""
    rng = np.random.default_rng(seed)
    nll = rng.integers(1, 6, size=(m, n)).astype(np.float64) if ties else rng.gamma(2.0, 1.0, size=(m, n))
    token = rng.permutation(np.arange(n) * 3 + 7)
    sig = np.full((B, steps), -1, dtype=np.int64)
    for b in range(B):
        k = int(rng.integers(1, steps + 1))
        sig[b, :k] = rng.choice(token, size=k, replace=False)
    score = rng.integers(0, 5, size=(m, B)).astype(np.float64)
    score[0, :] += 10.0  # no constant column
    models = [f"m{i}" for i in range(m)]
    benchmarks = [f"b{j}" for j in range(B)]
    nll_da = xr.DataArray(nll.astype(np.float32), dims=("model", "token"), coords={"model": models, "token": token})
    signatures = xr.Dataset(
        {"signature_token": (("benchmark", "step"), sig)},
        coords={"benchmark": benchmarks},
        attrs={"covariate": "nll"},
    )
    score_da = xr.DataArray(score, dims=("model", "benchmark"), coords={"model": models, "benchmark": benchmarks}, name="score")
    return nll_da, signatures, score_da


def literal_signature_overlap(nll: xr.DataArray, signatures: xr.Dataset, covariate: str, population: str):
    """Paper §3.3 with loops: z-score per model over the population, mean per signature, Spearman."""
    f = math.exp if covariate == "perplexity" else float
    tokens = [int(t) for t in nll["token"].values]
    col = {t: j for j, t in reversed(list(enumerate(tokens)))}
    values = nll.values.astype(np.float64)
    sets = {str(b): [int(t) for t in row if t >= 0] for b, row in zip(signatures.benchmark.values, signatures.signature_token.values)}
    union = sorted({t for s in sets.values() for t in s})
    pop_cols = [col[t] for t in union] if population == "signatures" else list(range(len(tokens)))
    profiles = {}
    for b, s in sets.items():
        prof = []
        for i in range(values.shape[0]):
            pop = [f(values[i, j]) for j in pop_cols]
            mu, sd = statistics.fmean(pop), statistics.pstdev(pop)
            prof.append(statistics.fmean((f(values[i, col[t]]) - mu) / sd for t in s))
        # ties (e.g. models with equal values) are exact only up to float noise: compare at 1e-9
        profiles[b] = [round(v, 9) for v in prof]
    names = list(sets)
    out = np.full((len(names), len(names)), np.nan)
    for a, na in enumerate(names):
        for b, nb in enumerate(names):
            if np.ptp(profiles[na]) > 0 and np.ptp(profiles[nb]) > 0:
                out[a, b] = scipy.stats.spearmanr(profiles[na], profiles[nb]).statistic
    return out


def literal_performance_overlap(score: xr.DataArray):
    y = score.transpose("model", "benchmark").values
    B = y.shape[1]
    rho = np.empty((B, B))
    p = np.empty((B, B))
    for a in range(B):
        for b in range(B):
            res = scipy.stats.spearmanr(y[:, a], y[:, b])
            rho[a, b] = res.statistic
            p[a, b] = 0.0 if a == b else res.pvalue
    return rho, p


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), covariate=st.sampled_from(["nll", "perplexity"]), population=st.sampled_from(["signatures", "pool"]))
def test_signature_overlap_matches_literal(seed, covariate, population):
    nll, signatures, score = make_inputs(seed)
    ds = compute_overlaps(signatures, nll, score, population=population, covariate=covariate, signature_mode="paper")
    expected = literal_signature_overlap(nll, signatures, covariate, population)
    np.testing.assert_allclose(ds["signature"].values, expected, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert ds["signature"].attrs["population"] == population


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_performance_overlap_matches_literal(seed):
    nll, signatures, score = make_inputs(seed, B=5)
    ds = compute_overlaps(signatures, nll, score)
    rho, p = literal_performance_overlap(score)
    np.testing.assert_allclose(ds["performance"].values, rho, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ds["performance_p"].values, p, rtol=1e-9, atol=1e-12)
    assert "semantic" not in ds and ds.attrs["levels"] == "signature,performance"  # no questions, no semantic level


def test_signature_p_values_match_spearmanr():
    nll, signatures, score = make_inputs(3, m=9, B=3, ties=False)
    ds = compute_overlaps(signatures, nll, score, covariate="nll")
    rho, p = spearman_matrix(np.column_stack([np.arange(9.0), np.arange(9.0) ** 2 % 7, -np.arange(9.0)]))
    res = scipy.stats.spearmanr(np.arange(9.0), np.arange(9.0) ** 2 % 7)
    assert rho[0, 1] == pytest.approx(res.statistic) and p[0, 1] == pytest.approx(res.pvalue)
    assert rho[0, 2] == pytest.approx(-1.0)
    assert np.isfinite(ds["signature_p"].values).all()


def test_model_order_is_matched_by_name():
    nll, signatures, score = make_inputs(5)
    shuffled = score.isel(model=[3, 1, 0, 5, 2, 4])
    a = compute_overlaps(signatures, nll, score)
    b = compute_overlaps(signatures, nll, shuffled)
    np.testing.assert_array_equal(a["performance"].values, b["performance"].values)
    with pytest.raises(BsigError, match="missing"):
        compute_overlaps(signatures, nll, score.isel(model=slice(0, 5)))


def test_empty_signature_gives_nan_row_and_unknown_token_is_an_error():
    nll, signatures, score = make_inputs(7)
    sig = signatures.copy(deep=True)
    sig["signature_token"][1, :] = -1
    ds = compute_overlaps(sig, nll, score)
    assert np.isnan(ds["signature"].values[1]).all() and ds["n_signature_tokens"].values[1] == 0
    assert np.isfinite(ds["signature"].values[0, 0])
    sig["signature_token"][0, 0] = 10**9
    with pytest.raises(BsigError, match="not in the perplexity store"):
        compute_overlaps(sig, nll, score)


def test_streaming_lookup_and_pool_moments_on_a_real_store(tmp_path):
    """Unsorted token ids across several Zarr chunks: positions, gathered columns and pool moments."""
    nll, signatures, score = make_inputs(11, n=50)
    writer = create_store(tmp_path / "p.zarr", list(nll.model.values), 50, chunk_tokens=16, with_doc_piece=False)
    token = nll.token.values
    for j in range(writer.n_chunks):
        sl = writer.chunk_slice(j)
        writer.write_chunk(j, nll.values[:, sl], token=token[sl])
    store = open_store(tmp_path / "p.zarr")["nll"]
    ids = np.array([token[40], token[3], token[17], token[3]])
    np.testing.assert_array_equal(token_positions(store["token"], ids), [40, 3, 17, 3])
    np.testing.assert_array_equal(gather_columns(store, ids), nll.values[:, [40, 3, 17, 3]].astype(np.float64))
    mu, sd = pool_moments(store, "nll")
    np.testing.assert_allclose(mu, nll.values.astype(np.float64).mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(sd, nll.values.astype(np.float64).std(axis=1), rtol=1e-12)
    from_store = compute_overlaps(signatures, store, score, population="pool")
    in_memory = compute_overlaps(signatures, nll, score, population="pool")
    np.testing.assert_allclose(from_store["signature"].values, in_memory["signature"].values, equal_nan=True)


def test_candidate_nll_gives_the_same_overlap():
    nll, signatures, score = make_inputs(13)
    order = np.argsort(nll.token.values)
    cand = xr.DataArray(nll.values[:, order], dims=("model", "candidate"), coords={"model": nll.model.values, "candidate": nll.token.values[order]})
    a = compute_overlaps(signatures, nll, score)
    b = compute_overlaps(signatures, cand, score)
    np.testing.assert_allclose(a["signature"].values, b["signature"].values, equal_nan=True)


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_write_and_load_roundtrip_with_metadata(tmp_path, suffix):
    nll, signatures, score = make_inputs(17)
    score = score.assign_coords(category=("benchmark", ["x", "x", "y", "y"]), family=("benchmark", ["f", "f", "f", "g"]))
    ds = compute_overlaps(signatures, nll, score)
    out = write_overlap(ds, tmp_path / f"o{suffix}")
    back = load_overlap(out)
    np.testing.assert_allclose(back["performance"].values, ds["performance"].values)
    assert list(back["category_a"].values) == ["x", "x", "y", "y"]
    assert not list(tmp_path.glob(".*tmp"))


def test_cli_overlap(tmp_path):
    from bsig_array.cli.main import cli

    nll, signatures, score = make_inputs(19)
    writer = create_store(tmp_path / "p.zarr", list(nll.model.values), nll.sizes["token"], with_doc_piece=False)
    writer.write_chunk(0, nll.values, token=nll.token.values)
    signatures.to_zarr(tmp_path / "g.zarr", zarr_format=3)
    perf = score.to_pandas()
    perf.index.name = "model"
    perf.to_csv(tmp_path / "y.csv")
    qdir = tmp_path / "q"
    qdir.mkdir()
    runner = CliRunner()
    res = runner.invoke(cli, ["overlap", "--signatures", str(tmp_path / "g.zarr"), "--perplexity", str(tmp_path / "p.zarr"),
                              "--performance", str(tmp_path / "y.csv"), "--signature-mode", "paper", "--out", str(tmp_path / "o.nc")])
    assert res.exit_code == 0, res.output
    back = load_overlap(tmp_path / "o.nc")
    expected = literal_signature_overlap(nll, signatures, "nll", "signatures")
    np.testing.assert_allclose(back["signature"].values, expected, rtol=1e-6, equal_nan=True)
    bad = runner.invoke(cli, ["overlap", "--signatures", str(tmp_path / "nope.zarr"), "--perplexity", str(tmp_path / "p.zarr"),
                              "--performance", str(tmp_path / "y.csv"), "--out", str(tmp_path / "o2.nc")])
    assert bad.exit_code != 0 and isinstance(bad.exception, (BsigError, SystemExit))


def test_spearman_matrix_edge_cases():
    x = np.column_stack([np.arange(5.0), [1, 3, 2, 5, 4], np.full(5, 2.0), [1, np.nan, 2, 3, 4]])
    rho, p = spearman_matrix(x)
    res = scipy.stats.spearmanr(x[:, 0], x[:, 1])
    assert rho[0, 1] == pytest.approx(res.statistic) and p[1, 0] == pytest.approx(res.pvalue)
    assert np.isnan(rho[2]).all() and np.isnan(rho[:, 3]).all()  # constant and NaN columns
    np.testing.assert_array_equal(np.diag(rho)[:2], [1.0, 1.0])
    rho1, _ = spearman_matrix(x[:, [0, 2]])
    assert rho1[0, 0] == 1.0 and np.isnan(rho1[0, 1])


def test_token_positions_take_the_first_occurrence():
    token = xr.DataArray(np.array([5, 3, 5, 9, 3]), dims="token")
    np.testing.assert_array_equal(token_positions(token, np.array([3, 5, 9, 3])), [1, 0, 3, 1])
    chunked = token.chunk(2)
    np.testing.assert_array_equal(token_positions(chunked, np.array([3, 5, 9])), [1, 0, 3])
    with pytest.raises(BsigError, match="not in the perplexity store"):
        token_positions(chunked, np.array([4]))
