"""Screen stage: exact tails against a literal brute force, invariance to chunking and schedulers,
null permutations, the CLI, and one-line errors on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from bsig_array.errors import BsigError
from bsig_array.io.perplexity_store.reader import open_store
from bsig_array.io.perplexity_store.writer import create_store
from bsig_array.io.screen_output import write_screen
from bsig_array.runtime.run import RunSpec
from bsig_array.stages.screen.driver import permuted_scores, screen

# ----------------------------------------------------------------------------- literal references


def ref_thrush_code(p: np.ndarray, y: np.ndarray, ties: str) -> int:
    """2γ with γ = Σ_{k<l} sign(y_k − y_l)(rank(p_k) − rank(p_l)) (Eq. 1), literally."""
    r = scipy.stats.rankdata(p, method="average" if ties == "average" else "ordinal")
    m = len(p)
    g = sum(np.sign(y[a] - y[b]) * (r[a] - r[b]) for a in range(m) for b in range(a + 1, m))
    return int(round(2 * g))


def ref_preselect_code(p: np.ndarray, y: np.ndarray) -> int:
    """η·Z = #{k<l : p_(k) > p_(l)} with models sorted by y ascending (stable) (Eq. 2), literally."""
    q = p[np.argsort(y, kind="stable")]
    m = len(q)
    return sum(int(q[a] > q[b]) for a in range(m) for b in range(a + 1, m))


def ref_codes(P: np.ndarray, Y: np.ndarray, method: str, ties: str) -> np.ndarray:
    """Codes (B, d) token by token, benchmark by benchmark."""
    B, d = Y.shape[0], P.shape[1]
    out = np.empty((B, d), dtype=np.int64)
    for b in range(B):
        for j in range(d):
            if method == "thrush":
                out[b, j] = ref_thrush_code(P[:, j], Y[b], ties)
            else:
                out[b, j] = ref_preselect_code(P[:, j], Y[b])
    return out


