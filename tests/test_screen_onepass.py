"""The one-pass screen: equal to two passes and to a literal full sort, out of core, no debris.

One pass keeps running tail boundaries and spills every token that can still reach a tail; two
passes count first and collect against the final boundaries.  Both must give the same output bit for
bit, for every chunking, id order, scheduler and worker count, and the same as sorting everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from test_screen import check_against_reference, make_nll, make_score

from bsig_array.errors import BsigError
from bsig_array.io.perplexity_store.reader import open_store
from bsig_array.io.perplexity_store.writer import create_store
from bsig_array.runtime.run import RunSpec
from bsig_array.stages.screen.driver import screen

OUTPUTS = ("candidate_token", "candidate_score", "candidate_column", "threshold", "candidate_nll", "candidate")


def assert_same(a: xr.Dataset, b: xr.Dataset) -> None:
    for name in OUTPUTS:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    for name in a.data_vars:
        if name.startswith("histogram_"):
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


@st.composite
def pools(draw):
    """Heavy ties, increasing / shuffled / block-shuffled ids, any chunking, k from 1 to near d/2."""
    m = draw(st.integers(3, 6))
    d = draw(st.integers(2, 160))
    B = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    P = rng.integers(0, draw(st.integers(2, 5)), size=(m, d)).astype("float32")
    Y = rng.integers(0, 3, size=(B, m)).astype(float)
    Y[:, 0] = 3.0  # never constant
    order = draw(st.sampled_from(["increasing", "shuffled", "blocks"]))
    ids = np.arange(d, dtype=np.int64) * 2 + 7
    if order == "shuffled":
        ids = rng.permutation(ids)
    elif order == "blocks":  # chunks in reverse order, increasing inside: segments of one chunk each
        ids = np.concatenate([ids[i : i + 10] for i in range(0, d, 10)][::-1])
    chunk = draw(st.integers(1, d)) if order != "blocks" else 10
    alpha = draw(st.sampled_from([1e-9, 0.01, 0.1, 0.3, 0.49]))
    coefficients = draw(st.sampled_from(["thrush", "preselect", "both"]))
    return P, Y, ids, chunk, alpha, coefficients


@given(pools(), st.sampled_from(["synchronous", "threads"]))
@settings(max_examples=25, deadline=None)
def test_one_pass_equals_two_passes_and_full_sort(inputs, scheduler):
    P, Y, ids, chunk, alpha, coefficients = inputs
    m = P.shape[0]
    nll = make_nll(P, ids).chunk({"token": chunk})
    score = make_score(Y, [f"m{i}" for i in range(m)])
    one = screen(nll, score, alpha=alpha, coefficients=coefficients, passes=1, run=RunSpec.build(scheduler=scheduler, workers=2))
    two = screen(nll, score, alpha=alpha, coefficients=coefficients, passes=2, run=RunSpec.build(scheduler="synchronous"))
    assert (one.attrs["passes"], two.attrs["passes"]) == (1, 2)
    assert_same(one, two)
    check_against_reference(one, P, Y, ids, "average")
    # every candidate's column points at its own token on the candidate axis
    np.testing.assert_array_equal(one["candidate"].values[one["candidate_column"].values], one["candidate_token"].values)


def test_chunks_cut_too_tight_by_a_speculative_boundary_are_read_again():
    """A store whose first half scores extreme and second half mild: the boundaries guessed from the
    prefix are too tight for the final ones, so those chunks are read again and the result is exact."""
    rng = np.random.default_rng(7)
    m, d = 6, 6000
    Y = np.array([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    P = rng.random((m, d)).astype("float32")
    half = d // 2
    P[:, :half] = np.where(rng.random(half) < 0.5, np.arange(m)[:, None], -np.arange(m)[:, None]) + 10.0
    P[:, :half] += rng.random((m, half)).astype("float32") * 0.1  # perfectly ordered with the scores, both signs
    nll = make_nll(P).chunk({"token": 250})
    score = make_score(Y, [f"m{i}" for i in range(m)])
    one = screen(nll, score, alpha=0.2, coefficients="thrush", passes=1, run=RunSpec.build(scheduler="synchronous"))
    two = screen(nll, score, alpha=0.2, coefficients="thrush", passes=2, run=RunSpec.build(scheduler="synchronous"))
    assert one.attrs["reread_chunks"] > 0
    assert_same(one, two)


def test_auto_uses_two_passes_only_for_null_permutations():
    rng = np.random.default_rng(1)
    P = rng.random((5, 300)).astype("float32")
    score = make_score(rng.random((2, 5)), [f"m{i}" for i in range(5)])
    nll = make_nll(P).chunk({"token": 64})
    assert screen(nll, score, alpha=0.05).attrs["passes"] == 1
    both = screen(nll, score, alpha=0.05, null_permutations=2)
    assert both.attrs["passes"] == 2 and "null_fdr" in both
    with pytest.raises(BsigError, match="needs two passes"):
        screen(nll, score, alpha=0.05, null_permutations=2, passes=1)
    with pytest.raises(BsigError, match="number of passes"):
        screen(nll, score, passes=3)


def _store(path: Path, P: np.ndarray, chunk: int) -> Path:
    m, d = P.shape
    w = create_store(path, [f"m{i}" for i in range(m)], d, chunk_tokens=chunk, dtype=str(P.dtype))
    for j in range(w.n_chunks):
        w.write_chunk(j, P[:, j * chunk : (j + 1) * chunk])
    return path


@pytest.mark.parametrize("passes", [1, 2])
def test_local_cluster_and_processes_match_threads(tmp_path, passes):
    from distributed import Client, LocalCluster

    rng = np.random.default_rng(5)
    P = rng.integers(0, 6, size=(6, 3000)).astype("float32")
    store = _store(tmp_path / "p.zarr", P, 500)
    score = make_score(rng.random((3, 6)), [f"m{i}" for i in range(6)])
    nll = open_store(store)["nll"]
    ref = screen(nll, score, alpha=0.02, store=store, passes=passes, run=RunSpec.build(scheduler="threads"))
    on_processes = screen(nll, score, alpha=0.02, store=store, passes=passes,
                          out=tmp_path / "proc.zarr", run=RunSpec.build(scheduler="processes", workers=2))
    assert_same(ref, on_processes.load())
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        distributed = screen(nll, score, alpha=0.02, store=store, passes=passes,
                             out=tmp_path / "dist.zarr", run=RunSpec.build(scheduler=client))
        assert_same(ref, distributed.load())


def test_spill_lives_next_to_the_output_and_is_removed(tmp_path):
    rng = np.random.default_rng(2)
    P = rng.random((4, 2000)).astype("float32")
    score = make_score(rng.random((2, 4)), [f"m{i}" for i in range(4)])
    out = tmp_path / "out" / "s.zarr"
    out.parent.mkdir()
    result = screen(make_nll(P).chunk({"token": 300}), score, alpha=0.05, out=out)
    assert result.attrs["spill_bytes"] > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["s.zarr"]  # no spill, no temporary left
    # a failure (duplicate ids found while reading) leaves nothing behind either
    ids = np.arange(2000)
    ids[1500] = 10
    with pytest.raises(BsigError, match="occurs 2 times"):
        screen(make_nll(P, ids).chunk({"token": 300}), score, alpha=0.05, out=tmp_path / "out" / "t.zarr")
    assert sorted(p.name for p in out.parent.iterdir()) == ["s.zarr"]


def test_screen_output_opens_without_loading_the_candidate_axis(tmp_path):
    from bsig_array.io.screen_output import benchmark_candidates, open_screen

    rng = np.random.default_rng(3)
    P = rng.random((4, 1000)).astype("float32")
    score = make_score(rng.random((2, 4)), [f"m{i}" for i in range(4)])
    screen(make_nll(P).chunk({"token": 300}), score, alpha=0.05, out=tmp_path / "s.zarr")
    ds = open_screen(tmp_path / "s.zarr")
    assert "candidate" not in ds.indexes and "benchmark" in ds.indexes
    tokens, cols = benchmark_candidates(ds, "bench1", "thrush")
    np.testing.assert_array_equal(ds["candidate"].values[cols], tokens)
    np.testing.assert_array_equal(ds["candidate_nll"].values[:, cols], P[:, tokens])


RSS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from bsig_array.io.perplexity_store.reader import open_store
    from bsig_array.io.scores import load_performance, align_performance
    from bsig_array.runtime.memory import peak_rss
    from bsig_array.runtime.run import RunSpec
    from bsig_array.stages.screen import screen
    store, perf, out, limit = sys.argv[1:5]
    ds = open_store(store)
    score = align_performance(load_performance(perf), ds["model"].values)
    r = screen(ds["nll"], score, coefficients="thrush", alpha=0.01, store=store, out=out, run=RunSpec.build(memory_limit=limit))
    print(json.dumps({"peak": peak_rss(), "workers": r.attrs["workers"], "k": r.attrs["k"],
                      "candidates": r.sizes["candidate"], "plan": r.attrs["plan"]}))
    """
)