def ref_tails(codes: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Full sort with the tie-break: low = k smallest (code, id), high = k largest code, lowest id."""
    low = sorted(range(len(ids)), key=lambda j: (codes[j], ids[j]))[:k]
    high = sorted(range(len(ids)), key=lambda j: (-codes[j], ids[j]))[:k]
    return np.sort(ids[low]), np.sort(ids[high]), int(codes[low[-1]]), int(codes[high[-1]])


def scale(method: str, m: int) -> float:
    return 2.0 if method == "thrush" else m * (m - 1) / 2


def make_score(Y: np.ndarray, models: list[str]) -> xr.DataArray:
    """score (model, benchmark) from Y (B, m)."""
    return xr.DataArray(
        Y.T.astype(float), dims=("model", "benchmark"),
        coords={"model": models, "benchmark": [f"bench{b}" for b in range(Y.shape[0])]}, name="score",
    )


def make_nll(P: np.ndarray, ids: np.ndarray | None = None) -> xr.DataArray:
    m, d = P.shape
    ids = np.arange(d) if ids is None else ids
    return xr.DataArray(P, dims=("model", "token"), coords={"model": [f"m{i}" for i in range(m)], "token": ids})


def check_against_reference(out: xr.Dataset, P: np.ndarray, Y: np.ndarray, ids: np.ndarray, ties: str) -> None:
    m, d = P.shape
    k = out.attrs["k"]
    for method in out["coefficient"].values:
        codes = ref_codes(P, Y, method, ties)
        lattice_codes = out[f"{method}_bin"].values * (2 if method == "thrush" else 1)
        for b in range(Y.shape[0]):
            low, high, low_code, high_code = ref_tails(codes[b], ids, k)
            sel = out.sel(coefficient=method).isel(benchmark=b)
            np.testing.assert_array_equal(sel["candidate_token"].sel(tail="low").values, low)
            np.testing.assert_array_equal(sel["candidate_token"].sel(tail="high").values, high)
            np.testing.assert_array_equal(sel["threshold"].values, [low_code / scale(method, m), high_code / scale(method, m)])
            code_of = dict(zip(ids.tolist(), codes[b].tolist()))
            for tail, toks in (("low", low), ("high", high)):
                want = np.array([code_of[t] for t in toks]) / scale(method, m)
                np.testing.assert_array_equal(sel["candidate_score"].sel(tail=tail).values, want)
            counts = np.array([(codes[b] == c).sum() for c in np.rint(lattice_codes).astype(int)])
            np.testing.assert_array_equal(out[f"histogram_{method}"].isel(benchmark=b).values, counts)
    union = np.unique(out["candidate_token"].values)
    np.testing.assert_array_equal(out["candidate"].values, union)
    col = {t: j for j, t in enumerate(ids.tolist())}
    np.testing.assert_array_equal(out["candidate_nll"].values, P[:, [col[t] for t in union]].astype(np.float32))


# ----------------------------------------------------------------------------- brute force


@st.composite
def screen_inputs(draw):
    """Small pools with heavy ties in both NLLs and scores, shuffled token ids, random chunking."""
    m = draw(st.integers(3, 7))
    d = draw(st.integers(2, 120))
    B = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    levels = draw(st.integers(2, 6))
    P = rng.integers(0, levels, size=(m, d)).astype(draw(st.sampled_from(["float16", "float32", "float64"])))
    Y = rng.integers(0, draw(st.integers(2, 4)), size=(B, m)).astype(float)
    for b in range(B):  # a constant benchmark is an error (tested separately)
        if np.all(Y[b] == Y[b, 0]):
            Y[b, 0] += 1
    ids = rng.permutation(d).astype(np.int64) * 3 + 5
    chunk = draw(st.integers(max(1, d // 6), d))  # up to ~6 chunks: per-chunk overhead dominates otherwise
    alpha = draw(st.sampled_from([0.01, 0.1, 0.2, 0.3, 0.49]))
    ties = draw(st.sampled_from(["average", "first"]))
    return P, Y, ids, chunk, alpha, ties


@given(screen_inputs())
@settings(max_examples=30, deadline=None)
def test_screen_equals_literal_full_sort(inputs):
    P, Y, ids, chunk, alpha, ties = inputs
    m, d = P.shape
    nll = make_nll(P, ids).chunk({"token": chunk})
    out = screen(nll, make_score(Y, [f"m{i}" for i in range(m)]), alpha=alpha, ties=ties, run=RunSpec.build(scheduler="synchronous")).compute()
    assert out.attrs["k"] == max(int(np.floor(round(alpha * d, 9))), 1)
    check_against_reference(out, P, Y, ids, ties)


def test_portable_backend_same_result():
    rng = np.random.default_rng(3)
    P = rng.integers(0, 4, size=(5, 300)).astype("float32")
    Y = rng.integers(0, 3, size=(2, 5)).astype(float)
    Y[:, 0] = 5.0
    score = make_score(Y, [f"m{i}" for i in range(5)])
    nll = make_nll(P).chunk({"token": 70})
    a = screen(nll, score, alpha=0.05, backend="numpy", run=RunSpec.build(scheduler="synchronous")).compute()
    b = screen(nll, score, alpha=0.05, backend="numba", run=RunSpec.build(scheduler="synchronous")).compute()
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    check_against_reference(a, P, Y, np.arange(300), "average")


# ----------------------------------------------------------------------------- real stores


M, D, B = 7, 1500, 4


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """One pool (ties in NLL and scores) written as stores with three chunk sizes, plus a CSV."""
    root = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(11)
    P = np.round(rng.gamma(2.0, 1.0, size=(M, D)), 1).astype("float32")
    Y = rng.integers(0, 5, size=(B, M)).astype(float)
    Y[:, 0] = 9.0
    models = [f"model-{i}" for i in range(M)]
    stores = {}
    for chunk in (256, 1000, 4096):
        path = root / f"p{chunk}.zarr"
        w = create_store(path, models, D, chunk_tokens=chunk)
        for j in range(w.n_chunks):
            sl = w.chunk_slice(j)
            w.write_chunk(j, P[:, sl], token=np.arange(sl.start, sl.stop) * 2)
        stores[chunk] = path
    csv = root / "performance.csv"
    frame = pd.DataFrame(Y.T, columns=[f"bench{b}" for b in range(B)])
    frame.insert(0, "model", models)
    frame.to_csv(csv, index=False)
    return {"P": P, "Y": Y, "models": models, "stores": stores, "csv": csv, "root": root}


def run_to_disk(pool, out: Path, *, chunk: int = 1000, scheduler="threads", direct: bool = True, workers=None,
                **kw) -> xr.Dataset:
    """Screen one of the pool's stores and write it; ``direct`` reads chunks with zarr, else via xarray."""
    path = pool["stores"][chunk]
    ds = open_store(path)
    result = screen(ds["nll"], make_score(pool["Y"], pool["models"]), alpha=0.02, store=path if direct else None, **kw,
                    run=RunSpec.build(scheduler=scheduler, workers=workers))
    write_screen(result, out, scheduler=scheduler)
    return xr.open_zarr(out).load()


def _comparable(ds: xr.Dataset) -> xr.Dataset:
    return ds.drop_attrs()


@pytest.fixture(scope="module")
def reference(pool):
    out = run_to_disk(pool, pool["root"] / "ref.zarr", chunk=1000, scheduler="synchronous", direct=False, null_permutations=3)
    check_against_reference(out, pool["P"], pool["Y"], np.arange(D) * 2, "average")
    return out


def test_output_format(reference):
    ds = reference
    assert list(ds["coefficient"].values) == ["thrush", "preselect"]
    assert list(ds["tail"].values) == ["low", "high"]
    assert ds["candidate_token"].dims == ("coefficient", "benchmark", "tail", "rank")
    assert ds["candidate_token"].dtype == np.int64 and ds["candidate_score"].dtype == np.float64
    assert ds["candidate_nll"].dims == ("model", "candidate") and ds["candidate_nll"].dtype == np.float32
    assert ds["histogram_thrush"].dims == ("benchmark", "thrush_bin")
    assert ds["histogram_preselect"].sum("preselect_bin").values.tolist() == [D] * B
    assert ds.attrs["k"] == 30 and ds.attrs["n_tokens"] == D and ds.attrs["alpha"] == 0.02
    assert ds.attrs["coefficients"] == ["thrush", "preselect"] and ds.attrs["ties"] == "average"
    tok = ds["candidate_token"].values
    assert (np.diff(tok, axis=-1) > 0).all()  # sorted by id within each tail


@pytest.mark.parametrize("chunk", [256, 4096])
def test_identical_for_other_chunk_sizes(pool, reference, tmp_path, chunk):
    out = run_to_disk(pool, tmp_path / "s.zarr", chunk=chunk, null_permutations=3)
    xr.testing.assert_identical(_comparable(out), _comparable(reference))


def test_identical_on_processes(pool, reference, tmp_path):
    out = run_to_disk(pool, tmp_path / "s.zarr", chunk=256, scheduler="processes", workers=2, null_permutations=3)
    xr.testing.assert_identical(_comparable(out), _comparable(reference))


def test_identical_on_local_cluster(pool, reference, tmp_path):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        out = run_to_disk(pool, tmp_path / "s.zarr", chunk=256, scheduler=client, null_permutations=3)
    xr.testing.assert_identical(_comparable(out), _comparable(reference))


@pytest.mark.slow  # spawning worker processes that import numba and compile kernels: ~20-80 s here
def test_identical_on_process_cluster_by_address(pool, reference, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        out = run_to_disk(pool, tmp_path / "s.zarr", chunk=1000, scheduler=cluster.scheduler_address, null_permutations=3)
    xr.testing.assert_identical(_comparable(out), _comparable(reference))


def test_null_permutations_match_recount(pool, reference):
    P, Y = pool["P"], pool["Y"]
    k = reference.attrs["k"]
    Y_null = permuted_scores(Y, 3, 0)
    assert Y_null.shape == (3 * B, M)
    for r in range(3):
        for b in range(B):
            assert sorted(Y_null[r * B + b]) == sorted(Y[b])
    for method in ("thrush", "preselect"):
        s = scale(method, M)
        obs = ref_codes(P, Y, method, "average")
        null = ref_codes(P, Y_null, method, "average")
        for b in range(B):
            low, high = np.rint(reference["threshold"].sel(coefficient=method).isel(benchmark=b).values * s).astype(int)
            f_low = ((obs[b] < low).sum(), (obs[b] == low).sum())
            f_high = ((obs[b] > high).sum(), (obs[b] == high).sum())
            kept = []
            for r in range(3):
                c = null[r * B + b]
                kept.append(
                    (c < low).sum() + (c == low).sum() * (k - f_low[0]) / f_low[1]
                    + (c > high).sum() + (c == high).sum() * (k - f_high[0]) / f_high[1]
                )
            got = float(reference["null_exceedances"].sel(coefficient=method).isel(benchmark=b))
            assert got == pytest.approx(np.mean(kept), rel=1e-12)
            assert float(reference["null_fdr"].sel(coefficient=method).isel(benchmark=b)) == pytest.approx(min(np.mean(kept) / (2 * k), 1.0))


def test_planted_signal_has_low_null_fdr():
    """Tokens whose NLL order follows (or opposes) the benchmark fill the tails, and the null says
    those tails are real; a benchmark unrelated to the NLLs gets an FDR near 1."""
    rng = np.random.default_rng(5)
    m, d = 12, 4000
    y = np.arange(m, dtype=float)
    P = rng.normal(size=(m, d)).astype("float32")
    noise = rng.normal(scale=0.1, size=(m, 80))
    P[:, :40] = (-2 * y[:, None] + noise[:, :40]).astype("float32")  # better model, lower NLL: low tail
    P[:, 40:80] = (2 * y[:, None] + noise[:, 40:]).astype("float32")  # the opposite: high tail
    P += 30  # NLLs are >= 0 (the screen refuses negative ones); ranks ignore the shift
    Y = np.stack([y, rng.permutation(y)])
    Y[1] = [3, 1, 7, 5, 0, 9, 11, 2, 8, 4, 10, 6]  # fixed unrelated order
    out = screen(make_nll(P), make_score(Y, [f"m{i}" for i in range(m)]), alpha=0.01,
                 null_permutations=20, run=RunSpec.build(scheduler="synchronous")).compute()
    thrush = out.sel(coefficient="thrush").isel(benchmark=0)
    assert set(thrush["candidate_token"].sel(tail="low").values.tolist()) == set(range(40))
    assert set(thrush["candidate_token"].sel(tail="high").values.tolist()) == set(range(40, 80))
    assert float(thrush["null_fdr"]) < 0.1
    assert float(out["null_fdr"].sel(coefficient="thrush").isel(benchmark=1)) > 0.5


# ----------------------------------------------------------------------------- CLI


def test_cli_writes_screen(pool, reference, tmp_path):
    from click.testing import CliRunner

    from bsig_array.cli.main import cli

    out = tmp_path / "cli.zarr"
    args = ["screen", "--perplexity", str(pool["stores"][256]), "--performance", str(pool["csv"]), "--out", str(out),
            "--alpha", "0.02", "--null-permutations", "3", "--memory-limit", "1GiB"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "estimated FDR" in res.output
    got = xr.open_zarr(out).load()
    xr.testing.assert_identical(_comparable(got).drop_vars(["family", "format", "category", "function"], errors="ignore"),
                                _comparable(reference))
    assert not list(tmp_path.glob(".cli.zarr.tmp-*"))


def _bsig(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bsig_array.cli.main", *args], capture_output=True, text=True)


def test_cli_error_is_one_line(pool, tmp_path):
    res = _bsig("screen", "--perplexity", str(pool["stores"][1000]), "--performance", str(pool["csv"]),
                "--out", str(tmp_path / "x.zarr"), "--alpha", "0.5")
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "alpha must be in (0, 0.5)" in lines[0], res.stderr
    assert not (tmp_path / "x.zarr").exists()


# ----------------------------------------------------------------------------- bad input


def _small(m: int = 4, d: int = 50):
    rng = np.random.default_rng(0)
    P = rng.random((m, d)).astype("float32")
    Y = np.arange(m, dtype=float)[None, :]
    return make_nll(P), make_score(Y, [f"m{i}" for i in range(m)])


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.7, -0.1])
def test_alpha_out_of_range(alpha):
    nll, score = _small()
    with pytest.raises(BsigError, match=r"alpha must be in \(0, 0.5\)"):
        screen(nll, score, alpha=alpha)


def test_constant_benchmark():
    nll, score = _small()
    score = xr.concat([score, xr.full_like(score, 0.5).assign_coords(benchmark=["flat"])], dim="benchmark")
    with pytest.raises(BsigError, match="flat.*same score for every model"):
        screen(nll, score)


def test_nan_in_store(tmp_path):
    rng = np.random.default_rng(1)
    P = rng.random((4, 300)).astype("float32")
    P[2, 217] = np.nan
    w = create_store(tmp_path / "nan.zarr", [f"m{i}" for i in range(4)], 300, chunk_tokens=100)
    for j in range(w.n_chunks):
        w.write_chunk(j, P[:, w.chunk_slice(j)], token=np.arange(w.chunk_slice(j).start, w.chunk_slice(j).stop))
    ds = open_store(tmp_path / "nan.zarr")
    with pytest.raises(BsigError, match=r"1 NaN .*model 'm2', token position 217"):
        screen(ds["nll"], make_score(np.arange(4.0)[None, :], [f"m{i}" for i in range(4)]), run=RunSpec.build(scheduler="synchronous"))


def test_model_mismatch():
    nll, score = _small()
    with pytest.raises(BsigError, match="not in the performance"):
        screen(nll, score.isel(model=slice(1, None)))


def test_more_benchmarks_than_fit_memory_is_refused_before_running():
    m, n_bench = 40, 3000
    nll = make_nll(np.full((m, 10), np.nan, dtype="float32"))  # never read: refused before running
    rng = np.random.default_rng(0)
    score = make_score(rng.random((n_bench, m)), [f"m{i}" for i in range(m)])
    with pytest.raises(BsigError, match=r"screen needs at least .* but --memory-limit is 1.00 GiB; raise --memory-limit"):
        screen(nll, score, run=RunSpec.build(memory_limit="1GiB"))


def test_bad_options():
    nll, score = _small()
    with pytest.raises(BsigError, match="unknown screening method"):
        screen(nll, score, coefficients="spearman")
    with pytest.raises(BsigError, match="unknown ties"):
        screen(nll, score, ties="dense")
    with pytest.raises(BsigError, match="unknown scheduler"):
        screen(nll, score, run=RunSpec.build(scheduler="gpu-cluster"))
    with pytest.raises(BsigError, match="unknown device"):
        screen(nll, score, run=RunSpec.build(device="tpu"))
    with pytest.raises(BsigError, match="null permutations"):
        screen(nll, score, null_permutations=-1)


def test_gpu_without_cupy_is_refused():
    pytest.importorskip("numpy")
    from bsig_array.runtime.device import cupy_available

    if cupy_available():
        pytest.skip("a GPU is available here")
    nll, score = _small()
    with pytest.raises(BsigError, match="--device gpu needs CuPy"):
        screen(nll, score, run=RunSpec.build(device="gpu"))


def test_existing_output_needs_overwrite(tmp_path):
    nll, score = _small()
    result = screen(nll, score, run=RunSpec.build(scheduler="synchronous"))
    write_screen(result, tmp_path / "s.zarr")
    with pytest.raises(BsigError, match="already exists; pass --overwrite"):
        write_screen(result, tmp_path / "s.zarr")
    write_screen(result, tmp_path / "s.zarr", overwrite=True)
    xr.testing.assert_identical(xr.open_zarr(tmp_path / "s.zarr").load().drop_attrs(), result.compute().drop_attrs())


def test_single_method_and_first_ties():
    rng = np.random.default_rng(2)
    P = rng.integers(0, 3, size=(5, 200)).astype("float32")
    Y = rng.integers(0, 3, size=(2, 5)).astype(float)
    Y[:, 4] = 7
    out = screen(make_nll(P), make_score(Y, [f"m{i}" for i in range(5)]), coefficients="thrush", ties="first",
                 alpha=0.03, run=RunSpec.build(scheduler="synchronous")).compute()
    assert list(out["coefficient"].values) == ["thrush"] and "histogram_preselect" not in out
    check_against_reference(out, P, Y, np.arange(200), "first")


def test_duplicate_token_ids_are_refused(tmp_path):
    """A store whose token coordinate repeats ids cannot be screened by id."""
    rng = np.random.default_rng(4)
    w = create_store(tmp_path / "dup.zarr", [f"m{i}" for i in range(4)], 200, chunk_tokens=100)
    for j in range(w.n_chunks):
        w.write_chunk(j, rng.random((4, 100)).astype("float32"), token=np.arange(100))  # both chunks: 0..99
    ds = open_store(tmp_path / "dup.zarr")
    with pytest.raises(BsigError, match=r"token id \d+ occurs 2 times in the store"):
        screen(ds["nll"], make_score(np.arange(4.0)[None, :], [f"m{i}" for i in range(4)]), run=RunSpec.build(scheduler="synchronous"))