def test_peak_rss_stays_under_a_limit_three_times_smaller_than_the_store(tmp_path):
    """A float32 store of 2 GB (random NLLs barely compress) screened under --memory-limit 600MiB."""
    m, d, chunk, B = 32, 18_000_000, 1 << 17, 24
    rng = np.random.default_rng(0)
    w = create_store(tmp_path / "big.zarr", [f"m{i}" for i in range(m)], d, chunk_tokens=chunk, dtype="float32")
    for j in range(w.n_chunks):
        width = min(chunk, d - j * chunk)
        w.write_chunk(j, rng.random((m, width), dtype=np.float32))
    size = sum(f.stat().st_size for f in (tmp_path / "big.zarr").rglob("*") if f.is_file())
    limit = 600 * 2**20
    assert size >= 3 * limit
    perf = tmp_path / "perf.csv"
    Y = rng.random((m, B))
    with open(perf, "w") as f:
        f.write("model," + ",".join(f"bench{b}" for b in range(B)) + "\n")
        for i in range(m):
            f.write(f"m{i}," + ",".join(f"{v:.6f}" for v in Y[i]) + "\n")
    run = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(tmp_path / "big.zarr"), str(perf), str(tmp_path / "s.zarr"), "600MiB"],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["k"] == d // 100
    assert got["peak"] <= limit, got
